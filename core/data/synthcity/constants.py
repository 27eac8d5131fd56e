"""synthcity constants shared by every module: version, sizes, depth encoding, class ids, domains."""
from __future__ import annotations

from core.data.labels import CITYSCAPES19, IGNORE


# What each version changed: the package docstring and docs/DATASETS.md.
# In the cache folder name and meta.json, so an older set is never reused.
VERSION = 5
DEFAULT_SIZE = (256, 512)
DEFAULT_COUNTS = {"source": 600, "target_train": 300, "target_val": 100}
DEPTH_SCALE = 100.0  # PNG units per metre (centimetres)
MAX_DEPTH = 655.35  # metres; sky and anything farther saturate here (uint16 65535)

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE) = range(19)
assert CITYSCAPES19.names[SIGN] == "traffic sign" and CITYSCAPES19.names[BIKE] == "bicycle"

_DOMAIN_CODE = {"source": 0, "target": 1}
_SPLIT_CODE = {"train": 0, "val": 1}

__all__ = ["VERSION", "DEFAULT_SIZE", "DEFAULT_COUNTS", "DEPTH_SCALE", "MAX_DEPTH", "IGNORE", "ROAD", "SIDEWALK",
           "BUILDING", "WALL", "FENCE", "POLE", "LIGHT", "SIGN", "VEG", "TERRAIN", "SKY", "PERSON", "RIDER", "CAR",
           "TRUCK", "BUS", "TRAIN", "MOTO", "BIKE"]


def _check_domain(domain, split):
    if domain not in _DOMAIN_CODE:
        raise ValueError(f"synthcity: domain must be 'source' or 'target', got {domain!r}")
    if split not in _SPLIT_CODE or (domain == "source" and split != "train"):
        raise ValueError(f"synthcity: {domain} has splits {['train'] if domain == 'source' else ['train', 'val']}, "
                         f"got {split!r}")
