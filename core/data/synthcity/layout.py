"""Scene layout: lanes, median, sidewalks, verges, the segments along each side of the street, and the
per-domain priors (object counts and probabilities) where the label shift lives."""
from __future__ import annotations

import numpy as np

from .constants import (BIKE, CAR, FENCE, LIGHT, MOTO, PERSON, POLE, RIDER, ROAD, SIDEWALK, SIGN, TERRAIN, TRAIN,
                        TRUCK, BUS, WALL)


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
        h = rng.uniform(7, 26) if facade == "building" else rng.uniform(5, 10)
        col, mat = pal.facade() if facade == "building" else (pal.veg(), int(rng.integers(3)))
        s = dict(z1=z, z2=z2, facade=facade, verge=verge, sw_road=False, beyond=verge if facade is None else SIDEWALK,
                 front=front, h=h, col=col, mat=mat,
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

def _side_lookup(segs, Z, key):
    z1 = np.array([s["z1"] for s in segs])
    idx = np.clip(np.searchsorted(z1, Z, side="right") - 1, 0, len(segs) - 1)
    return np.array([s[key] for s in segs])[idx]

