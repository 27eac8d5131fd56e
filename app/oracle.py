"""The oracle: answers every pending query of a round from target ground truth, headless, as the
RIPU paper does (void pixels included, like the official code)."""
from __future__ import annotations

import numpy as np
from core.progress import bar as progress_bar

import storage

ORACLE = "oracle"


def answer_round(db, round_id: int, gt_of) -> int:
    """Label all pending queries of ``round_id``; ``gt_of(image_name) -> uint8 (H,W)``. Returns the count."""
    rows = storage.round_queries(db, round_id, open_only=True)
    cache: dict[str, np.ndarray] = {}
    for q in progress_bar(rows, desc="oracle answers", disable=not rows):
        if q["name"] not in cache:
            cache.clear()
            cache[q["name"]] = gt_of(q["name"])
        gt = cache[q["name"]]
        if q["kind"] == "region":
            storage.save_label(db, q["id"], ORACLE, patch=gt[q["y0"]:q["y1"], q["x0"]:q["x1"]])
        else:
            storage.save_label(db, q["id"], ORACLE, point_class=int(gt[q["y"], q["x"]]))
    return len(rows)
