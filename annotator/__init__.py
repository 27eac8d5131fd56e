"""Browser annotator (Gradio): region and pixel labeling canvases, queue, review, export.

``build_app`` / ``launch`` live in :mod:`annotator.app` (imported lazily here, since gradio is
heavy); the provider protocol and :class:`ArrayProvider` in :mod:`annotator.provider`.
Never imports torch or ``core.train``.
"""
from __future__ import annotations

__all__ = ["build_app", "launch", "parse_auth", "ArrayProvider", "BaseProvider", "Provider", "AnnotatorError"]


def __getattr__(name):
    if name in ("build_app", "launch", "parse_auth"):
        from annotator import app
        return getattr(app, name)
    if name in ("ArrayProvider", "BaseProvider", "Provider"):
        from annotator import provider
        return getattr(provider, name)
    if name == "AnnotatorError":
        from annotator.context import AnnotatorError
        return AnnotatorError
    raise AttributeError(f"module 'annotator' has no attribute {name!r}")
