"""The per-domain appearance applied to a rendered canvas.

* source (a game render), sunny on 2/3 of the images: ``_sun`` picks the sun (side of the street,
  shadow length and direction) before the scene is drawn; ``_game_look`` then darkens every ground
  pixel in a hard cast shadow (the sun side's buildings, and each object's shadow collected in
  ``cv.shd``) with a cool sky-lit tint, warms the sunlit rest, adds distance haze and grades like a
  game engine (saturation x1.3, contrast x1.12). No blur, no noise, lossless: edges stay crisp and
  aliased. Overcast on the other third (``OVERCAST_SHARE``): no shadows, a cool diffuse tint, half the
  grading, grey haze.
* target (a photo): ``_degrade`` adds texture grain, a metallic sheen on vehicles, soft cast shadows on
  some days, uneven overcast lighting and vignetting, the camera's one white balance (a fixed faint tint, varied
  by +-2.5 % per channel and +-2 % warm/cool per image), and a clean camera's mild lens
  blur (sigma 0.5-0.8 px at 512 wide), sensor noise (sigma 1-2.5) and JPEG (quality 90-97);
  ``_hood`` draws the ego vehicle's hood (ignore)."""
from __future__ import annotations

import cv2
import numpy as np

from .constants import (BUILDING, BUS, CAR, FENCE, IGNORE, PERSON, RIDER, ROAD, SIDEWALK, SKY, TERRAIN, TRAIN,
                        TRUCK, VEG, WALL)
from .layout import _side_lookup


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


def _facade_shadow(L, X, Z, sgn, t):
    """Ground points (X, Z) in the shadow of side ``sgn``'s facades (buildings and tree rows), for a sun
    casting ``t`` metres of shadow across the street per metre of height."""
    segs, xb = (L.R, L.XbR) if sgn > 0 else (L.Lf, L.XbL)
    hgt = _side_lookup(segs, Z, "h") * np.array([s_["facade"] is not None for s_ in segs])[
        np.clip(np.searchsorted(np.array([s_["z1"] for s_ in segs]), Z, side="right") - 1, 0, len(segs) - 1)]
    line = xb * sgn - (hgt * t)[:, None]
    return X * sgn > line


def _noise(rng, H, W, div, interp):
    h, w = max(2, H // div), max(2, W // div)
    return cv2.resize((rng.random((h, w), dtype=np.float32) - 0.5) * 3.46, (W, H), interpolation=interp)


_CAMERA_TINT = np.array((0.99, 1.01, 1.0), np.float32)  # the target camera's white balance: a faint green


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
        sh = _facade_shadow(L, X, Z, sgn, rng.uniform(0.3, 1.0))
        gl = lab[r0:]
        sh &= (gl == ROAD) | (gl == SIDEWALK) | (gl == TERRAIN)
        img[r0:][sh] *= rng.uniform(0.5, 0.68)
    # global lighting: gradient, vignette, brightness, the camera's white balance
    xx = (np.arange(W, dtype=np.float32) + 0.5) / W - 0.5
    yv = (np.arange(H, dtype=np.float32) + 0.5) / H - 0.5
    light = 1 + rng.uniform(-0.35, 0.35) * xx[None, :] + rng.uniform(-0.25, 0.15) * yv[:, None]
    light *= 1 - 0.35 * (xx[None, :] ** 2 + yv[:, None] ** 2)
    light *= rng.uniform(0.72, 1.08)
    # one camera, one white balance: the camera's fixed tint, varied a little per image
    cast = _CAMERA_TINT * (1 + rng.uniform(-0.025, 0.025, 3).astype(np.float32))
    warm = rng.uniform(-0.02, 0.02)
    cast *= np.array([1 + warm, 1, 1 - warm], np.float32)
    img *= light[..., None] * cast[None, None, :]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 0.8) * s)
    img += (rng.random((H, W, 3), dtype=np.float32) - 0.5) * (3.46 * rng.uniform(1, 2.5))  # sensor noise, sigma 1-2.5
    u8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(90, 98))])
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



OVERCAST_SHARE = 1 / 3  # of the source images: the game's overcast weather (GTA5 varies weather and time of day)
_NO_SUN = (0.0, 0.0)  # overcast: no shadow offset (cast shadows are not drawn)


def _sun(rng):
    """The source's sun: the side of the street it shines from (+1 right, -1 left) and the ground offset
    (dX, dZ) of a shadow per metre of height (away from the sun across the street; toward or away from
    the camera along it)."""
    side = 1 if rng.random() < 0.5 else -1
    t = rng.uniform(0.35, 1.0)
    return (-side * t, rng.uniform(-0.5, 0.6)), side


_GROUND = np.zeros(256, np.uint8)
_GROUND[[ROAD, SIDEWALK, TERRAIN]] = 1
_SHADOW_TINT = np.array((0.6, 0.61, 0.66), np.float32)  # lit by the blue sky only
_SUN_TINT = np.array((1.05, 1.02, 0.95), np.float32)
_HAZE = np.array((196, 214, 232), np.float32)
_LUMA = np.array((0.299, 0.587, 0.114), np.float32)


def _grade_matrix(tint, sat, contrast, pivot=118.0):
    """3x4 affine colour matrix: a per-channel light ``tint``, then saturation ``sat`` around the luma,
    then contrast around ``pivot``."""
    M = sat * np.eye(3, dtype=np.float32) + (1 - sat) * np.ones((3, 1), np.float32) * _LUMA[None, :]
    M = contrast * M * tint[None, :]
    return np.concatenate([M, np.full((3, 1), pivot * (1 - contrast), np.float32)], 1)


_OVERCAST_TINT = np.array((0.9, 0.92, 0.96), np.float32)  # diffuse light from a grey cloud deck
_OVERCAST_HAZE = np.array((206, 210, 216), np.float32)


def _game_look(cv, cam, L, ground, overcast=False, sat=1.3, contrast=1.12):
    """Sunlight, hard shadows, game-engine grading and distance haze on the crisp source render (in
    place): shadowed ground gets a cool sky-lit tint, everything else a warm sun tint. ``overcast``:
    no shadows, a cool diffuse tint, milder grading (saturation x1.15, contrast x1.06), grey haze."""
    if overcast:
        img = cv2.transform(cv.img, _grade_matrix(_OVERCAST_TINT, 1 + (sat - 1) / 2, 1 + (contrast - 1) / 2))
        _haze(cv, img, _OVERCAST_HAZE)
        return
    shd = cv.shd
    if ground is not None:
        r0, X, Z = ground
        shd[r0:] |= _facade_shadow(L, X, Z, cv.sun_side, -cv.sun[0] * cv.sun_side).view(np.uint8)
    shd &= _GROUND[cv.lab]
    img = cv2.transform(cv.img, _grade_matrix(_SUN_TINT, sat, contrast))  # uint8, saturating
    np.copyto(img, cv2.transform(cv.img, _grade_matrix(_SHADOW_TINT, sat, contrast)), where=shd[..., None] > 0)
    _haze(cv, img, _HAZE)


def _haze(cv, img, colour):
    """Aerial perspective: far things fade toward the horizon haze ``colour`` (not the sky itself)."""
    a = 0.45 * (1 - np.exp(cv.dep * np.float32(-1 / 220.0)))
    a[cv.lab == SKY] = 0
    haze = np.empty_like(img)
    haze[:] = colour.astype(np.uint8)
    cv.img = cv2.blendLinear(img, haze, 1 - a, a)
