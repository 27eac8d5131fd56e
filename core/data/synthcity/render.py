"""One synthcity image: a pure function of ``(seed, domain, split, index, size)``, no disk.

Both domains run the same passes (layout, sky, ground, planes, objects far to near) with their own
palette, materials and camera; then the source gets its game look (``look._game_look``; sunny, or
overcast on ``OVERCAST_SHARE`` of the images), the target its ego hood and photographic degradations
(``look._degrade``)."""
from __future__ import annotations

import numpy as np

from .constants import DEFAULT_SIZE, _DOMAIN_CODE, _SPLIT_CODE, _check_domain
from .layout import _FEATURED, _PRIORS, _make_layout
from .look import _NO_SUN, OVERCAST_SHARE, _degrade, _game_look, _hood, _sun
from .objects import _objects
from .palette import make_palette
from .raster import _Cam, _Canvas
from .scene import _ground, _planes, _sky
from .textures import make_surfaces


def _render(seed, domain, split, index, size):
    H, W = int(size[0]), int(size[1])
    rng = np.random.default_rng([int(seed), _DOMAIN_CODE[domain], _SPLIT_CODE[split], int(index)])
    tgt = domain == "target"
    pr = _PRIORS[domain]
    pal = make_palette(rng, domain)
    featured = _FEATURED[index % len(_FEATURED)]
    f = W * (0.6 if not tgt else 0.62) * rng.uniform(0.96, 1.04)
    cx = W / 2 + rng.uniform(-0.04, 0.04) * W
    if tgt:
        cam = _Cam(H, W, f, cx, H * rng.uniform(0.47, 0.53), rng.uniform(1.55, 1.75))
    else:
        cam = _Cam(H, W, f, cx, H * rng.uniform(0.38, 0.45), rng.uniform(1.1, 1.3))
    L = _make_layout(rng, pr, pal, tgt, featured)
    cv = _Canvas(H, W)
    surf = make_surfaces(rng, domain)
    overcast = not tgt and rng.random() < OVERCAST_SHARE
    if not tgt:
        cv.light(*((_NO_SUN, 0) if overcast else _sun(rng)))
    _sky(cv, cam, pal, rng, tgt, overcast)
    ground = _ground(cv, cam, L, pal, surf)
    _planes(cv, cam, L, pal, surf, rng)
    _objects(cv, cam, L, pal, rng, pr, tgt, featured)
    if tgt:
        _hood(cv, cam, rng)
        img, enc = _degrade(cv, cam, L, ground, rng)
        return dict(image=img, label=cv.lab), enc
    _game_look(cv, cam, L, ground, overcast)
    return dict(image=cv.img, label=cv.lab, depth=cv.dep), None


def render_synthcity(seed: int, domain: str, split: str, index: int, size=DEFAULT_SIZE) -> dict:
    """Render one sample in memory (exactly what the cache stores): image, label, and depth (source)."""
    _check_domain(domain, split)
    return _render(seed, domain, split, index, size)[0]

