"""The rasterizer: a pin-hole camera over a flat ground, a canvas that paints image, label and depth
together (crisp, aliased edges: ``cv2.LINE_8``), upright billboards and vertical planes."""
from __future__ import annotations

import cv2
import numpy as np

from .constants import IGNORE, MAX_DEPTH


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
        # sunlight (source only): cast-shadow mask on the ground, shadow offset (dX, dZ) per metre of
        # height, and the side of the street the sun shines from (+1 right, -1 left)
        self.shd, self.sun, self.sun_side = None, None, 0

    def light(self, sun, sun_side):
        self.shd = np.zeros((self.H, self.W), np.uint8)
        self.sun, self.sun_side = sun, sun_side

    def shadow(self, cam, pts):
        """Mark the ground-plane polygon ``pts`` ((X, Z) metres; its convex hull) as in cast shadow."""
        if self.shd is None:
            return
        a = np.asarray(pts, np.float64).reshape(-1, 2)
        Z = np.maximum(a[:, 1], 0.5)
        p = self._fix(np.stack([cam.px(a[:, 0], Z), cam.py(0.0, Z)], 1))
        cv2.fillPoly(self.shd, [cv2.convexHull(p)], 1, cv2.LINE_8, 4)

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
    function of the along-road coordinate U=Z). ``shade(U, V)`` gives the (n, 3) colours of the n covered
    pixels from their along-road coordinate U (= depth Z) and height V (1-D arrays)."""
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
    U = np.broadcast_to(Zs[None, :], m.shape)[m]
    V = cam.hc - (np.broadcast_to(yc, m.shape)[m] - cam.h0) * U / cam.f
    col = shade(U, V)
    sl = (slice(r0, r1), slice(c0, c1))
    cv.img[sl][m] = np.clip(col, 0, 255).astype(np.uint8)
    cv.lab[sl][m] = cls
    cv.dep[sl][m] = U


def _frac(a):
    return a - np.floor(a)

