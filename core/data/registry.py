"""Datasets by spec string: ``gta5:PATH``, ``synthia:PATH``, ``cityscapes:PATH``, ``folder:PATH``,
``synthcity`` (the embedded generated default; ``synthcity:DIR`` generates/reuses it under DIR).

Roles: a **source** is gta5 | synthia | synthcity (labeled, synthetic), a **target** is
cityscapes | folder | synthcity. Every problem (unknown kind, wrong role, missing path, bad files) is a
``DatasetError`` with one line naming the problem.
"""
from __future__ import annotations

from pathlib import Path

from core.data.base import DatasetError
from core.data.cityscapes import Cityscapes
from core.data.folder import ImageFolder
from core.data.gta5 import GTA5
from core.data.synthia import Synthia



def _gta5(path, split, role, **kw):
    return GTA5(path, **kw)


def _synthia(path, split, role, **kw):
    return Synthia(path, **kw)


def _cityscapes(path, split, role, **kw):
    return Cityscapes(path, split, **kw)


def _folder(path, split, role, **kw):
    return ImageFolder(path, split=split, **kw)


def _synthcity(path, split, role, cache_dir=None, skip_bad=False, **kw):
    """Generated (once, under ``path`` or ``cache_dir``) then read; ``seed``, ``size``, ``counts`` go to
    the generator."""
    from core.data.synthcity import SynthCity, ensure_synthcity   # the generator's modules load on use

    gen = {k: kw.pop(k) for k in ("seed", "size", "counts") if k in kw}
    root = ensure_synthcity(path if path is not None else cache_dir, **gen)
    return SynthCity(root, role, split, **kw)


# The registry by name: kind -> (roles it may take, constructor(path, split, **kw)). A new dataset
# kind is one entry here; specs, roles and the CLI's help read it.
DATASETS = {
    "gta5": (("source",), _gta5),
    "synthia": (("source",), _synthia),
    "cityscapes": (("target",), _cityscapes),
    "folder": (("target",), _folder),
    "synthcity": (("source", "target"), _synthcity),
}
KINDS = tuple(DATASETS)
ROLE_KINDS = {role: tuple(k for k, (roles, _) in DATASETS.items() if role in roles) for role in ("source", "target")}
_USAGE = "expected " + ", ".join(f"{k}:PATH" for k in KINDS if k != "synthcity") + " or synthcity"


def parse_dataset_spec(spec: str) -> tuple[str, str | None]:
    """``"KIND:PATH"`` -> (kind, path); ``"synthcity"`` -> ("synthcity", None). Only the first ':'
    separates, so PATH may contain colons. Raises DatasetError for a malformed spec."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"empty dataset spec ({_USAGE})")
    kind, sep, path = spec.strip().partition(":")
    kind = kind.strip().lower()
    path = path.strip()
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r} in {spec!r} ({_USAGE})")
    if kind == "synthcity":
        return kind, (path or None)
    if not path:
        raise DatasetError(f"dataset spec {spec!r} has no path (expected {kind}:PATH)")
    return kind, path


def build_dataset(spec: str, role: str, split: str = "train", cache_dir=None, skip_bad: bool = False,
                  validate: bool = False, progress: bool = True, **kw):
    """Build the dataset named by ``spec`` for ``role`` ("source" or "target").

    ``split`` selects Cityscapes/folder/synthcity splits; GTA5 and SYNTHIA have none (all images).
    ``cache_dir``: the resized-file cache of the real datasets, and where synthcity is generated.
    ``skip_bad``: drop bad files instead of raising (see core.data.folder). Every label and depth map
    is checked to have its image's size from the file headers (``dataset.check_sizes``; a DatasetError
    names the first mismatch). ``validate=True`` also scans every file's structure (``dataset.validate``). Other keywords go to the dataset class (e.g. ``size``,
    ``label_size``, ``label_space``; for synthcity ``seed`` and ``size`` go to ``ensure_synthcity``).
    """
    kind, path = parse_dataset_spec(spec)
    if role not in ROLE_KINDS:
        raise DatasetError(f"dataset role must be 'source' or 'target', got {role!r}")
    if kind not in ROLE_KINDS[role]:
        raise DatasetError(f"{kind} cannot be a {role} dataset (a {role} is one of {', '.join(ROLE_KINDS[role])})")
    if path is not None:
        p = Path(path).expanduser()
        if kind != "synthcity" and not p.exists():
            raise DatasetError(f"{p}: {kind} dataset folder not found")
        if p.exists() and not p.is_dir():
            raise DatasetError(f"{p}: {kind} dataset path is not a folder")
        path = str(p)
    ds = DATASETS[kind][1](path, split, role, cache_dir=cache_dir, skip_bad=skip_bad, **kw)
    if kind == "synthcity":   # generated here: pairs match by construction
        return ds
    ds.check_sizes(progress=progress)
    if validate:
        ds.validate(progress=progress, skip_bad=skip_bad)
    return ds
