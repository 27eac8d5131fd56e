"""synthcity: the embedded, procedural two-domain street-scene benchmark (Cityscapes-19 classes).

No dataset can be downloaded here, so the project renders its own:

* **source** domain (``split="train"`` only): synthetic look -- flat shading, crisp aliased edges,
  saturated palette, a low camera (horizon at ~42% of the height, 1.2 m). Label map **and depth**.
* **target** domain (``split="train"|"val"``): real look -- asphalt grain, brick/concrete facades,
  leaf texture, overcast sky, cast shadows, lighting gradient, colour cast, blur, sensor noise and
  JPEG artefacts; a higher camera (horizon at ~50%, 1.65 m) with an ego-vehicle hood (ignore);
  and a label shift (more persons, riders, bicycles and vegetation; fewer trucks and buses).
  Target labels exist for evaluation and the oracle only.

Every image is a pure function of ``(seed, domain, split, index, size)``: one numpy Generator
seeded with ``[seed, domain, split, index]``, so multiprocessing stays deterministic. Scenes are
built in metres with a pin-hole camera over a ground plane (road, sidewalks, verges), vertical
planes parallel to the road (facades, walls, fences, hedges, vehicle sides) and upright
billboards at a constant distance (poles, lights, signs, trees, people, bikes, vehicle
fronts/backs), painted far to near so occlusion agrees with the depth map.

On-disk layout (``ensure_synthcity`` returns ``<root>``)::

    <root>/meta.json                                written last; its presence marks a complete set
    <root>/source/images/src_00000.png              RGB as PNG
    <root>/source/labels/src_00000.png              uint8 trainIds, 255 = ignore
    <root>/source/depth/src_00000.png               uint16, centimetres (DEPTH_SCALE units per metre);
                                                    sky / farther than MAX_DEPTH saturates at 65535
    <root>/target/{train,val}/images/tgt_train_00000.jpg   the JPEG *is* the degradation step
    <root>/target/{train,val}/labels/tgt_train_00000.png

Class coverage is guaranteed: image ``i`` of every split features the class ``_FEATURED[i % 14]``
close to the camera (rare classes such as train, bus, wall), on top of the random content.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from core.data.base import DatasetError
from core.data.labels import CITYSCAPES19, IGNORE

VERSION = 1
DEFAULT_SIZE = (256, 512)
DEFAULT_COUNTS = {"source": 600, "target_train": 300, "target_val": 100}
DEPTH_SCALE = 100.0  # PNG units per metre (centimetres)
MAX_DEPTH = 655.35  # metres; sky and anything farther saturate here (uint16 65535)

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE) = range(19)
assert CITYSCAPES19.names[SIGN] == "traffic sign" and CITYSCAPES19.names[BIKE] == "bicycle"

_DOMAIN_CODE = {"source": 0, "target": 1}
_SPLIT_CODE = {"train": 0, "val": 1}
_FEATURED = (TRAIN, BUS, TRUCK, MOTO, RIDER, BIKE, WALL, FENCE, TERRAIN, LIGHT, SIGN, PERSON, POLE, CAR)

# expected object counts / probabilities per image: the label shift lives here
_PRIORS = {
    "source": dict(cars=4.5, trucks=0.9, buses=0.5, train=0.07, persons=1.3, riders=0.35, bikes=0.35,
                   motos=0.5, trees=2.0, poles=3.0, p_veg=0.10, p_terrain=0.35, p_wall=0.14, p_fence=0.12,
                   p_hedge=0.04, p_gap=0.10, p_inter=0.3, voids=1.2, p_median=0.2),
    "target": dict(cars=3.0, trucks=0.25, buses=0.15, train=0.07, persons=4.5, riders=1.4, bikes=1.6,
                   motos=0.4, trees=4.0, poles=3.5, p_veg=0.30, p_terrain=0.6, p_wall=0.14, p_fence=0.14,
                   p_hedge=0.12, p_gap=0.10, p_inter=0.3, voids=0.4, p_median=0.3),
}


# ----------------------------------------------------------------------------- geometry helpers
class _Cam:
    """Pin-hole camera looking along +Z over a flat ground; X to the right, heights h up."""

    def __init__(self, H, W, f, cx, h0, hc):
        self.H, self.W, self.f, self.cx, self.h0, self.hc = H, W, f, cx, h0, hc

    def px(self, X, Z):
        return self.cx + self.f * X / Z

    def py(self, h, Z):
        return self.h0 + self.f * (self.hc - h) / Z


def _c(col):
    return tuple(int(v) for v in col)


_LIM = 1e5


class _Canvas:
    def __init__(self, H, W):
        self.H, self.W = H, W
        self.img = np.zeros((H, W, 3), np.uint8)
        self.lab = np.full((H, W), IGNORE, np.uint8)
        self.dep = np.full((H, W), MAX_DEPTH, np.float32)

    def _emit(self, fn, col, cls, z):
        fn(self.img, _c(col))
        if cls is not None:
            fn(self.lab, int(cls))
            fn(self.dep, float(z))

    @staticmethod
    def _fix(pts):
        a = (np.asarray(pts, np.float64) - 0.5) * 16
        np.clip(a, -_LIM * 16, _LIM * 16, out=a)
        return np.rint(a).astype(np.int32)

    def poly(self, pts, col, cls, z):
        p = self._fix(pts).reshape(1, -1, 2)
        self._emit(lambda a, c: cv2.fillPoly(a, p, c, cv2.LINE_8, 4), col, cls, z)

    def ellipse(self, x, y, rx, ry, col, cls, z, angle=0.0):
        if abs(x) > _LIM or abs(y) > _LIM:
            return
        c = tuple(int(v) for v in self._fix([x, y]))
        ax = (max(1, int(round(min(rx, _LIM) * 16))), max(1, int(round(min(ry, _LIM) * 16))))
        self._emit(lambda a, cc: cv2.ellipse(a, c, ax, float(angle), 0, 360, cc, -1, cv2.LINE_8, 4), col, cls, z)

    def line(self, p1, p2, thick, col, cls, z):
        a1 = tuple(int(v) for v in self._fix(p1))
        a2 = tuple(int(v) for v in self._fix(p2))
        t = max(1, int(round(thick)))
        self._emit(lambda a, c: cv2.line(a, a1, a2, c, t, cv2.LINE_8, 4), col, cls, z)


class _BB:
    """An upright billboard at distance Z: local coordinates (dx metres right, h metres up).
    ``k`` (pixels per metre) may be boosted above f/Z so thin things stay learnable."""

    def __init__(self, cv, cam, X, Z, k=None):
        self.cv, self.z = cv, Z
        self.x0, self.y0 = cam.px(X, Z), cam.py(0.0, Z)
        self.k = cam.f / Z if k is None else k

    def P(self, pts):
        a = np.asarray(pts, np.float64).reshape(-1, 2)
        return np.stack([self.x0 + a[:, 0] * self.k, self.y0 - a[:, 1] * self.k], 1)

    def poly(self, pts, col, cls):
        self.cv.poly(self.P(pts), col, cls, self.z)

    def rect(self, x0, x1, h0, h1, col, cls):
        self.poly([(x0, h0), (x1, h0), (x1, h1), (x0, h1)], col, cls)

    def ell(self, dx, h, rx, ry, col, cls, angle=0.0):
        self.cv.ellipse(self.x0 + dx * self.k, self.y0 - h * self.k, rx * self.k, ry * self.k, col, cls, self.z, angle)

    def line(self, a, b, w, col, cls, minpx=1.0):
        p = self.P([a, b])
        self.cv.line(p[0], p[1], max(minpx, w * self.k), col, cls, self.z)


def _vplane(cv, cam, X, z1, z2, hb, top, cls, shade):
    """Paint a vertical plane at lateral X between depths z1..z2 and heights hb..top (top may be a
    function of the along-road coordinate U=Z). ``shade(U, V, m)`` gives (h, w, 3) colours, V = height."""
    H, W = cv.H, cv.W
    z1 = max(z1, 0.3)
    if z2 <= z1 or X == 0:
        return
    xa, xb = cam.px(X, z1), cam.px(X, z2)
    c0, c1 = max(0, int(np.floor(min(xa, xb)))), min(W, int(np.ceil(max(xa, xb))))
    if c1 <= c0:
        return
    dx = np.arange(c0, c1) + 0.5 - cam.cx
    with np.errstate(divide="ignore", invalid="ignore"):
        Z = cam.f * X / dx
    ok = (Z >= z1) & (Z <= z2)
    if not ok.any():
        return
    Zs = np.where(ok, Z, z2)
    ht = top(Zs) if callable(top) else np.full_like(Zs, top)
    ytop = np.where(ok, cam.h0 + cam.f * (cam.hc - ht) / Zs, np.inf)
    ybot = cam.h0 + cam.f * (cam.hc - hb) / Zs
    r0 = max(0, int(np.floor(ytop[ok].min())))
    r1 = min(H, int(np.ceil(ybot[ok].max())))
    if r1 <= r0:
        return
    yc = (np.arange(r0, r1) + 0.5)[:, None]
    m = (yc >= ytop[None, :]) & (yc < ybot[None, :])
    if not m.any():
        return
    U = np.broadcast_to(Zs[None, :], m.shape)
    V = cam.hc - (yc - cam.h0) * U / cam.f
    col = shade(U, V, m)
    sl = (slice(r0, r1), slice(c0, c1))
    cv.img[sl][m] = np.clip(col[m], 0, 255).astype(np.uint8)
    cv.lab[sl][m] = cls
    cv.dep[sl][m] = U[m]


def _frac(a):
    return a - np.floor(a)


# ----------------------------------------------------------------------------- palettes
def _hsv(h, s, v):
    c = cv2.cvtColor(np.array([[[h * 180 % 180, s * 255, v * 255]]], np.float32).astype(np.uint8), cv2.COLOR_HSV2RGB)
    return tuple(int(x) for x in c[0, 0])


class _Pal:
    """Per-domain colour families. Source: saturated, flat. Target: muted, dark, metallic."""

    def __init__(self, rng, tgt):
        self.r, self.t = rng, tgt

    def jit(self, col, a=10):
        d = self.r.integers(-a, a + 1, 3)
        return tuple(min(255, max(0, int(v) + int(e))) for v, e in zip(col, d))

    def pick(self, cols, a=8):
        return self.jit(cols[self.r.integers(len(cols))], a)

    def vivid(self, s=(0.75, 1.0), v=(0.8, 1.0)):
        r = self.r
        return _hsv(r.random(), r.uniform(*s), r.uniform(*v))

    # --- materials
    def road(self):
        return self.jit((84, 83, 88), 8) if self.t else self.jit((125, 112, 140), 8)

    def marking(self):
        return self.jit((185, 185, 175), 10) if self.t else (255, 255, 255)

    def sidewalk(self):
        return self.jit((150, 145, 138), 10) if self.t else self.jit((228, 196, 140), 8)

    def curb(self):
        return self.jit((170, 168, 162), 6) if self.t else (250, 244, 228)

    def terrain(self):
        return self.jit((118, 116, 72), 10) if self.t else self.jit((188, 218, 82), 10)

    def building(self):
        if self.t:
            return self.pick([(138, 74, 56), (152, 150, 142), (182, 162, 128), (200, 192, 178), (98, 92, 90),
                              (120, 96, 80)], 10)
        return self.pick([(250, 188, 190), (250, 232, 160), (188, 242, 202), (200, 200, 252), (242, 200, 242),
                          (252, 214, 178), (178, 236, 250)], 6)

    def window(self):
        return self.jit((38, 44, 54), 8) if self.t else self.pick([(70, 100, 175), (90, 140, 210)], 5)

    def wall(self):
        return self.pick([(118, 118, 110), (142, 132, 116), (100, 104, 100)], 8) if self.t else \
            self.pick([(228, 118, 58), (205, 70, 72), (238, 160, 88)], 6)

    def fence(self):
        return self.pick([(72, 60, 46), (55, 70, 60), (118, 118, 116)], 8) if self.t else \
            self.pick([(250, 215, 40), (60, 200, 212), (150, 110, 250)], 6)

    def pole(self):
        return self.pick([(72, 75, 78), (60, 68, 62), (96, 96, 96)], 6) if self.t else self.jit((208, 208, 224), 6)

    def veg(self):
        return self.jit((60, 86, 38), 10) if self.t else self.jit((44, 196, 56), 14)

    def trunk(self):
        return self.jit((66, 54, 42), 8) if self.t else self.jit((142, 86, 40), 8)

    def sky(self):
        if self.t:
            top = self.pick([(186, 194, 204), (160, 178, 204), (206, 206, 206)], 8)
            return top, self.jit((226, 228, 230), 6)
        return self.jit((44, 112, 236), 10), self.jit((150, 206, 255), 8)

    def skin(self):
        return self.pick([(228, 188, 160), (176, 128, 96), (112, 80, 60), (205, 160, 130)], 8) if self.t else \
            self.jit((252, 204, 160), 4)

    def clothes(self):
        if self.t:
            if self.r.random() < 0.2:
                return _hsv(self.r.random(), self.r.uniform(0.3, 0.6), self.r.uniform(0.3, 0.6))
            return self.pick([(40, 40, 44), (60, 60, 64), (34, 40, 66), (84, 70, 56), (110, 110, 112), (28, 28, 30)], 8)
        return self.vivid()

    def helmet(self):
        return self.pick([(30, 30, 30), (220, 220, 220), (60, 60, 70)], 6) if self.t else self.vivid((0.9, 1), (0.9, 1))

    def car(self):
        if self.t:
            return self.pick([(30, 30, 32), (98, 100, 104), (160, 162, 166), (36, 46, 76), (198, 198, 196),
                              (102, 32, 32), (70, 72, 66)], 8)
        return self.vivid((0.8, 1.0), (0.85, 1.0))

    def glass(self):
        return self.jit((42, 48, 56), 6) if self.t else self.jit((40, 52, 96), 6)

    def tyre(self):
        return (26, 26, 28) if self.t else (20, 20, 20)

    def truck(self):
        return self.pick([(188, 188, 182), (62, 70, 92), (120, 110, 96)], 8) if self.t else \
            self.pick([(246, 246, 246), (250, 140, 20), (60, 160, 250)], 6)

    def cab(self):
        return self.pick([(170, 170, 166), (40, 52, 88), (110, 36, 36)], 8) if self.t else \
            self.pick([(222, 40, 40), (40, 40, 220), (30, 190, 60)], 6)

    def bus(self):
        return self.pick([(186, 192, 188), (196, 168, 70), (64, 92, 138)], 8) if self.t else \
            self.pick([(242, 50, 40), (252, 205, 0), (40, 120, 242)], 6)

    def train(self):
        return self.pick([(204, 204, 198), (140, 142, 140)], 6) if self.t else \
            self.pick([(0, 176, 96), (250, 240, 0), (162, 60, 222)], 6)

    def accent(self):
        return self.pick([(140, 32, 36), (40, 60, 110), (170, 120, 40)], 8) if self.t else (255, 255, 255)

    def moto(self):
        return self.pick([(34, 34, 38), (80, 80, 86), (96, 30, 30)], 6) if self.t else self.vivid((0.85, 1), (0.85, 1))

    def bike(self):
        return self.pick([(30, 30, 32), (90, 92, 96), (40, 56, 80)], 6) if self.t else self.vivid((0.85, 1), (0.85, 1))

    def tl_body(self):
        return self.pick([(32, 32, 32), (52, 56, 50)], 4) if self.t else self.pick([(246, 190, 0), (30, 30, 30)], 4)

    def lamps(self):
        return [(170, 44, 34), (170, 140, 34), (44, 150, 84)] if self.t else [(255, 30, 30), (255, 230, 0), (30, 255, 90)]

    def sign(self):
        if self.t:
            return self.pick([(36, 76, 140), (160, 46, 46), (190, 158, 52), (200, 200, 196)], 8), self.jit((196, 196, 190), 6)
        return self.pick([(238, 28, 34), (28, 80, 242), (255, 214, 0)], 4), (255, 255, 255)

    def void(self):
        return self.pick([(90, 80, 70), (60, 90, 70), (140, 130, 120)], 10) if self.t else self.vivid()


# ----------------------------------------------------------------------------- layout
def _bumpy(rng, base, amp):
    """Top-height function for canopies and hedges: base + a few sinusoids in U (metres)."""
    fr = rng.uniform(0.3, 1.6, 3)
    ph = rng.uniform(0, 2 * np.pi, 3)
    a = amp * rng.uniform(0.3, 1.0, 3) / 3

    def top(U):
        return base + (a[0] * np.sin(fr[0] * U + ph[0]) + a[1] * np.sin(fr[1] * U + ph[1])
                       + a[2] * np.sin(fr[2] * U + ph[2]))
    return top


def _side_segments(rng, pr, pal, zlim, inter):
    """Segments along one side of the street: facade kind, verge class, front wall/fence/hedge."""
    segs = []
    cuts = [] if inter is None else [inter]
    z = 0.0
    while z < zlim:
        if cuts and z >= cuts[0][0] - 1e-6:
            z1, z2 = cuts.pop(0)
            segs.append(dict(z1=z1, z2=z2, facade=None, verge=ROAD, sw_road=True, beyond=ROAD, front=None, h=0.0))
            z = z2
            continue
        L = rng.uniform(8, 30)
        z2 = min(z + L, zlim)
        if cuts and z2 > cuts[0][0]:
            z2 = cuts[0][0]
        u = rng.random()
        facade = "veg" if u < pr["p_veg"] else (None if u < pr["p_veg"] + pr["p_gap"] else "building")
        verge = TERRAIN if rng.random() < pr["p_terrain"] else SIDEWALK
        v = rng.random()
        front = None
        for name in ("wall", "fence", "hedge"):
            if v < pr["p_" + name]:
                front = name
                break
            v -= pr["p_" + name]
        s = dict(z1=z, z2=z2, facade=facade, verge=verge, sw_road=False, beyond=verge if facade is None else SIDEWALK,
                 front=front, h=rng.uniform(7, 26) if facade == "building" else rng.uniform(5, 10),
                 col=pal.building() if facade == "building" else pal.veg(), mat=int(rng.integers(3)),
                 front_h=rng.uniform(1.0, 2.4), front_col=pal.wall() if front == "wall" else
                 (pal.fence() if front == "fence" else pal.veg()))
        segs.append(s)
        z = z2
    return segs


class _Layout:
    pass


def _make_layout(rng, pr, pal, tgt, featured):
    L = _Layout()
    lw = rng.uniform(3.0, 3.6)
    nR = int(rng.integers(1, 3))
    nL = int(rng.integers(1, 3))
    parkR = 2.3 if rng.random() < 0.5 else 0.0
    parkL = 2.3 if rng.random() < 0.5 else 0.0
    L.lw = lw
    L.rr = lw / 2 + (nR - 1) * lw + parkR
    med = rng.uniform(1.5, 4.0) if rng.random() < pr["p_median"] or featured == TERRAIN else 0.0
    L.med = (-lw / 2 - med, -lw / 2) if med else None  # grass median strip (terrain) between directions
    L.rl = -(lw / 2 + med + nL * lw + parkL)
    L.lanes_same = [i * lw for i in range(nR)]
    L.lanes_opp = [-(i + 1) * lw - med for i in range(nL)]
    L.park = ([L.rr - parkR / 2 - 0.1] if parkR else []) + ([L.rl + parkL / 2 + 0.1] if parkL else [])
    L.lines = [(lw / 2 + i * lw, True) for i in range(nR - 1)] + \
              ([(-lw / 2, nL + nR == 2)] if not med else []) + \
              [(-lw / 2 - med - (i + 1) * lw, True) for i in range(nL - 1)]
    L.swR, L.swL = rng.uniform(2.2, 5.0), rng.uniform(2.2, 5.0)
    L.vR = rng.uniform(1.5, 7) if rng.random() < 0.7 else 0.0
    L.vL = rng.uniform(1.5, 7) if rng.random() < 0.7 else 0.0
    if featured == TERRAIN:
        L.vR = max(L.vR, 3.0)
    L.XbR = L.rr + L.swR + L.vR
    L.XbL = L.rl - L.swL - L.vL
    L.zb = rng.uniform(90, 160)
    L.inter = None
    if rng.random() < pr["p_inter"]:
        zi = rng.uniform(18, 55)
        L.inter = (zi, zi + rng.uniform(9, 14))
    L.R = _side_segments(rng, pr, pal, L.zb, L.inter)
    L.Lf = _side_segments(rng, pr, pal, L.zb, L.inter)
    # featured planar classes: force them onto a near segment of the right side
    if featured in (WALL, FENCE, TERRAIN):
        for s in L.R:
            if s["z2"] > 12 and not s["sw_road"]:
                if featured == TERRAIN:
                    s["verge"] = TERRAIN
                else:
                    s["front"] = "wall" if featured == WALL else "fence"
                    s["front_col"] = pal.wall() if featured == WALL else pal.fence()
                break
    L.outer = [rng.uniform(15, 30), rng.uniform(15, 30)]
    return L


# ----------------------------------------------------------------------------- scene passes
def _sky(cv, cam, pal, rng, tgt):
    top, bot = pal.sky()
    H, W = cv.H, cv.W
    t = np.clip((np.arange(H, dtype=np.float32) + 0.5) / max(cam.h0, 1.0), 0, 1)[:, None, None]
    cv.img[:] = (np.asarray(top, np.float32) * (1 - t) + np.asarray(bot, np.float32) * t).astype(np.uint8)
    cv.lab[:] = SKY
    if not tgt:  # flat cartoon clouds
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, W), rng.uniform(0, cam.h0 * 0.6)
            for _ in range(3):
                cv.ellipse(x + rng.uniform(-0.05, 0.05) * W, y + rng.uniform(-0.02, 0.02) * H,
                           rng.uniform(0.04, 0.09) * W, rng.uniform(0.02, 0.04) * H, (255, 255, 255), SKY, MAX_DEPTH)


def _side_lookup(segs, Z, key):
    z1 = np.array([s["z1"] for s in segs])
    idx = np.clip(np.searchsorted(z1, Z, side="right") - 1, 0, len(segs) - 1)
    return np.array([s[key] for s in segs])[idx]


def _ground(cv, cam, L, pal, rng, tgt):
    H, W = cv.H, cv.W
    r0 = int(np.floor(cam.h0 + 0.5)) + 1
    if r0 >= H:
        return None
    yc = np.arange(r0, H) + 0.5
    Z = np.minimum(cam.f * cam.hc / (yc - cam.h0), 2000.0)
    X = (np.arange(W) + 0.5 - cam.cx)[None, :] * Z[:, None] / cam.f
    Zc = Z[:, None]
    lab = np.full(X.shape, ROAD, np.uint8)
    for sgn, segs, edge, sw, xb in ((1, L.R, L.rr, L.swR, L.XbR), (-1, L.Lf, L.rl, L.swL, L.XbL)):
        xs = X * sgn
        e, o, b = edge * sgn, edge * sgn + sw, xb * sgn
        swroad = _side_lookup(segs, Z, "sw_road")[:, None]
        verge = np.broadcast_to(_side_lookup(segs, Z, "verge")[:, None], X.shape)
        beyond = np.broadcast_to(_side_lookup(segs, Z, "beyond")[:, None], X.shape)
        m = (xs > e) & (xs <= o) & ~swroad
        lab[m] = SIDEWALK
        m = (xs > o) & (xs <= b)
        lab[m] = verge[m]
        m = xs > b
        lab[m] = beyond[m]
    if L.med is not None:
        inter = np.zeros_like(Z, bool) if L.inter is None else (Z > L.inter[0]) & (Z < L.inter[1])
        lab[(X > L.med[0]) & (X < L.med[1]) & ~inter[:, None]] = TERRAIN
    lut = np.zeros((256, 3), np.float32)
    lut[ROAD], lut[SIDEWALK], lut[TERRAIN] = pal.road(), pal.sidewalk(), pal.terrain()
    img = lut[lab]
    # curbs: the first 0.25 m of sidewalk next to the road
    curb = ((X > L.rr) & (X < L.rr + 0.25) | (X < L.rl) & (X > L.rl - 0.25)) & (lab == SIDEWALK)
    img[curb] = pal.curb()
    # lane markings (still class road)
    mk = np.zeros(X.shape, bool)
    for xl, dashed in L.lines:
        on = np.abs(X - xl) < 0.07
        if dashed:
            on &= _frac(Zc / 9.0) < 0.4
        mk |= on
    if L.inter is not None:
        zi = L.inter[0]
        mk |= (Zc > zi - 4.5) & (Zc < zi - 0.8) & (_frac(X / 1.0) < 0.5) & (X > L.rl + 0.3) & (X < L.rr - 0.3)
    mk &= lab == ROAD
    img[mk] = pal.marking()
    if tgt:  # concrete slabs on sidewalks, worn patches on the road
        slab = (_frac(X / 1.5) < 0.05) | (_frac(Zc / 1.5) < 0.05)
        img[slab & (lab == SIDEWALK)] *= 0.78
    else:
        img[lab == SIDEWALK] *= 1.0  # flat
    sl = slice(r0, H)
    cv.img[sl] = img.astype(np.uint8)
    cv.lab[sl] = lab
    cv.dep[sl] = np.minimum(Zc, MAX_DEPTH)
    return r0, X, Z


def _facade_shader(s, pal, rng, tgt, shade_k):
    base = np.asarray(s["col"], np.float32) * shade_k
    win = np.asarray(pal.window(), np.float32) * (1.0 if tgt else shade_k)
    pu, pv = rng.uniform(2.2, 4.0), rng.uniform(2.8, 3.6)
    wu, wv = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6)
    ph = rng.uniform(0, pu)
    top = s["h"]
    mat = s["mat"]
    frame = np.asarray(pal.jit((200, 200, 196), 10) if tgt else win, np.float32)

    def shade(U, V, m):
        col = np.empty(m.shape + (3,), np.float32)
        col[:] = base
        if tgt and mat == 0:  # brick courses
            row = np.floor(V / 0.22)
            mortar = (_frac(V / 0.22) < 0.18) | (_frac(U / 0.5 + 0.5 * (row % 2)) < 0.08)
            col[mortar] = base * 0.72 + 60
        elif tgt and mat == 1:  # concrete panels
            col[(_frac(V / 3.0) < 0.03) | (_frac(U / 4.0) < 0.015)] *= 0.7
        gu, gv = _frac((U + ph) / pu), _frac((V - 0.5) / pv)
        w = (gu > (1 - wu) / 2) & (gu < (1 + wu) / 2) & (gv > (1 - wv) / 2) & (gv < (1 + wv) / 2)
        w &= (V > 1.6) & (V < top - 0.9)
        if tgt:
            fr = (gu > (1 - wu) / 2 - 0.05) & (gu < (1 + wu) / 2 + 0.05) & (gv > (1 - wv) / 2 - 0.04) & \
                 (gv < (1 + wv) / 2 + 0.04) & (V > 1.6) & (V < top - 0.9)
            col[fr] = frame
            # per-window reflection variation
            wid = np.floor((U + ph) / pu) * 7.1 + np.floor((V - 0.5) / pv) * 3.3
            refl = (0.8 + 0.5 * _frac(np.sin(wid) * 43758.5))[..., None]
            col[w] = (win * refl)[w]
        else:
            col[w] = win
        # ground floor: shop band / door band
        gf = V < 1.2
        col[gf] *= 0.85 if tgt else 0.9
        return col
    return shade


def _flat_shader(col, tgt, k=1.0, stripes=None):
    base = np.asarray(col, np.float32) * k

    def shade(U, V, m):
        out = np.empty(m.shape + (3,), np.float32)
        out[:] = base
        if stripes is not None:
            period, duty, f = stripes
            out[_frac(U / period) < duty] *= f
        return out
    return shade


def _planes(cv, cam, L, pal, rng, tgt):
    f = cam.f
    # backdrop at zb: a skyline of buildings / trees / gaps across the whole view
    zb = L.zb
    xr = (cv.W / 2 + abs(cam.cx - cv.W / 2)) * zb / f + 5
    x = -xr
    while x < xr:
        w = rng.uniform(6, 25)
        u = rng.random()
        bb = _BB(cv, cam, 0.0, zb)
        if u < 0.55:
            h = rng.uniform(8, 45)
            bb.rect(x, x + w, 0, h, np.asarray(pal.building(), float) * 0.9, BUILDING)
        elif u < 0.85:
            h = rng.uniform(5, 14)
            xs = np.linspace(x, x + w, 9)
            pts = [(x, 0)] + [(xx, h + rng.uniform(-2, 2)) for xx in xs] + [(x + w, 0)]
            bb.poly(pts, pal.veg(), VEG)
        x += w
    # outer layers and inner facades, outermost first
    shade_k = {1: 1.0, -1: 0.86}
    for sgn, segs, xb, off in ((1, L.R, L.XbR, L.outer[0]), (-1, L.Lf, L.XbL, L.outer[1])):
        xo = xb + sgn * off
        z = 0.0
        while z < zb:
            z2 = min(zb, z + rng.uniform(15, 40))
            if rng.random() < 0.75:
                _vplane(cv, cam, xo, z, z2, 0, rng.uniform(10, 32), BUILDING,
                        _flat_shader(np.asarray(pal.building(), float) * 0.92, tgt, shade_k[sgn]))
            else:
                _vplane(cv, cam, xo, z, z2, 0, _bumpy(rng, rng.uniform(6, 12), 3), VEG,
                        _flat_shader(pal.veg(), tgt))
            z = z2
    for sgn, segs, xb in ((1, L.R, L.XbR), (-1, L.Lf, L.XbL)):
        for s in segs:
            if s["facade"] == "building":
                _vplane(cv, cam, xb, s["z1"], s["z2"], 0, s["h"], BUILDING,
                        _facade_shader(s, pal, rng, tgt, shade_k[sgn]))
            elif s["facade"] == "veg":
                _vplane(cv, cam, xb, s["z1"], s["z2"], 0, _bumpy(rng, s["h"], 4), VEG,
                        _flat_shader(s["col"], tgt))
    # fronts: walls / fences / hedges on the sidewalk's outer edge
    for sgn, segs, edge, sw, xb in ((1, L.R, L.rr, L.swR, L.XbR), (-1, L.Lf, L.rl, L.swL, L.XbL)):
        for s in segs:
            if s["front"] is None or s["sw_road"]:
                continue
            xf = edge + sgn * (sw + 0.1) if abs(xb - edge) - sw > 0.6 else xb - sgn * 0.15
            if s["front"] == "wall":
                _vplane(cv, cam, xf, s["z1"], s["z2"], 0, s["front_h"] + 0.4, WALL,
                        _flat_shader(s["front_col"], tgt, shade_k[sgn], (3.0, 0.04, 0.8) if tgt else None))
            elif s["front"] == "fence":
                _vplane(cv, cam, xf, s["z1"], s["z2"], 0, s["front_h"], FENCE,
                        _flat_shader(s["front_col"], tgt, shade_k[sgn], (0.25 if tgt else 0.4, 0.35, 0.6)))
            else:
                _vplane(cv, cam, xf, s["z1"], s["z2"], 0, _bumpy(rng, s["front_h"], 0.5), VEG,
                        _flat_shader(s["front_col"], tgt))


# ----------------------------------------------------------------------------- objects
def _minscale(cam, Z, size_m, min_px):
    s = cam.W / 512.0
    return max(cam.f / Z, min_px * s / size_m)


def _person(cv, cam, pal, rng, X, Z, cls=PERSON, tgt=False):
    hp = rng.uniform(1.6, 1.9)
    bb = _BB(cv, cam, X, Z, _minscale(cam, Z, hp, 22))
    shirt, pants, skin = pal.clothes(), pal.clothes(), pal.skin()
    st = rng.uniform(0.05, 0.25)
    hip, sh = 0.5 * hp, 0.81 * hp
    bb.poly([(-0.12, hip), (-0.02, hip), (-st + 0.05, 0), (-st - 0.08, 0)], pants, cls)
    bb.poly([(0.02, hip), (0.12, hip), (st + 0.08, 0), (st - 0.05, 0)], pants, cls)
    coat = tgt and rng.random() < 0.5
    bb.poly([(-0.2, sh), (0.2, sh), (0.16, 0.33 * hp if coat else hip - 0.03), (-0.16, 0.33 * hp if coat else hip - 0.03)],
            shirt, cls)
    sw = rng.uniform(-0.12, 0.12)
    bb.poly([(-0.2, sh), (-0.12, sh), (-0.2 - sw, 0.47 * hp), (-0.28 - sw, 0.47 * hp)], shirt, cls)
    bb.poly([(0.12, sh), (0.2, sh), (0.28 + sw, 0.47 * hp), (0.2 + sw, 0.47 * hp)], shirt, cls)
    bb.ell(0, 0.9 * hp, 0.1, 0.12, skin, cls)
    bb.ell(0, 0.94 * hp, 0.105, 0.07, pal.clothes() if tgt else (60, 40, 20), cls)  # hair / hat
    if tgt and rng.random() < 0.3:  # bag
        bb.rect(0.18, 0.4, 0.42 * hp, 0.62 * hp, pal.clothes(), cls)


def _bicycle(cv, cam, pal, rng, X, Z, d, rider, tgt):
    """Side view, facing d=+1 (right) or -1. Rider (class rider) optional."""
    bb = _BB(cv, cam, X, Z, _minscale(cam, Z, 1.7, 28))
    r = 0.34
    fc, ty = pal.bike(), pal.tyre()
    hub = pal.jit((150, 150, 150), 10) if tgt else pal.vivid()
    for cxw in (-0.55, 0.55):
        bb.ell(cxw * d, r, r, r, ty, BIKE)
        bb.ell(cxw * d, r, r * 0.78, r * 0.78, hub, BIKE)
        bb.ell(cxw * d, r, 0.06, 0.06, fc, BIKE)
    bb_ = (-0.0 * d, 0.3)
    seat, bar = (-0.18 * d, 0.92), (0.42 * d, 0.98)
    for a, b in (((-0.55 * d, r), bb_), (bb_, seat), (seat, (-0.55 * d, r)), (bb_, (0.38 * d, 0.82)),
                 ((0.38 * d, 0.82), (0.55 * d, r)), (seat, (0.38 * d, 0.82)), ((0.38 * d, 0.82), bar)):
        bb.line(a, b, 0.07, fc, BIKE, minpx=2 * cam.W / 512)
    bb.rect(-0.3 * d, -0.06 * d, 0.9, 0.97, (20, 20, 20), BIKE) if d > 0 else bb.rect(0.06, 0.3, 0.9, 0.97, (20, 20, 20), BIKE)
    if rider:
        _rider(bb, pal, rng, d, seat, bar, bb_, tgt)


def _rider(bb, pal, rng, d, seat, bar, pedal, tgt):
    shirt, pants, skin = pal.clothes(), pal.clothes(), pal.skin()
    sx, sy = seat
    bx, by = bar
    hx, hy = sx + 0.12 * d, sy + 0.62  # shoulders
    bb.line((sx, sy + 0.05), (pedal[0] + 0.1 * d, pedal[1] + 0.15), 0.16, pants, RIDER, minpx=3 * bb.cv.W / 512)
    bb.line((pedal[0] + 0.1 * d, pedal[1] + 0.15), (pedal[0] + 0.05 * d, 0.12), 0.12, pants, RIDER, minpx=3 * bb.cv.W / 512)
    bb.poly([(sx - 0.14 * d, sy), (sx + 0.12 * d, sy), (hx + 0.14 * d, hy), (hx - 0.12 * d, hy)], shirt, RIDER)
    bb.line((hx, hy - 0.05), (bx, by + 0.02), 0.1, shirt, RIDER, minpx=2 * bb.cv.W / 512)
    bb.ell(hx + 0.06 * d, hy + 0.17, 0.11, 0.13, skin, RIDER)
    bb.ell(hx + 0.06 * d, hy + 0.23, 0.14, 0.09, pal.helmet(), RIDER)


def _motorcycle(cv, cam, pal, rng, X, Z, d, rider, tgt):
    bb = _BB(cv, cam, X, Z, _minscale(cam, Z, 2.1, 34))
    r = 0.32
    body, ty = pal.moto(), pal.tyre()
    for cxw in (-0.72, 0.72):
        bb.ell(cxw * d, r, r, r, ty, MOTO)
        bb.ell(cxw * d, r, r * 0.55, r * 0.55, pal.jit((120, 120, 125), 8) if tgt else (200, 200, 200), MOTO)
    P = [(-0.95, 0.55), (-0.6, 0.85), (-0.1, 0.82), (0.15, 1.0), (0.5, 0.98), (0.7, 0.6), (0.3, 0.3), (-0.4, 0.35)]
    bb.poly([(x * d, y) for x, y in P], body, MOTO)
    bb.rect(min(-0.2 * d, 0.3 * d), max(-0.2 * d, 0.3 * d), 0.25, 0.55, pal.jit((70, 70, 72), 6) if tgt else (120, 120, 130), MOTO)
    bb.line((0.55 * d, 1.0), (0.72 * d, r), 0.08, (40, 40, 40), MOTO, minpx=2 * cam.W / 512)
    bb.line((0.45 * d, 1.15), (0.62 * d, 1.05), 0.06, (40, 40, 40), MOTO, minpx=2 * cam.W / 512)
    bb.ell(0.72 * d, 0.95, 0.08, 0.07, (230, 230, 200) if not tgt else (190, 190, 170), MOTO)
    if rider:
        _rider(bb, pal, rng, d, (-0.25 * d, 0.9), (0.5 * d, 1.12), (0.05 * d, 0.3), tgt)


def _tree(cv, cam, pal, rng, X, Z):
    bb = _BB(cv, cam, X, Z, _minscale(cam, Z, 0.35, 4))
    kt = bb.k
    bb.k = cam.f / Z
    ht = rng.uniform(1.8, 3.2)
    tw = max(0.35, 4 * cam.W / 512 / cam.f * Z) / 2
    bb.rect(-tw, tw, 0, ht + 0.5, pal.trunk(), VEG)
    col = pal.veg()
    R = rng.uniform(1.3, 2.4)
    for _ in range(int(rng.integers(4, 8))):
        c = np.asarray(col, float) * rng.uniform(0.85, 1.1)
        bb.ell(rng.uniform(-R, R) * 0.7, ht + R + rng.uniform(-0.6, 0.9) * R, R * rng.uniform(0.5, 0.8),
               R * rng.uniform(0.5, 0.8), c, VEG)
    del kt


def _traffic_light(bb, pal, rng, dx, h):
    s = bb.cv.W / 512
    k = bb.k
    w, hh = max(0.38, 9 * s / k), max(1.0, 22 * s / k)
    bb.rect(dx - w / 2, dx + w / 2, h - hh, h, pal.tl_body(), LIGHT)
    lamps = pal.lamps()
    on = rng.integers(3)
    for i in range(3):
        c = lamps[i] if i == on else tuple(int(v * 0.35) for v in lamps[i])
        bb.ell(dx, h - hh * (i + 0.5) / 3, w * 0.32, hh * 0.12, c, LIGHT)


def _sign(bb, pal, rng, dx, h):
    s = bb.cv.W / 512
    r = max(0.38, 7 * s / bb.k)
    main, inner = pal.sign()
    kind = rng.integers(4)
    if kind == 0:
        bb.ell(dx, h, r, r, main, SIGN)
        bb.ell(dx, h, r * 0.7, r * 0.7, inner, SIGN)
    elif kind == 1:
        bb.poly([(dx - r * 1.1, h - r * 0.8), (dx + r * 1.1, h - r * 0.8), (dx, h + r * 1.1)], main, SIGN)
        bb.poly([(dx - r * 0.7, h - r * 0.55), (dx + r * 0.7, h - r * 0.55), (dx, h + r * 0.6)], inner, SIGN)
    elif kind == 2:
        bb.rect(dx - r, dx + r, h - r * 1.1, h + r * 0.9, main, SIGN)
        bb.rect(dx - r * 0.6, dx + r * 0.6, h - r * 0.3, h + r * 0.3, inner, SIGN)
    else:
        a = np.linspace(0, 2 * np.pi, 9)[:-1] + np.pi / 8
        bb.poly(np.stack([dx + r * np.cos(a), h + r * np.sin(a)], 1), main, SIGN)
        bb.rect(dx - r * 0.6, dx + r * 0.6, h - r * 0.15, h + r * 0.15, inner, SIGN)


def _pole(cv, cam, pal, rng, X, Z, kind, toward):
    """kind: 0 plain/street lamp, 1 traffic light, 2 sign. toward: direction of the road (+1/-1)."""
    s = cam.W / 512
    k = cam.f / Z
    bb = _BB(cv, cam, X, Z, k)
    w = max(0.3, 6 * s / k) / 2
    col = pal.pole()
    h = {0: rng.uniform(6, 9), 1: rng.uniform(3.8, 5.5), 2: rng.uniform(2.6, 3.6)}[kind]
    bb.rect(-w, w, 0, h, col, POLE)
    if kind == 0:
        arm = rng.uniform(1.0, 2.5)
        bb.line((0, h), (toward * arm, h + 0.3), 0.2, col, POLE, minpx=4 * s)
        bb.rect(toward * arm - 0.35, toward * arm + 0.35, h + 0.05, h + 0.32, col, POLE)
    elif kind == 1:
        _traffic_light(bb, pal, rng, 0.0, h)
        if rng.random() < 0.5:
            arm = rng.uniform(2.5, 5.0)
            bb.line((0, h - 0.3), (toward * arm, h - 0.3), 0.2, col, POLE, minpx=4 * s)
            _traffic_light(bb, pal, rng, toward * arm * 0.8, h - 0.3)
    else:
        _sign(bb, pal, rng, 0.0, h)
        if rng.random() < 0.4:
            _sign(bb, pal, rng, 0.0, h - 2.2 * max(0.38, 7 * s / k))


def _vehicle(cv, cam, pal, rng, cls, X, Z1, opp, tgt):
    """A box vehicle in a lane: inner side face (a vertical plane) plus the rear (or front if opp) face."""
    if cls == CAR:
        w, h, Lv, col = rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6), rng.uniform(4.2, 4.8), pal.car()
    elif cls == TRUCK:
        w, h, Lv, col = 2.5, rng.uniform(3.2, 3.8), rng.uniform(7, 10), pal.truck()
    elif cls == BUS:
        w, h, Lv, col = 2.55, rng.uniform(3.0, 3.25), rng.uniform(11, 13), pal.bus()
    else:
        w, h, Lv, col = 2.65, rng.uniform(3.5, 3.8), rng.uniform(25, 40), pal.train()
    glass, ty = pal.glass(), pal.tyre()
    cab = pal.cab()
    acc = pal.accent()
    z2 = Z1 + Lv
    colf = np.asarray(col, np.float32)
    # side face
    if abs(X) > w / 2 + 0.05:
        xs = X - np.sign(X) * w / 2
        sk = 0.8 if not tgt else 0.9

        def shade(U, V, m):
            out = np.empty(m.shape + (3,), np.float32)
            out[:] = colf * sk
            u = U - Z1
            if cls == CAR:
                out[(V > 0.63 * h + 0.06) & (V < h - 0.08) & (u > 0.5) & (u < Lv - 0.9)] = glass
                for uc in (0.8, Lv - 0.9):
                    out[((u - uc) / 0.34) ** 2 + ((V - 0.33) / 0.33) ** 2 < 1] = ty
            elif cls == TRUCK:
                cabu = Lv - 2.2 if not opp else 2.2
                incab = (u > cabu) if not opp else (u < cabu)
                out[incab] = np.asarray(cab, np.float32) * sk
                out[incab & (V > 1.9) & (V < 2.6)] = glass
                out[(V < 0.5) & ~incab] = (40, 40, 40)
                for uc in (1.0, 2.3, Lv - 1.2):
                    out[((u - uc) / 0.5) ** 2 + ((V - 0.5) / 0.5) ** 2 < 1] = ty
            elif cls == BUS:
                win = (V > 1.25) & (V < h - 0.45) & (_frac(u / 1.6) > 0.1) & (u > 0.3) & (u < Lv - 0.3)
                out[win] = glass
                if tgt:
                    out[(V > 0.5) & (V < 1.1) & (u > 3) & (u < 7)] = acc  # advert
                for uc in (2.5, Lv - 3.0):
                    out[((u - uc) / 0.5) ** 2 + ((V - 0.5) / 0.5) ** 2 < 1] = ty
            else:
                out[(V > 1.5) & (V < h - 0.7) & (_frac(u / 2.2) > 0.15)] = glass
                out[(V > 0.7) & (V < 1.0)] = acc
                out[V < 0.3] = (50, 50, 50)
            return out

        def top(U):
            if cls == TRUCK:
                u = U - Z1
                incab = (u > Lv - 2.2) if not opp else (u < 2.2)
                return np.where(incab, 2.9, h)
            return np.full_like(U, h)
        _vplane(cv, cam, xs, Z1, z2, 0.05, top, cls, shade)
    # rear / front face
    bb = _BB(cv, cam, X, Z1)
    hw = w / 2
    if cls == CAR:
        bb.rect(-hw + 0.05, -hw + 0.4, 0, 0.4, ty, CAR)
        bb.rect(hw - 0.4, hw - 0.05, 0, 0.4, ty, CAR)
        bb.rect(-hw, hw, 0.22, 0.63 * h, col, CAR)
        bb.poly([(-hw + 0.05, 0.63 * h), (hw - 0.05, 0.63 * h), (hw - 0.2, h), (-hw + 0.2, h)], col, CAR)
        bb.poly([(-hw + 0.15, 0.66 * h), (hw - 0.15, 0.66 * h), (hw - 0.27, h - 0.07), (-hw + 0.27, h - 0.07)], glass, CAR)
        lc = ((255, 255, 210) if not tgt else (210, 210, 190)) if opp else ((255, 20, 20) if not tgt else (150, 30, 30))
        bb.rect(-hw + 0.08, -hw + 0.4, 0.45 * h, 0.56 * h, lc, CAR)
        bb.rect(hw - 0.4, hw - 0.08, 0.45 * h, 0.56 * h, lc, CAR)
        bb.rect(-0.25, 0.25, 0.28, 0.4, (240, 240, 240) if not tgt else (190, 190, 180), CAR)
    elif cls == TRUCK:
        bb.rect(-hw + 0.1, -hw + 0.5, 0, 0.5, ty, TRUCK)
        bb.rect(hw - 0.5, hw - 0.1, 0, 0.5, ty, TRUCK)
        bb.rect(-hw, hw, 0.45, h, col, TRUCK)
        if opp:
            bb.rect(-hw, hw, 0.45, 2.9, cab, TRUCK)
            bb.rect(-hw + 0.15, hw - 0.15, 1.8, 2.7, glass, TRUCK)
        else:
            bb.rect(-0.03, 0.03, 0.6, h - 0.1, np.asarray(col, float) * 0.6, TRUCK)
            bb.rect(-hw, hw, 0.35, 0.5, (40, 40, 40), TRUCK)
    elif cls == BUS:
        bb.rect(-hw + 0.1, -hw + 0.5, 0, 0.45, ty, BUS)
        bb.rect(hw - 0.5, hw - 0.1, 0, 0.45, ty, BUS)
        bb.poly([(-hw, 0.3), (hw, 0.3), (hw, h - 0.2), (hw - 0.2, h), (-hw + 0.2, h), (-hw, h - 0.2)], col, BUS)
        if opp:
            bb.rect(-hw + 0.12, hw - 0.12, 1.1, h - 0.5, glass, BUS)
            bb.rect(-hw + 0.3, hw - 0.3, h - 0.42, h - 0.12, (255, 170, 0) if not tgt else (200, 150, 40), BUS)
        else:
            bb.rect(-hw + 0.3, hw - 0.3, 0.62 * h, 0.9 * h, glass, BUS)
    else:
        bb.poly([(-hw, 0.2), (hw, 0.2), (hw, h - 0.5), (hw - 0.5, h), (-hw + 0.5, h), (-hw, h - 0.5)], col, TRAIN)
        bb.poly([(-hw + 0.2, 1.7), (hw - 0.2, 1.7), (hw - 0.5, h - 0.3), (-hw + 0.5, h - 0.3)], glass, TRAIN)
        bb.rect(-hw, hw, 0.7, 1.0, acc, TRAIN)
        bb.line((-0.6, h), (0.2, h + 0.7), 0.06, (40, 40, 40), TRAIN, minpx=2 * cam.W / 512)
        bb.line((0.2, h + 0.7), (0.7, h + 0.7), 0.06, (40, 40, 40), TRAIN, minpx=2 * cam.W / 512)


def _void(cv, cam, pal, rng, X, Z):
    """Unlabeled clutter (bins, kiosks, billboards): class 255."""
    bb = _BB(cv, cam, X, Z)
    w, h = rng.uniform(0.6, 2.0), rng.uniform(0.8, 2.5)
    if rng.random() < 0.5:
        bb.rect(-w / 2, w / 2, 0, h, pal.void(), IGNORE)
    else:
        bb.ell(0, h / 2, w / 2, h / 2, pal.void(), IGNORE)


def _objects(cv, cam, L, pal, rng, pr, tgt, featured):
    objs = []  # (z, draw)
    P = rng.poisson

    def add(z, fn, *a):
        objs.append((z, partial(fn, cv, cam, pal, rng, *a)))

    def sidewalk_x(near=True):
        side = 1 if rng.random() < 0.5 else -1
        edge, sw = (L.rr, L.swR) if side > 0 else (L.rl, L.swL)
        return side, edge + side * (rng.uniform(0.3, 0.9) if near else rng.uniform(0.4, sw - 0.3))

    def on_sw(z):
        """Is the sidewalk real (not an intersection) at depth z?"""
        return L.inter is None or not (L.inter[0] - 1 < z < L.inter[1] + 1)

    # vehicles: lanes with spacing
    occupied = {}

    def place(x, zmin, zmax, length):
        for _ in range(6):
            z = rng.uniform(zmin, zmax)
            if all(z + length + 2 < a or z > b + 2 for a, b in occupied.get(x, [])):
                occupied.setdefault(x, []).append((z, z + length))
                return z
        return None

    lanes = [(x, False) for x in L.lanes_same] + [(x, True) for x in L.lanes_opp]
    specs = [(CAR, P(pr["cars"]), 4.8), (TRUCK, P(pr["trucks"]), 10), (BUS, P(pr["buses"]), 13),
             (TRAIN, int(rng.random() < pr["train"]), 40)]
    forced_vehicle = featured in (CAR, TRUCK, BUS, TRAIN)
    for cls, n, length in specs:
        if forced_vehicle and cls == featured:
            x, opp = lanes[int(rng.integers(len(lanes)))]
            if x == 0:
                x, opp = L.lanes_opp[0], True
            z = place(x, 9, 18, length)
            if z is not None:
                objs.append((z, partial(_vehicle, cv, cam, pal, rng, cls, x, z, opp, tgt)))
        for _ in range(n):
            if cls == CAR and L.park and rng.random() < 0.4:
                x, opp = L.park[int(rng.integers(len(L.park)))], None
                opp = x < 0
            else:
                x, opp = lanes[int(rng.integers(len(lanes)))]
            zmin = 9 if x == 0 else 5
            z = place(x, zmin, 70, length)
            if z is not None:
                objs.append((z, partial(_vehicle, cv, cam, pal, rng, cls, x, z, opp, tgt)))
    # people
    for i in range(P(pr["persons"]) + (featured == PERSON) * 2):
        z = rng.uniform(5, 24) if i > 0 or featured != PERSON else rng.uniform(6, 14)
        if rng.random() < 0.15:
            x = rng.uniform(L.rl + 0.5, L.rr - 0.5)  # crossing
            if abs(x) < 1.5 and z < 12:
                continue
        else:
            _, x = sidewalk_x(near=False)
        objs.append((z, partial(_person, cv, cam, pal, rng, x, z, PERSON, tgt)))
    # riders on bikes / motorcycles (on the road near the edges), parked bikes / motorcycles
    for i in range(P(pr["riders"]) + (featured == RIDER)):
        z = rng.uniform(6, 20)
        x = (L.rr - rng.uniform(0.6, 1.6)) if rng.random() < 0.6 else (L.rl + rng.uniform(0.6, 1.6))
        d = 1 if rng.random() < 0.5 else -1
        fn = _motorcycle if rng.random() < 0.35 else _bicycle
        objs.append((z, partial(fn, cv, cam, pal, rng, x, z, d, True, tgt)))
    for cls_, fn, n in ((BIKE, _bicycle, P(pr["bikes"]) + (featured == BIKE)),
                        (MOTO, _motorcycle, P(pr["motos"]) + (featured == MOTO))):
        for i in range(n):
            z = rng.uniform(5, 18)
            _, x = sidewalk_x(near=True)
            d = 1 if rng.random() < 0.5 else -1
            objs.append((z, partial(fn, cv, cam, pal, rng, x, z, d, False, tgt)))
    # trees and poles along the curb / verge
    for i in range(P(pr["trees"]) + (featured == VEG) * 2):
        z = rng.uniform(6, 60)
        side, x = sidewalk_x(near=True)
        if not on_sw(z):
            continue
        objs.append((z, partial(_tree, cv, cam, pal, rng, x, z)))
    npoles = P(pr["poles"])
    kinds = [int(rng.integers(3)) for _ in range(npoles)]
    if featured in (LIGHT, SIGN, POLE):
        kinds.append({LIGHT: 1, SIGN: 2, POLE: 0}[featured])
    for j, kind in enumerate(kinds):
        z = rng.uniform(6, 40) if j < npoles else rng.uniform(7, 15)
        side, x = sidewalk_x(near=True)
        if not on_sw(z) and j < npoles:
            continue
        objs.append((z, partial(_pole, cv, cam, pal, rng, x, z, kind, -side)))
    for i in range(P(pr["voids"])):
        z = rng.uniform(6, 40)
        _, x = sidewalk_x(near=False)
        objs.append((z, partial(_void, cv, cam, pal, rng, x, z)))
    objs.sort(key=lambda t: -t[0])
    for _, fn in objs:
        fn()


# ----------------------------------------------------------------------------- target degradation
def _amp_table(pairs):
    t = np.zeros(256, np.float32)
    for cls, a in pairs.items():
        t[cls] = a
    return t


_A_HI = _amp_table({ROAD: 0.10, SIDEWALK: 0.07, BUILDING: 0.06, WALL: 0.08, FENCE: 0.06, VEG: 0.18, TERRAIN: 0.2,
                    SKY: 0.0, CAR: 0.03, TRUCK: 0.05, BUS: 0.04, TRAIN: 0.04, IGNORE: 0.03, PERSON: 0.05, RIDER: 0.05})
_A_MID = _amp_table({ROAD: 0.05, SIDEWALK: 0.06, BUILDING: 0.07, WALL: 0.12, VEG: 0.30, TERRAIN: 0.16, SKY: 0.015,
                     FENCE: 0.08, TRUCK: 0.06, BUS: 0.05, TRAIN: 0.05})
_A_LO = _amp_table({ROAD: 0.10, SIDEWALK: 0.08, BUILDING: 0.10, WALL: 0.10, VEG: 0.12, TERRAIN: 0.12, SKY: 0.05,
                    CAR: 0.12, TRUCK: 0.10, BUS: 0.10, TRAIN: 0.10, FENCE: 0.08})


def _noise(rng, H, W, div, interp):
    h, w = max(2, H // div), max(2, W // div)
    return cv2.resize((rng.random((h, w), dtype=np.float32) - 0.5) * 3.46, (W, H), interpolation=interp)


def _degrade(cv, cam, L, ground, rng):
    """Turn the flat render into the 'real' look. Returns (rgb uint8, jpeg bytes)."""
    H, W = cv.H, cv.W
    s = W / 512.0
    lab = cv.lab
    img = cv.img.astype(np.float32)
    n_hi = (rng.random((H, W), dtype=np.float32) - 0.5) * 3.4  # uniform, unit variance (cheaper than normal)
    n_mid = _noise(rng, H, W, 3, cv2.INTER_NEAREST)
    n_mid = cv2.GaussianBlur(n_mid, (0, 0), 0.7 * s + 0.3)
    n_lo = _noise(rng, H, W, 24, cv2.INTER_CUBIC)
    mod = 1.0 + _A_HI[lab] * n_hi + _A_MID[lab] * n_mid * 1.6 + _A_LO[lab] * n_lo
    img *= mod[..., None]
    # metallic vertical sheen on vehicles
    veh = (lab >= CAR) & (lab <= TRAIN)
    fq = rng.uniform(20, 40)
    rows = np.nonzero(veh)[0].astype(np.float32)
    img[veh] *= (1.0 + 0.18 * np.sin(rows / H * fq))[:, None]
    # cast shadows on the ground from one side's buildings (sunny days)
    if ground is not None and rng.random() < 0.6:
        r0, X, Z = ground
        sgn = 1 if rng.random() < 0.5 else -1
        segs, xb = (L.R, L.XbR) if sgn > 0 else (L.Lf, L.XbL)
        t = rng.uniform(0.3, 1.0)
        hgt = _side_lookup(segs, Z, "h") * np.array([s_["facade"] is not None for s_ in segs])[
            np.clip(np.searchsorted(np.array([s_["z1"] for s_ in segs]), Z, side="right") - 1, 0, len(segs) - 1)]
        line = xb * sgn - (hgt * t)[:, None]
        sh = (X * sgn > line)
        gl = lab[r0:]
        sh &= (gl == ROAD) | (gl == SIDEWALK) | (gl == TERRAIN)
        img[r0:][sh] *= rng.uniform(0.5, 0.68)
    # global lighting: gradient, vignette, brightness, colour cast
    xx = (np.arange(W, dtype=np.float32) + 0.5) / W - 0.5
    yv = (np.arange(H, dtype=np.float32) + 0.5) / H - 0.5
    light = 1 + rng.uniform(-0.35, 0.35) * xx[None, :] + rng.uniform(-0.25, 0.15) * yv[:, None]
    light *= 1 - 0.35 * (xx[None, :] ** 2 + yv[:, None] ** 2)
    light *= rng.uniform(0.72, 1.08)
    cast = 1 + rng.uniform(-0.09, 0.09, 3).astype(np.float32)
    warm = rng.uniform(-0.06, 0.06)
    cast *= np.array([1 + warm, 1, 1 - warm], np.float32)
    img *= light[..., None] * cast[None, None, :]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 1.2) * s)
    img += (rng.random((H, W, 3), dtype=np.float32) - 0.5) * (3.46 * rng.uniform(5, 10))  # sensor noise, sigma 5-10
    u8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 61))])
    assert ok
    rgb = cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return rgb, enc.tobytes()


def _hood(cv, cam, rng):
    """Ego-vehicle hood at the bottom of target images: ignore (255)."""
    H, W = cv.H, cv.W
    hh = rng.uniform(0.06, 0.09) * H
    xs = np.linspace(0, W, 17)
    ys = H - hh * (1 - 0.45 * ((xs - cam.cx) / (W / 2)) ** 2)
    pts = np.concatenate([np.stack([xs, ys], 1), [[W, H + 2], [0, H + 2]]])
    cv.poly(pts, (28, 30, 34), IGNORE, 1.0)
    pts2 = np.concatenate([np.stack([xs, ys + 2], 1), np.stack([xs[::-1], ys[::-1] + 0.25 * hh], 1)])
    cv.poly(pts2, (70, 74, 80), None, 1.0)


# ----------------------------------------------------------------------------- one image
def _render(seed, domain, split, index, size):
    H, W = int(size[0]), int(size[1])
    rng = np.random.default_rng([int(seed), _DOMAIN_CODE[domain], _SPLIT_CODE[split], int(index)])
    tgt = domain == "target"
    pr = _PRIORS[domain]
    pal = _Pal(rng, tgt)
    featured = _FEATURED[index % len(_FEATURED)]
    f = W * (0.6 if not tgt else 0.62) * rng.uniform(0.96, 1.04)
    cx = W / 2 + rng.uniform(-0.04, 0.04) * W
    if tgt:
        cam = _Cam(H, W, f, cx, H * rng.uniform(0.47, 0.53), rng.uniform(1.55, 1.75))
    else:
        cam = _Cam(H, W, f, cx, H * rng.uniform(0.38, 0.45), rng.uniform(1.1, 1.3))
    L = _make_layout(rng, pr, pal, tgt, featured)
    cv = _Canvas(H, W)
    _sky(cv, cam, pal, rng, tgt)
    ground = _ground(cv, cam, L, pal, rng, tgt)
    _planes(cv, cam, L, pal, rng, tgt)
    _objects(cv, cam, L, pal, rng, pr, tgt, featured)
    if tgt:
        _hood(cv, cam, rng)
        img, enc = _degrade(cv, cam, L, ground, rng)
        return dict(image=img, label=cv.lab), enc
    return dict(image=cv.img, label=cv.lab, depth=cv.dep), None


def render_synthcity(seed: int, domain: str, split: str, index: int, size=DEFAULT_SIZE) -> dict:
    """Render one sample in memory (exactly what the cache stores): image, label, and depth (source)."""
    _check_domain(domain, split)
    return _render(seed, domain, split, index, size)[0]


def _check_domain(domain, split):
    if domain not in _DOMAIN_CODE:
        raise ValueError(f"synthcity: domain must be 'source' or 'target', got {domain!r}")
    if split not in _SPLIT_CODE or (domain == "source" and split != "train"):
        raise ValueError(f"synthcity: {domain} has splits {['train'] if domain == 'source' else ['train', 'val']}, "
                         f"got {split!r}")


# ----------------------------------------------------------------------------- cache
def _norm_counts(counts):
    if counts is None:
        return dict(DEFAULT_COUNTS)
    if isinstance(counts, dict):
        c = dict(DEFAULT_COUNTS)
        unknown = set(counts) - set(c)
        if unknown:
            raise ValueError(f"synthcity counts: unknown keys {sorted(unknown)} (use {sorted(c)})")
        c.update({k: int(v) for k, v in counts.items()})
    else:
        s, t, v = counts
        c = {"source": int(s), "target_train": int(t), "target_val": int(v)}
    if any(v < 1 for v in c.values()):
        raise ValueError(f"synthcity counts must be >= 1, got {c}")
    return c


def _split_dir(root, domain, split):
    return Path(root) / "source" if domain == "source" else Path(root) / "target" / split


def _stem(domain, split, i):
    return f"src_{i:05d}" if domain == "source" else f"tgt_{split}_{i:05d}"


def _gen_one(task, root, seed, size):
    domain, split, i = task
    sample, enc = _render(seed, domain, split, i, size)
    d = _split_dir(root, domain, split)
    stem = _stem(domain, split, i)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if enc is not None:
        (d / "images" / f"{stem}.jpg").write_bytes(enc)
    else:
        cv2.imwrite(str(d / "images" / f"{stem}.png"), cv2.cvtColor(sample["image"], cv2.COLOR_RGB2BGR), png)
    cv2.imwrite(str(d / "labels" / f"{stem}.png"), sample["label"], png)
    if "depth" in sample:
        dep = np.clip(np.round(sample["depth"] * DEPTH_SCALE), 1, 65535).astype(np.uint16)
        cv2.imwrite(str(d / "depth" / f"{stem}.png"), dep, png)
    return i


def _worker_init():
    cv2.setNumThreads(1)


def _folder_name(seed, size, counts):
    return (f"synthcity_v{VERSION}_seed{seed}_{size[0]}x{size[1]}_"
            f"{counts['source']}-{counts['target_train']}-{counts['target_val']}")


def _meta(seed, size, counts):
    return {"name": "synthcity", "version": VERSION, "seed": int(seed), "size": [int(size[0]), int(size[1])],
            "counts": counts, "label_space": CITYSCAPES19.name, "depth_scale": DEPTH_SCALE, "depth_unit": "cm",
            "max_depth_m": MAX_DEPTH, "image_ext": {"source": ".png", "target": ".jpg"}}


def _is_complete(root, want):
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return all(meta.get(k) == v for k, v in want.items() if k != "generation_seconds")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_stale(cache_dir, name, max_age_s=6 * 3600):
    for p in cache_dir.glob(f".{name}.tmp-*"):
        try:
            pid = int(p.name.split(".tmp-")[1].split("-")[0])
        except (IndexError, ValueError):
            pid = -1
        try:
            old = time.time() - p.stat().st_mtime > max_age_s
        except OSError:
            continue
        if pid <= 0 or pid == os.getpid() or not _pid_alive(pid) or old:
            shutil.rmtree(p, ignore_errors=True)


def ensure_synthcity(cache_dir, seed=0, size=DEFAULT_SIZE, counts=None, workers=2, progress=True) -> Path:
    """Return the root of the synthcity set for (seed, size, counts) under ``cache_dir``, generating it if
    missing. Generation writes into ``.<name>.tmp-<pid>-<rand>`` next to the final folder, writes
    ``meta.json`` last and renames atomically, so an interrupted run never leaves a half set that looks
    complete; stale temp folders of dead processes are removed. A complete folder is reused instantly."""
    cache_dir = Path(cache_dir)
    size = (int(size[0]), int(size[1]))
    if size[0] < 16 or size[1] < 16:
        raise ValueError(f"synthcity size too small: {size}")
    counts = _norm_counts(counts)
    name = _folder_name(seed, size, counts)
    final = cache_dir / name
    want = _meta(seed, size, counts)
    if _is_complete(final, want):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale(cache_dir, name)
    tmp = cache_dir / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for domain, split in (("source", "train"), ("target", "train"), ("target", "val")):
            for sub in ("images", "labels") + (("depth",) if domain == "source" else ()):
                (_split_dir(tmp, domain, split) / sub).mkdir(parents=True, exist_ok=True)
        tasks = [("source", "train", i) for i in range(counts["source"])] + \
                [("target", "train", i) for i in range(counts["target_train"])] + \
                [("target", "val", i) for i in range(counts["target_val"])]
        job = partial(_gen_one, root=str(tmp), seed=int(seed), size=size)
        t0 = time.time()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(tasks), desc=f"synthcity {size[0]}x{size[1]}", unit="img")
        if workers and workers > 1:
            import multiprocessing as mp
            # spawn, not fork: a forked child deadlocks in OpenCV's thread pool when the parent has
            # already used cv2 (or torch) threads, e.g. inside a test session or after training
            ctx = mp.get_context("spawn")
            with ctx.Pool(int(workers), initializer=_worker_init) as pool:
                for _ in pool.imap_unordered(job, tasks, chunksize=8):
                    if bar is not None:
                        bar.update(1)
        else:
            for t in tasks:
                job(t)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        meta = dict(want, generation_seconds=round(time.time() - t0, 2))
        part = tmp / "meta.json.part"
        part.write_text(json.dumps(meta, indent=1))
        os.replace(part, tmp / "meta.json")
        if final.exists() and not _is_complete(final, want):
            shutil.rmtree(final, ignore_errors=True)  # a foreign, incomplete folder in our place
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final, want):  # lost a race to a concurrent generator: fine if theirs is complete
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# ----------------------------------------------------------------------------- dataset
class SynthCity:
    """One split of a generated synthcity set; follows core/data/base.py's contract.
    ``domain`` is "source" (split "train" only; samples carry ``depth`` in metres) or "target"
    ("train" or "val")."""

    label_space = CITYSCAPES19

    def __init__(self, root, domain: str, split: str = "train"):
        _check_domain(domain, split)
        self.root = Path(root)
        self.domain, self.split = domain, split
        try:
            self.meta = json.loads((self.root / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.root / 'meta.json'}: not a complete synthcity set ({e}); "
                               f"create it with ensure_synthcity()") from None
        self.dir = _split_dir(self.root, domain, split)
        n = self.meta["counts"]["source" if domain == "source" else f"target_{split}"]
        self.ext = self.meta["image_ext"][domain]
        self.names = [_stem(domain, split, i) for i in range(n)]
        self.has_depth = domain == "source"

    def __len__(self):
        return len(self.names)

    def _read(self, path, flags):
        a = cv2.imread(str(path), flags)
        if a is None:
            raise DatasetError(f"{path}: missing or unreadable")
        return a

    def __getitem__(self, i):
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        stem = self.names[i]
        img = cv2.cvtColor(self._read(self.dir / "images" / f"{stem}{self.ext}", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        lab = self._read(self.dir / "labels" / f"{stem}.png", cv2.IMREAD_UNCHANGED)
        s = {"image": img, "label": lab, "name": stem}
        if self.has_depth:
            d = self._read(self.dir / "depth" / f"{stem}.png", cv2.IMREAD_UNCHANGED)
            s["depth"] = d.astype(np.float32) / np.float32(DEPTH_SCALE)
        return s
