"""Segmentation models: a timm backbone + DeepLabV2 head (segmentor.py), local weight loading (weights.py)."""
from core.models.segmentor import SegOut, Segmentor  # noqa: F401
