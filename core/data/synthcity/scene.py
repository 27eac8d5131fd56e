"""The static scene passes: sky, ground plane (road, sidewalks, verges, markings) and vertical planes
(backdrop skyline, outer layers, facades, walls, fences, hedges)."""
from __future__ import annotations

import numpy as np

from .constants import BUILDING, FENCE, MAX_DEPTH, ROAD, SIDEWALK, SKY, TERRAIN, VEG, WALL
from .layout import _bumpy, _side_lookup
from .raster import _BB, _frac, _vplane


def _sky(cv, cam, pal, rng, tgt, overcast=False):
    """Target: an overcast gradient. Source: on sunny days a clear blue sky, hazy toward the horizon, a
    few crisp cumulus clouds (white puffs over a grey-blue underside); on overcast days (``overcast``)
    the game's own grey cloud deck with a few darker crisp bands."""
    top, bot = pal.overcast_sky() if overcast else pal.sky()
    H, W = cv.H, cv.W
    t = np.clip((np.arange(H, dtype=np.float32) + 0.5) / max(cam.h0, 1.0), 0, 1)[:, None, None]
    if not tgt and not overcast:
        t = t ** 1.6  # deep blue overhead, the haze only near the horizon
    cv.img[:] = (np.asarray(top, np.float32) * (1 - t) + np.asarray(bot, np.float32) * t).astype(np.uint8)
    cv.lab[:] = SKY
    if overcast:
        for _ in range(int(rng.integers(2, 6))):
            x, y = rng.uniform(0, W), rng.uniform(0.05, 0.7) * cam.h0
            col = np.asarray(top, np.float32) * rng.uniform(0.86, 0.96)
            cv.ellipse(x, y, rng.uniform(0.15, 0.4) * W, rng.uniform(0.015, 0.04) * H, col, SKY, MAX_DEPTH)
    elif not tgt:
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, W), rng.uniform(0.1, 0.6) * cam.h0
            puffs = [(x + rng.uniform(-0.06, 0.06) * W, y + rng.uniform(-0.025, 0.015) * H,
                      rng.uniform(0.03, 0.07) * W, rng.uniform(0.02, 0.04) * H) for _ in range(int(rng.integers(3, 6)))]
            for px, py, rx, ry in puffs:  # underside
                cv.ellipse(px, py + 0.25 * ry, rx, ry * 0.8, (196, 206, 222), SKY, MAX_DEPTH)
            for px, py, rx, ry in puffs:
                cv.ellipse(px, py - 0.1 * ry, rx * 0.92, ry * 0.85, (250, 251, 252), SKY, MAX_DEPTH)


def _ground(cv, cam, L, pal, surf):
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
    surf.ground(img, lab, X, Zc, L, curb | mk)
    sl = slice(r0, H)
    cv.img[sl] = np.clip(img, 0, 255).astype(np.uint8)
    cv.lab[sl] = lab
    cv.dep[sl] = np.minimum(Zc, MAX_DEPTH)
    return r0, X, Z


def _planes(cv, cam, L, pal, surf, rng):
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
    # the sunny source: facades on the sun's side of the street face away from it and lie in shade
    shade_k = {1: 1.0, -1: 0.86} if not cv.sun_side else {cv.sun_side: 0.6, -cv.sun_side: 1.0}
    for sgn, segs, xb, off in ((1, L.R, L.XbR, L.outer[0]), (-1, L.Lf, L.XbL, L.outer[1])):
        xo = xb + sgn * off
        z = 0.0
        while z < zb:
            z2 = min(zb, z + rng.uniform(15, 40))
            if rng.random() < 0.75:
                _vplane(cv, cam, xo, z, z2, 0, rng.uniform(10, 32), BUILDING,
                        surf.outer_building(np.asarray(pal.building(), float) * 0.92, shade_k[sgn]))
            else:
                _vplane(cv, cam, xo, z, z2, 0, _bumpy(rng, rng.uniform(6, 12), 3), VEG,
                        surf.foliage(pal.veg()))
            z = z2
    for sgn, segs, xb in ((1, L.R, L.XbR), (-1, L.Lf, L.XbL)):
        for s in segs:
            if s["facade"] == "building":
                _vplane(cv, cam, xb, s["z1"], s["z2"], 0, s["h"], BUILDING,
                        surf.facade(s, pal, rng, shade_k[sgn]))
            elif s["facade"] == "veg":
                _vplane(cv, cam, xb, s["z1"], s["z2"], 0, _bumpy(rng, s["h"], 4), VEG,
                        surf.foliage(s["col"]))
    # fronts: walls / fences / hedges on the sidewalk's outer edge
    for sgn, segs, edge, sw, xb in ((1, L.R, L.rr, L.swR, L.XbR), (-1, L.Lf, L.rl, L.swL, L.XbL)):
        for s in segs:
            if s["front"] is None or s["sw_road"]:
                continue
            xf = edge + sgn * (sw + 0.1) if abs(xb - edge) - sw > 0.6 else xb - sgn * 0.15
            if s["front"] == "wall":
                _vplane(cv, cam, xf, s["z1"], s["z2"], 0, s["front_h"] + 0.4, WALL,
                        surf.wall(s["front_col"], shade_k[sgn]))
            elif s["front"] == "fence":
                _vplane(cv, cam, xf, s["z1"], s["z2"], 0, s["front_h"], FENCE,
                        surf.fence(s["front_col"], shade_k[sgn], s["front_h"]))
            else:
                _vplane(cv, cam, xf, s["z1"], s["z2"], 0, _bumpy(rng, s["front_h"], 0.5), VEG,
                        surf.foliage(s["front_col"]))

