"""Segmentation models: a timm backbone + a head by name (segmentor.py), local weight loading (weights.py)."""
from core.models.segmentor import FREEZE_SCOPES, HEADS, SegOut, Segmentor, upsample  # noqa: F401
