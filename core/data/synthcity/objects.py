"""Objects drawn as billboards and planes, far to near: persons, riders, bicycles, motorcycles, trees,
poles with lamps, traffic lights and signs, vehicles (car, truck, bus, train), unlabeled clutter."""
from __future__ import annotations

from functools import partial

import numpy as np

from .constants import (BIKE, BUS, CAR, IGNORE, LIGHT, MOTO, PERSON, POLE, RIDER, SIGN, TRAIN, TRUCK, VEG)
from .raster import _BB, _frac, _vplane


def _minscale(cam, Z, size_m, min_px):
    s = cam.W / 512.0
    return max(cam.f / Z, min_px * s / size_m)


def _cast(cv, cam, X, Z, k, foot, h):
    """Hard cast shadow (source only: a no-op without ``cv.shd``) of an object standing at (X, Z): the
    ground footprint ``foot`` (local (dx, dz) metres, at the billboard's scale ``k`` px/m) swept along the
    sun direction up to height ``h``."""
    if cv.shd is None:
        return
    sc = k * Z / cam.f
    sx, sz = cv.sun
    a = np.asarray(foot, np.float64).reshape(-1, 2)
    top = a + (h * sx, h * sz)
    pts = np.concatenate([a, top]) * sc + (X, Z)
    cv.shadow(cam, pts)


def _disc(cx, cz, r, n=12):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cz + r * np.sin(a)], 1)


def _person(cv, cam, pal, rng, X, Z, cls=PERSON, tgt=False):
    hp = rng.uniform(1.6, 1.9)
    bb = _BB(cv, cam, X, Z, _minscale(cam, Z, hp, 22))
    _cast(cv, cam, X, Z, bb.k, [(-0.22, -0.12), (0.22, -0.12), (0.22, 0.12), (-0.22, 0.12)], hp)
    shirt, pants, skin = pal.clothes(), pal.clothes(), pal.skin()
    st = rng.uniform(0.05, 0.25)
    hip, sh = 0.5 * hp, 0.81 * hp
    bb.poly([(-0.12, hip), (-0.02, hip), (-st + 0.05, 0), (-st - 0.08, 0)], pants, cls)
    bb.poly([(0.02, hip), (0.12, hip), (st + 0.08, 0), (st - 0.05, 0)], pants, cls)
    coat = rng.random() < 0.5 if tgt else rng.random() < 0.35
    bb.poly([(-0.2, sh), (0.2, sh), (0.16, 0.33 * hp if coat else hip - 0.03), (-0.16, 0.33 * hp if coat else hip - 0.03)],
            shirt, cls)
    sw = rng.uniform(-0.12, 0.12)
    bb.poly([(-0.2, sh), (-0.12, sh), (-0.2 - sw, 0.47 * hp), (-0.28 - sw, 0.47 * hp)], shirt, cls)
    bb.poly([(0.12, sh), (0.2, sh), (0.28 + sw, 0.47 * hp), (0.2 + sw, 0.47 * hp)], shirt, cls)
    bb.ell(0, 0.9 * hp, 0.1, 0.12, skin, cls)
    bb.ell(0, 0.94 * hp, 0.105, 0.07, pal.hair(), cls)  # hair / hat
    if rng.random() < 0.3:  # bag
        bb.rect(0.18, 0.4, 0.42 * hp, 0.62 * hp, pal.clothes(), cls)


def _bicycle(cv, cam, pal, rng, X, Z, d, rider, tgt):
    """Side view, facing d=+1 (right) or -1. Rider (class rider) optional."""
    bb = _BB(cv, cam, X, Z, _minscale(cam, Z, 1.7, 28))
    _cast(cv, cam, X, Z, bb.k, [(-0.9, -0.1), (0.9, -0.1), (0.9, 0.1), (-0.9, 0.1)], 1.7 if rider else 1.0)
    r = 0.34
    fc, ty = pal.bike(), pal.tyre()
    hub = pal.hub()
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
    _cast(cv, cam, X, Z, bb.k, [(-1.0, -0.2), (1.0, -0.2), (1.0, 0.2), (-1.0, 0.2)], 1.8 if rider else 1.1)
    r = 0.32
    body, ty = pal.moto(), pal.tyre()
    for cxw in (-0.72, 0.72):
        bb.ell(cxw * d, r, r, r, ty, MOTO)
        bb.ell(cxw * d, r, r * 0.55, r * 0.55, pal.moto_hub(), MOTO)
    P = [(-0.95, 0.55), (-0.6, 0.85), (-0.1, 0.82), (0.15, 1.0), (0.5, 0.98), (0.7, 0.6), (0.3, 0.3), (-0.4, 0.35)]
    bb.poly([(x * d, y) for x, y in P], body, MOTO)
    bb.rect(min(-0.2 * d, 0.3 * d), max(-0.2 * d, 0.3 * d), 0.25, 0.55, pal.engine(), MOTO)
    bb.line((0.55 * d, 1.0), (0.72 * d, r), 0.08, (40, 40, 40), MOTO, minpx=2 * cam.W / 512)
    bb.line((0.45 * d, 1.15), (0.62 * d, 1.05), 0.06, (40, 40, 40), MOTO, minpx=2 * cam.W / 512)
    bb.ell(0.72 * d, 0.95, 0.08, 0.07, pal.moto_lamp(), MOTO)
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
    if pal.tgt:
        for _ in range(int(rng.integers(4, 8))):
            c = np.asarray(col, float) * rng.uniform(0.85, 1.1)
            bb.ell(rng.uniform(-R, R) * 0.7, ht + R + rng.uniform(-0.6, 0.9) * R, R * rng.uniform(0.5, 0.8),
                   R * rng.uniform(0.5, 0.8), c, VEG)
    else:  # game foliage: crisp leaf clumps, a shaded body and a sunlit cap toward the sun, bright leaf blobs
        _cast(cv, cam, X, Z, bb.k, [(-tw, -tw), (tw, -tw), (tw, tw), (-tw, tw)], ht)
        sx, sz = cv.sun
        cv.shadow(cam, _disc(X + (ht + R) * sx, Z + (ht + R) * sz, R * 0.95))
        side = cv.sun_side
        c0 = np.asarray(col, float)
        for _ in range(int(rng.integers(5, 9))):
            c = c0 * rng.uniform(0.85, 1.1)
            x, y = rng.uniform(-R, R) * 0.7, ht + R + rng.uniform(-0.6, 0.9) * R
            rx, ry = R * rng.uniform(0.5, 0.8), R * rng.uniform(0.5, 0.8)
            bb.ell(x, y, rx, ry, c * 0.7, VEG)
            bb.ell(x + 0.22 * rx * side, y + 0.22 * ry, rx * 0.7, ry * 0.68, c * 1.05, VEG)
        for _ in range(int(rng.integers(8, 16))):
            a = rng.uniform(0, 2 * np.pi)
            rr = R * np.sqrt(rng.random()) * 0.9
            bb.ell(rr * np.cos(a) + 0.3 * R * side, ht + R * 1.15 + rr * np.sin(a) * 0.9, R * 0.2, R * 0.15,
                   c0 * rng.uniform(1.15, 1.4), VEG, angle=rng.uniform(0, 180))
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
    _cast(cv, cam, X, Z, k, [(-w, -w), (w, -w), (w, w), (-w, w)], h)
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
    _cast(cv, cam, X, Z1, cam.f / Z1, [(-w / 2, 0), (w / 2, 0), (w / 2, Lv), (-w / 2, Lv)], h)
    # side face
    if abs(X) > w / 2 + 0.05:
        xs = X - np.sign(X) * w / 2
        # target: a flat 0.9; source: the side facing the sun is lit, the other in shade
        sk = 0.9 if tgt else (1.0 if cv.sun_side == -np.sign(X) else 0.6)

        def shade(U, V):
            out = np.empty(U.shape + (3,), np.float32)
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
        lc = pal.head_lamp() if opp else pal.tail_lamp()
        bb.rect(-hw + 0.08, -hw + 0.4, 0.45 * h, 0.56 * h, lc, CAR)
        bb.rect(hw - 0.4, hw - 0.08, 0.45 * h, 0.56 * h, lc, CAR)
        bb.rect(-0.25, 0.25, 0.28, 0.4, pal.plate(), CAR)
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
            bb.rect(-hw + 0.3, hw - 0.3, h - 0.42, h - 0.12, pal.bus_sign(), BUS)
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
    _cast(cv, cam, X, Z, bb.k, [(-w / 2, -0.3), (w / 2, -0.3), (w / 2, 0.3), (-w / 2, 0.3)], h)
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
    vehicles = []  # (lane x, z1, z2, objs entry)

    def add_vehicle(cls, x, z, opp, length):
        e = (z, partial(_vehicle, cv, cam, pal, rng, cls, x, z, opp, tgt))
        objs.append(e)
        vehicles.append((x, z, z + length, e))

    for cls, n, length in specs:
        if forced_vehicle and cls == featured:
            x, opp = lanes[int(rng.integers(len(lanes)))]
            if x == 0:
                x, opp = L.lanes_opp[0], True
            z = place(x, 9, 18, length)
            if z is None:  # the lane is full: the featured vehicle makes room, so its class always appears
                z = rng.uniform(9, 18)
                for v in [v for v in vehicles if v[0] == x and not (z + length + 2 < v[1] or z > v[2] + 2)]:
                    vehicles.remove(v)
                    objs.remove(v[3])
                    occupied[x].remove((v[1], v[2]))
                occupied.setdefault(x, []).append((z, z + length))
            add_vehicle(cls, x, z, opp, length)
        for _ in range(n):
            if cls == CAR and L.park and rng.random() < 0.4:
                x, opp = L.park[int(rng.integers(len(L.park)))], None
                opp = x < 0
            else:
                x, opp = lanes[int(rng.integers(len(lanes)))]
            zmin = 9 if x == 0 else 5
            z = place(x, zmin, 70, length)
            if z is not None:
                add_vehicle(cls, x, z, opp, length)
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

