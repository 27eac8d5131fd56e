"""The oracle: answers every pending query of a round from target ground truth, headless, as the
RIPU paper does (void pixels included, like the official code).

A square region gets its exact ground-truth patch, a pixel its class. A superpixel gets its dominant
class (one click, ``answer="dominant"``) or its exact ground truth (``answer="exact"``). Each answer
logs the simulated human time of core.acquisition.cost (``labels.ms``: clicks x 1.75 s; ``labels.edits``:
the clicks), so budgets in seconds and clicks and the cost model see what a person would have spent."""
from __future__ import annotations

import numpy as np
from core.acquisition.cost import region_clicks, seconds_of_clicks
from core.acquisition.superpixel import dominant_class
from core.progress import bar as progress_bar

import storage

ORACLE = "oracle"
ANSWERS = ("dominant", "exact")
OUT_OF_TIME = "budget spent"


def answer_round(db, round_id: int, gt_of, answer: str = "dominant", limit: tuple[str, float] | None = None,
                 cost_aware: bool = False) -> int:
    """Label the pending queries of ``round_id``; ``gt_of(image_name) -> uint8 (H,W)``; ``answer``: how a
    superpixel is answered ('dominant' class or 'exact' mask). Returns the count answered.

    ``limit``: a pooled budget's allowance for this round, ``("seconds" | "clicks", amount)``: the
    oracle then works as a person with a clock would, in the selection's ranking order (score, or score
    per predicted second with ``cost_aware``), and stops once the simulated seconds (clicks) it spent
    reach the amount; the queries left are skipped with the reason "budget spent" (they were asked
    but not answered, and cost nothing)."""
    if answer not in ANSWERS:
        raise ValueError(f"oracle answer must be one of {ANSWERS}, got {answer!r}")
    rows = storage.round_queries(db, round_id, open_only=True)
    if limit is not None:   # ranking order; images still read one at a time where the order allows
        def rank(q):
            s = q["score"] if q["score"] is not None else -np.inf
            return s / q["cost_s"] if cost_aware and q["cost_s"] else s
        rows = sorted(rows, key=lambda q: (-rank(q), q["id"]))
    cache: dict[str, np.ndarray] = {}
    spent, answered = 0.0, 0
    for q in progress_bar(rows, desc="oracle answers", disable=not rows):
        if limit is not None and spent >= limit[1]:
            storage.skip(db, q["id"], ORACLE, OUT_OF_TIME)
            continue
        if q["name"] not in cache:
            cache.clear()
            cache[q["name"]] = gt_of(q["name"])
        gt = cache[q["name"]]
        if q["kind"] == "pixel":
            clicks = 1
            kw = dict(point_class=int(gt[q["y"], q["x"]]))
        else:
            box = gt[q["y0"]:q["y1"], q["x0"]:q["x1"]]
            shape = None if q.get("shape") is None else storage.decode_patch(q["shape"]).astype(bool)
            if shape is None:
                clicks, kw = region_clicks(box), dict(patch=box)
            elif answer == "dominant":
                clicks, kw = 1, dict(point_class=dominant_class(box[shape]))
            else:
                clicks, kw = region_clicks(box, shape), dict(patch=np.where(shape, box, 255).astype(np.uint8))
        ms = int(round(seconds_of_clicks(clicks) * 1000))
        storage.save_label(db, q["id"], ORACLE, ms=ms, edits=clicks, **kw)
        if not q["honeypot"]:   # honeypots are not part of the budget
            spent += ms / 1000 if limit is not None and limit[0] == "seconds" else clicks
        answered += 1
    return answered
