"""Materials: the shaders of the vertical planes (facades, outer buildings, foliage, walls, fences) and the
ground textures, one set per domain.

``_PhotoSurfaces`` (target) is v1's: windows with frames, brick courses and concrete panels on some
facades, stripes on walls and fences; the photographic grain comes later from ``look._degrade``.
``_GameSurfaces`` (source) is a game's texture set: crisp procedural patterns, no grain -- asphalt
speckle and tyre tracks, tiled pavers with sharp joints, grass tufts, brick courses with sharp mortar
and per-brick tones, concrete panels, plaster cornices, glazed windows reflecting the sky, leaf blobs.
Far away the patterns fade to the material's mean colour (as mip-mapping does), so they do not alias
into noise."""
from __future__ import annotations

import numpy as np

from .constants import ROAD, SIDEWALK, TERRAIN
from .raster import _frac


def _facade_shader(s, pal, rng, shade_k):
    """The target's facade: windows with frames and per-window reflections; brick courses (material 0)
    or concrete panels (material 1)."""
    base = np.asarray(s["col"], np.float32) * shade_k
    win = np.asarray(pal.window(), np.float32)
    pu, pv = rng.uniform(2.2, 4.0), rng.uniform(2.8, 3.6)
    wu, wv = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6)
    ph = rng.uniform(0, pu)
    top = s["h"]
    mat = s["mat"]
    frame = np.asarray(pal.frame(), np.float32)

    def shade(U, V):
        col = np.empty(U.shape + (3,), np.float32)
        col[:] = base
        if mat == 0:  # brick courses
            row = np.floor(V / 0.22)
            mortar = (_frac(V / 0.22) < 0.18) | (_frac(U / 0.5 + 0.5 * (row % 2)) < 0.08)
            col[mortar] = base * 0.72 + 60
        elif mat == 1:  # concrete panels
            col[(_frac(V / 3.0) < 0.03) | (_frac(U / 4.0) < 0.015)] *= 0.7
        gu, gv = _frac((U + ph) / pu), _frac((V - 0.5) / pv)
        w = (gu > (1 - wu) / 2) & (gu < (1 + wu) / 2) & (gv > (1 - wv) / 2) & (gv < (1 + wv) / 2)
        w &= (V > 1.6) & (V < top - 0.9)
        fr = (gu > (1 - wu) / 2 - 0.05) & (gu < (1 + wu) / 2 + 0.05) & (gv > (1 - wv) / 2 - 0.04) & \
             (gv < (1 + wv) / 2 + 0.04) & (V > 1.6) & (V < top - 0.9)
        col[fr] = frame
        # per-window reflection variation
        wid = np.floor((U + ph) / pu) * 7.1 + np.floor((V - 0.5) / pv) * 3.3
        refl = (0.8 + 0.5 * _frac(np.sin(wid) * 43758.5))[..., None]
        col[w] = (win * refl)[w]
        # ground floor: shop band / door band
        col[V < 1.2] *= 0.85
        return col
    return shade


def _flat_shader(col, k=1.0, stripes=None):
    base = np.asarray(col, np.float32) * k

    def shade(U, V):
        out = np.empty(U.shape + (3,), np.float32)
        out[:] = base
        if stripes is not None:
            period, duty, f = stripes
            out[_frac(U / period) < duty] *= f
        return out
    return shade


class _PhotoSurfaces:
    """The target's materials (v1): plain colours with a few structural patterns."""

    def __init__(self, rng):
        pass

    def facade(self, s, pal, rng, k):
        return _facade_shader(s, pal, rng, k)

    def outer_building(self, col, k):
        return _flat_shader(col, k)

    def foliage(self, col, k=1.0):
        return _flat_shader(col)

    def wall(self, col, k):
        return _flat_shader(col, k, (3.0, 0.04, 0.8))

    def fence(self, col, k, top):
        return _flat_shader(col, k, (0.25, 0.35, 0.6))

    def ground(self, img, lab, X, Zc, L, paint):
        slab = (_frac(X / 1.5) < 0.05) | (_frac(Zc / 1.5) < 0.05)  # concrete slabs on sidewalks
        img[slab & (lab == SIDEWALK)] *= 0.78


def _hash(i, j, s):
    """A pseudo-random value in [0, 1) (float32) per integer cell (i, j) (arrays of whole numbers) and
    integer seed s: wrapping uint32 arithmetic only, so it is bit-identical on every machine."""
    u = np.uint32
    h = np.asarray(i).astype(np.int32).view(u) * u(374761393) + np.asarray(j).astype(np.int32).view(u) * u(668265263)
    h += u(s & 0xFFFFFFFF)
    h ^= h >> u(15)
    h *= u(2246822519)
    h ^= h >> u(13)
    h *= u(3266489917)
    h ^= h >> u(16)
    return (h >> u(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _fade(U, near, far):
    """1 up to ``near`` metres, 0 from ``far`` on: texture contrast fading with distance."""
    return np.clip((far - U) / (far - near), 0.0, 1.0)


_MORTAR = np.array((196, 190, 180), np.float32)
_SKY_REFL = np.array((150, 184, 220), np.float32)


class _GameSurfaces:
    """The source's texture set: crisp procedural patterns (see the module docstring)."""

    def __init__(self, rng):
        self.seed = int(rng.integers(1 << 30))
        self.paver = float(rng.choice([0.4, 0.5, 0.6]))

    # --- vertical planes
    def facade(self, s, pal, rng, k):
        base = np.asarray(s["col"], np.float32)
        win = np.asarray(pal.window(), np.float32)
        frame = np.asarray(pal.frame(), np.float32)
        pu, pv = rng.uniform(2.2, 4.0), rng.uniform(2.8, 3.6)
        wu, wv = rng.uniform(0.35, 0.6), rng.uniform(0.45, 0.62)
        ph = rng.uniform(0, pu)
        shop = rng.random() < 0.5
        top, mat, sd = s["h"], s["mat"], self.seed + int(1000 * s["z1"])

        def shade(U, V):
            U, V = U.astype(np.float32), V.astype(np.float32)
            col = np.empty(U.shape + (3,), np.float32)
            col[:] = base
            near = _fade(U, 18, 32)
            tex = near > 0  # the pattern fades out with distance (as mip-mapping would)
            if mat == 0 and tex.any():  # brick: courses of 0.2 m, 0.45 m bricks, sharp light mortar
                u, v, nr = U[tex], V[tex], near[tex]
                row = np.floor(v / 0.2)
                cu = u / 0.45 + 0.5 * (row % 2)
                c = col[tex] * (1 + 0.16 * (_hash(row, np.floor(cu), sd) - 0.5) * nr)[:, None]
                c[((_frac(v / 0.2) < 0.14) | (_frac(cu) < 0.06)) & (nr > 0.5)] = _MORTAR
                col[tex] = c
            elif mat == 1 and tex.any():  # concrete panels of 1.5 m x one storey, dark joints, per-panel tone
                u, v, nr = U[tex], V[tex], near[tex]
                c = col[tex] * (1 + 0.12 * (_hash(np.floor(u / 1.5), np.floor(v / pv), sd) - 0.5))[:, None]
                c[((_frac(u / 1.5) < 0.025) | (_frac(v / pv) < 0.02)) & (nr > 0.5)] *= 0.68
                col[tex] = c
            elif mat == 2:  # plaster: a light cornice band at every storey
                band = (_frac((V - 0.5) / pv) > 0.93) & (V > 2.0)
                col[band] = col[band] * 0.8 + 48
            gu, gv = _frac((U + ph) / pu), _frac((V - 0.5) / pv)
            inwin = (V > 2.2) & (V < top - 0.9)
            lu, lv = (gu - (1 - wu) / 2) / wu, (gv - (1 - wv) / 2) / wv  # 0..1 inside the window
            fr = (lu > -0.08) & (lu < 1.08) & (lv > -0.07) & (lv < 1.07) & inwin
            col[fr] = frame
            w = fr & (lu > 0) & (lu < 1) & (lv > 0) & (lv < 1)
            if w.any():  # glass reflecting the sky: lighter and bluer toward the top, a crisp diagonal glint
                luw, lvw = lu[w], lv[w]
                wid = np.floor((U[w] + ph) / pu) * 1000 + np.floor((V[w] - 0.5) / pv)
                q = lvw * (0.25 + 0.35 * _hash(wid, 1, sd))
                glass = win + (_SKY_REFL - win) * q[:, None]
                glint = _frac((luw + lvw) * 1.5 + _hash(wid, 2, sd)) < 0.12
                glass[glint] = glass[glint] * 0.6 + 90
                col[w] = glass
            sill = (lu > -0.1) & (lu < 1.1) & (lv > -0.13) & (lv < -0.02) & inwin
            col[sill] = frame * 0.85
            if shop:  # ground floor shop windows and a fascia
                sw = (V > 0.5) & (V < 1.9) & (gu > 0.12) & (gu < 0.88)
                col[sw] = win * 0.8 + (_SKY_REFL - win) * 0.15 * (V[sw, None] - 0.5)
                col[(V > 1.9) & (V < 2.2)] = frame * 0.5
            else:
                col[V < 0.6] *= 0.78
            return col * k
        return shade

    def outer_building(self, col, k):
        base = np.asarray(col, np.float32) * k
        win = base * 0.45 + np.float32(0.25) * _SKY_REFL * k
        sd = self.seed

        def shade(U, V):
            U, V = U.astype(np.float32), V.astype(np.float32)
            out = np.empty(U.shape + (3,), np.float32)
            out[:] = base
            w = (_frac(U / 3.0) > 0.4) & (_frac(U / 3.0) < 0.8) & (_frac(V / 3.2) > 0.35) & (_frac(V / 3.2) < 0.85) & \
                (V > 2.5) & (_fade(U, 60, 80) > 0.5)
            out[w] = win
            out *= (1 + 0.1 * (_hash(np.floor(U / 12.0), 0, sd) - 0.5))[..., None]
            return out
        return shade

    def foliage(self, col, k=1.0):
        """Leaf clumps as crisp blobs: three staggered grids of overlapping discs (0.5, 0.33, 0.21 m cells,
        random offsets, sizes and tones) over a shaded background; brighter toward the sunlit top."""
        base = np.asarray(col, np.float32) * k
        sd = self.seed + 3

        def shade(U, V):
            U, V = U.astype(np.float32), V.astype(np.float32)
            f = np.full(U.shape, 0.62, np.float32)
            for cell, off, tone in ((0.5, 0.0, 0.86), (0.33, 0.17, 1.02), (0.21, 0.07, 1.2)):
                u, v = (U + off) / cell, (V + off) / cell
                ci, cj = np.floor(u), np.floor(v)
                h1, h2 = _hash(ci, cj, sd + int(100 * cell)), _hash(cj, ci, sd + 1 + int(100 * cell))
                d2 = (_frac(u) - 0.25 - 0.5 * h1) ** 2 + (_frac(v) - 0.25 - 0.5 * h2) ** 2
                blob = d2 < 0.06 + 0.1 * _hash(ci + cj, ci, sd + 2) - 0.04 * (cell < 0.3)
                f[blob] = (tone * (0.92 + 0.16 * h1))[blob]
            near = _fade(U, 25, 45)
            f = f * near + (1 - near) * 0.95
            f = f * (0.9 + 0.2 * np.clip(V / 8.0, 0, 1))
            return base * f[..., None]
        return shade

    def wall(self, col, k):
        """Concrete blocks (0.4 x 0.8 m) with sharp joints and per-block tone, a capping course."""
        base = np.asarray(col, np.float32) * k
        sd = self.seed + 5

        def shade(U, V):
            U, V = U.astype(np.float32), V.astype(np.float32)
            row = np.floor(V / 0.4)
            cu = U / 0.8 + 0.5 * (row % 2)
            out = base * (1 + 0.12 * (_hash(row, np.floor(cu), sd) - 0.5))[..., None]
            near = _fade(U, 20, 35) > 0.5
            out[((_frac(V / 0.4) < 0.06) | (_frac(cu) < 0.03)) & near] *= 0.7
            return out
        return shade

    def fence(self, col, k, top):
        """Vertical bars or slats (0.14 m period) between two rails."""
        base = np.asarray(col, np.float32) * k

        def shade(U, V):
            U, V = U.astype(np.float32), V.astype(np.float32)
            out = np.empty(U.shape + (3,), np.float32)
            out[:] = base
            gap = (_frac(U / 0.14) < 0.45) & (_fade(U, 15, 30) > 0.5)
            out[gap] *= 0.55
            rail = (V < 0.12) | (np.abs(V - top * 0.85) < 0.06)
            out[rail] = base * 1.1
            return out
        return shade

    # --- ground
    def ground(self, img, lab, X, Zc, L, paint):
        """Texture the ground in place; ``paint`` (lane markings, curbs) stays clean."""
        sd = self.seed
        F = np.ones(lab.shape, np.float32)  # brightness factor per pixel
        Z = np.broadcast_to(Zc.astype(np.float32), lab.shape)
        X = X.astype(np.float32)
        # asphalt: speckle of light and dark grains, darker repair patches, tyre tracks in every lane
        m = (lab == ROAD) & ~paint
        x, z = X[m], Z[m]
        g = _hash(np.floor(x * (1 / 0.06)), np.floor(z * (1 / 0.06)), sd)
        f = 1 + (0.12 * (g > 0.82) - 0.1 * (g < 0.14)) * _fade(z, 12, 40)
        f[_hash(np.floor(x * 0.4), np.floor(z * 0.25), sd + 1) < 0.05] *= 0.93
        track = np.zeros(x.shape, bool)
        for xc in list(L.lanes_same) + list(L.lanes_opp):
            track |= np.abs(np.abs(x - xc) - 0.8) < 0.3
        f[track] *= 0.92
        F[m] = f
        # pavers: square tiles with sharp joints and a per-tile tone
        m = (lab == SIDEWALK) & ~paint
        x, z, ps = X[m] / self.paver, Z[m] / self.paver, self.paver
        f = 1 + 0.12 * (_hash(np.floor(x), np.floor(z), sd + 2) - 0.5)
        f[((_frac(x) < 0.07) | (_frac(z) < 0.07)) & (z < 26 / ps)] *= 0.74
        F[m] = f
        # grass: tufts in three tones
        m = lab == TERRAIN
        x, z = X[m], Z[m]
        g = _hash(np.floor(x * (1 / 0.06)), np.floor(z * (1 / 0.06)), sd + 3)
        F[m] = 1 + (0.16 * (g > 0.75) - 0.16 * (g < 0.3)) * _fade(z, 12, 40)
        img *= F[..., None]
        # bare earth patches in the grass
        e = np.zeros(lab.shape, bool)
        e[m] = _hash(np.floor(x * (1 / 1.6)), np.floor(z * (1 / 2.4)), sd + 4) < 0.15
        img[e] = img[e] * 0.55 + np.float32(0.45) * np.array((128, 104, 72), np.float32)


def make_surfaces(rng, domain):
    return _PhotoSurfaces(rng) if domain == "target" else _GameSurfaces(rng)
