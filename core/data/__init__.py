"""Datasets and label spaces. Import submodules directly (core.data.labels is torch-free)."""
