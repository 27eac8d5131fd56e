"""Small synthetic street scenes and a seeded project store, for the annotator's tests,
benchmark and screenshots (no model, no dataset needed). Deterministic from a seed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import storage
from annotator.provider import ArrayProvider

# Cityscapes trainIds used by the scenes
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 5, 8, 10, 11, 13
_PHOTO = {ROAD: (88, 86, 92), SIDEWALK: (168, 160, 150), BUILDING: (150, 112, 90), POLE: (60, 60, 64),
          VEGETATION: (70, 120, 50), SKY: (150, 190, 235), PERSON: (200, 150, 60), CAR: (30, 60, 150)}


def make_scene(seed: int, h: int = 96, w: int = 128) -> tuple[np.ndarray, ...]:
    """``(image uint8 HxWx3, truth uint8 HxW, prediction uint8 HxW, heat float32 HxW,
    untrusted bool HxW)``: sky, buildings, vegetation, sidewalk, road, a car, a pole and a
    person; the prediction gets the car and the road edge slightly wrong."""
    rng = np.random.default_rng(seed)
    gt = np.full((h, w), SKY, np.uint8)
    horizon = int(h * rng.uniform(0.38, 0.48))
    gt[int(h * 0.12):horizon, :] = BUILDING
    vx = int(w * rng.uniform(0.55, 0.75))
    gt[int(h * 0.22):horizon, vx:] = VEGETATION
    gt[horizon:, :] = SIDEWALK
    road_top = horizon + int(h * 0.12)
    gt[road_top:, :] = ROAD
    cx0, cy0 = int(w * rng.uniform(0.15, 0.35)), road_top - int(h * 0.08)
    gt[cy0:cy0 + int(h * 0.16), cx0:cx0 + int(w * 0.22)] = CAR
    px = int(w * 0.85)
    gt[int(h * 0.2):road_top, px:px + 2] = POLE
    gt[horizon - int(h * 0.1):horizon + int(h * 0.08), int(w * 0.5):int(w * 0.5) + 4] = PERSON
    pal = np.zeros((256, 3), np.float32)  # "photo" colours (not the label palette)
    for tid, rgb in _PHOTO.items():
        pal[tid] = rgb
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 0.75 + 0.25 * np.sin(xx / 7.0 + seed)[..., None] * np.cos(yy / 9.0)[..., None]
    img = pal[gt] * shade + rng.normal(0, 6, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    pred = gt.copy()
    pred[cy0:cy0 + int(h * 0.16), cx0 + int(w * 0.22) - 4:cx0 + int(w * 0.22) + 3] = CAR  # car too wide
    pred[road_top - 3:road_top, :w // 2] = ROAD  # road edge too high on the left
    edge = np.zeros((h, w), np.float32)
    edge[:, :-1] += gt[:, :-1] != gt[:, 1:]
    edge[:-1, :] += gt[:-1, :] != gt[1:, :]
    from scipy.ndimage import gaussian_filter
    heat = gaussian_filter(edge, 2.0) + 0.05 * rng.random((h, w)).astype(np.float32)
    heat = (heat / heat.max()).astype(np.float32)
    untrusted = heat > 0.35
    return img, gt, pred, heat, untrusted


def seed_project(workdir: str | os.PathLike, n_images: int = 3, h: int = 96, w: int = 128,
                 regions: list[tuple[int, tuple[int, int, int, int], float]] | None = None,
                 points: dict[int, list[tuple[int, int]]] | None = None,
                 cache_dir: str | os.PathLike | None = None, seed: int = 0) -> tuple[ArrayProvider, dict]:
    """Create images ``img0..`` (synthetic scenes) in a store at ``workdir`` with one run and one
    round, and add region queries ``(image index, (y0, x0, y1, x1), score)`` and pixel queries
    ``{image index: [(y, x), ...]}``. Returns the provider and ``{"run", "round", "names",
    "truth": {name: gt}, "region_ids", "pixel_ids": {image index: [query ids]}}``."""
    db = storage.open_store(workdir)
    try:
        names = [f"img{i}" for i in range(n_images)]
        scenes = {n: make_scene(seed + i, h, w) for i, n in enumerate(names)}
        storage.add_images(db, [dict(name=n, height=h, width=w, path=f"{n}.png") for n in names])
        run = storage.start_run(db, {"annotator": "synthetic"})
        rnd = storage.add_round(db, run, 1, budget="2.2%", strategy="ripu")
        region_ids = []
        for idx, box, score in regions or []:
            region_ids += storage.add_queries(db, rnd, names[idx], "region", [(*box, score)])
        pixel_ids = {}
        for idx, pts in (points or {}).items():
            pixel_ids[idx] = storage.add_queries(db, rnd, names[idx], "pixel",
                                                 [(y, x, 1.0 - k / 1000.0) for k, (y, x) in enumerate(pts)])
    finally:
        db.close()
    provider = ArrayProvider(images={n: s[0] for n, s in scenes.items()},
                             predictions={n: s[2] for n, s in scenes.items()},
                             heatmaps={n: s[3] for n, s in scenes.items()},
                             untrusted={n: s[4] for n, s in scenes.items()},
                             cache_dir=Path(cache_dir) if cache_dir is not None else None)
    return provider, {"run": run, "round": rnd, "names": names, "truth": {n: s[1] for n, s in scenes.items()},
                      "region_ids": region_ids, "pixel_ids": pixel_ids}
