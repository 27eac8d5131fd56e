"""Colour families of the materials, per domain.

Both domains draw every class from the **same real-world families** (asphalt grey road, concrete
sidewalks, green vegetation, olive/brown terrain, brick/concrete/plaster facades, grey poles, real
car paints, bus/truck/train liveries, skin tones, dark clothes with some colour); each domain has its
own values and choices, as a game's asset library differs from a city's. ``_TargetPal`` is the
photo's muted, darker set; ``_SourcePal`` the game's slightly cleaner, more saturated set (the source
look then adds sunlight and game-engine grading on top)."""
from __future__ import annotations

import cv2
import numpy as np


def _hsv(h, s, v):
    c = cv2.cvtColor(np.array([[[h * 180 % 180, s * 255, v * 255]]], np.float32).astype(np.uint8), cv2.COLOR_HSV2RGB)
    return tuple(int(x) for x in c[0, 0])


class _Pal:
    """Random choices shared by both palettes: ``jit`` (per-channel jitter), ``pick`` (one of a list)."""

    tgt = False

    def __init__(self, rng):
        self.r = rng

    def jit(self, col, a=10):
        d = self.r.integers(-a, a + 1, 3)
        return tuple(min(255, max(0, int(v) + int(e))) for v, e in zip(col, d))

    def pick(self, cols, a=8):
        return self.jit(cols[self.r.integers(len(cols))], a)


class _TargetPal(_Pal):
    """The photo: muted, darker, metallic. (Its random draws are v1's, so the target images stay v1's.)"""

    tgt = True

    def road(self):
        return self.jit((84, 83, 88), 8)

    def marking(self):
        return self.jit((185, 185, 175), 10)

    def sidewalk(self):
        return self.jit((150, 145, 138), 10)

    def curb(self):
        return self.jit((170, 168, 162), 6)

    def terrain(self):
        return self.jit((118, 116, 72), 10)

    def building(self):
        return self.pick([(138, 74, 56), (152, 150, 142), (182, 162, 128), (200, 192, 178), (98, 92, 90),
                          (120, 96, 80)], 10)

    def facade(self):
        """(colour, material); material 0 brick, 1 concrete panels, 2 plain (independent of the colour)."""
        return self.building(), int(self.r.integers(3))

    def window(self):
        return self.jit((38, 44, 54), 8)

    def frame(self):
        return self.jit((200, 200, 196), 10)

    def wall(self):
        return self.pick([(118, 118, 110), (142, 132, 116), (100, 104, 100)], 8)

    def fence(self):
        return self.pick([(72, 60, 46), (55, 70, 60), (118, 118, 116)], 8)

    def pole(self):
        return self.pick([(72, 75, 78), (60, 68, 62), (96, 96, 96)], 6)

    def veg(self):
        return self.jit((60, 86, 38), 10)

    def trunk(self):
        return self.jit((66, 54, 42), 8)

    def sky(self):
        top = self.pick([(186, 194, 204), (160, 178, 204), (206, 206, 206)], 8)
        return top, self.jit((226, 228, 230), 6)

    def skin(self):
        return self.pick([(228, 188, 160), (176, 128, 96), (112, 80, 60), (205, 160, 130)], 8)

    def clothes(self):
        if self.r.random() < 0.2:
            return _hsv(self.r.random(), self.r.uniform(0.3, 0.6), self.r.uniform(0.3, 0.6))
        return self.pick([(40, 40, 44), (60, 60, 64), (34, 40, 66), (84, 70, 56), (110, 110, 112), (28, 28, 30)], 8)

    def hair(self):
        return self.clothes()  # hair or a hat

    def helmet(self):
        return self.pick([(30, 30, 30), (220, 220, 220), (60, 60, 70)], 6)

    def car(self):
        return self.pick([(30, 30, 32), (98, 100, 104), (160, 162, 166), (36, 46, 76), (198, 198, 196),
                          (102, 32, 32), (70, 72, 66)], 8)

    def glass(self):
        return self.jit((42, 48, 56), 6)

    def tyre(self):
        return (26, 26, 28)

    def head_lamp(self):
        return (210, 210, 190)

    def tail_lamp(self):
        return (150, 30, 30)

    def plate(self):
        return (190, 190, 180)

    def truck(self):
        return self.pick([(188, 188, 182), (62, 70, 92), (120, 110, 96)], 8)

    def cab(self):
        return self.pick([(170, 170, 166), (40, 52, 88), (110, 36, 36)], 8)

    def bus(self):
        return self.pick([(186, 192, 188), (196, 168, 70), (64, 92, 138)], 8)

    def bus_sign(self):
        return (200, 150, 40)

    def train(self):
        return self.pick([(204, 204, 198), (140, 142, 140)], 6)

    def accent(self):
        return self.pick([(140, 32, 36), (40, 60, 110), (170, 120, 40)], 8)

    def moto(self):
        return self.pick([(34, 34, 38), (80, 80, 86), (96, 30, 30)], 6)

    def moto_hub(self):
        return self.jit((120, 120, 125), 8)

    def engine(self):
        return self.jit((70, 70, 72), 6)

    def moto_lamp(self):
        return (190, 190, 170)

    def bike(self):
        return self.pick([(30, 30, 32), (90, 92, 96), (40, 56, 80)], 6)

    def hub(self):
        return self.jit((150, 150, 150), 10)

    def tl_body(self):
        return self.pick([(32, 32, 32), (52, 56, 50)], 4)

    def lamps(self):
        return [(170, 44, 34), (170, 140, 34), (44, 150, 84)]

    def sign(self):
        return self.pick([(36, 76, 140), (160, 46, 46), (190, 158, 52), (200, 200, 196)], 8), self.jit((196, 196, 190), 6)

    def void(self):
        return self.pick([(90, 80, 70), (60, 90, 70), (140, 130, 120)], 10)


# source facades: (colour, material) -- the game's assets tie the texture to the material
_SRC_FACADES = (((150, 72, 52), 0), ((128, 98, 78), 0), ((162, 160, 152), 1), ((104, 100, 100), 1),
                ((204, 180, 136), 2), ((214, 208, 194), 2))


class _SourcePal(_Pal):
    """The game render's asset library: the same families, cleaner and a little more saturated."""

    def road(self):
        return self.jit((86, 88, 96), 3)

    def marking(self):
        return self.jit((232, 232, 224), 4)

    def sidewalk(self):
        return self.pick([(164, 160, 152), (176, 166, 148), (148, 148, 146)], 6)

    def curb(self):
        return self.jit((188, 186, 180), 4)

    def terrain(self):
        return self.pick([(116, 116, 68), (104, 112, 60), (122, 106, 78)], 6)

    def building(self):
        return self.facade()[0]

    def facade(self):
        col, mat = _SRC_FACADES[int(self.r.integers(len(_SRC_FACADES)))]
        return self.jit(col, 8), mat

    def window(self):
        return self.jit((46, 58, 78), 6)

    def frame(self):
        return self.jit((214, 212, 206), 6)

    def wall(self):
        return self.pick([(130, 130, 124), (150, 140, 122), (112, 114, 110)], 6)

    def fence(self):
        return self.pick([(96, 74, 52), (50, 82, 62), (134, 136, 136)], 6)

    def pole(self):
        return self.pick([(88, 90, 94), (62, 76, 66), (112, 112, 114)], 4)

    def veg(self):
        return self.jit((62, 90, 42), 8)

    def trunk(self):
        return self.jit((84, 64, 44), 6)

    def sky(self):
        top = self.pick([(104, 152, 216), (116, 162, 224), (94, 142, 206)], 6)
        return top, self.jit((192, 212, 232), 6)

    def overcast_sky(self):
        """The game's overcast weather: a grey cloud deck, a little bluer and brighter than the photo's."""
        top = self.pick([(168, 178, 192), (150, 162, 180), (190, 194, 200)], 6)
        return top, self.jit((214, 220, 228), 6)

    def skin(self):
        return self.pick([(234, 192, 164), (186, 134, 100), (118, 82, 60), (212, 166, 134)], 6)

    def clothes(self):
        if self.r.random() < 0.25:
            return _hsv(self.r.random(), self.r.uniform(0.4, 0.7), self.r.uniform(0.35, 0.65))
        return self.pick([(36, 38, 44), (58, 58, 66), (30, 44, 84), (92, 74, 56), (120, 120, 124), (24, 24, 26),
                          (150, 150, 148)], 6)

    def hair(self):
        return self.pick([(40, 28, 20), (70, 48, 30), (20, 18, 18), (150, 110, 60)], 6)

    def helmet(self):
        return self.pick([(24, 24, 26), (232, 232, 232), (52, 58, 78), (180, 30, 30)], 4)

    def car(self):
        return self.pick([(22, 22, 26), (92, 96, 104), (176, 178, 184), (30, 48, 100), (226, 226, 224),
                          (150, 28, 30), (64, 70, 60)], 6)

    def glass(self):
        return self.jit((40, 52, 70), 4)

    def tyre(self):
        return (22, 22, 24)

    def head_lamp(self):
        return (250, 250, 224)

    def tail_lamp(self):
        return (220, 24, 24)

    def plate(self):
        return (236, 236, 230)

    def truck(self):
        return self.pick([(224, 224, 218), (56, 72, 110), (140, 120, 96)], 6)

    def cab(self):
        return self.pick([(214, 214, 210), (34, 56, 110), (150, 34, 34)], 6)

    def bus(self):
        return self.pick([(222, 228, 224), (226, 184, 44), (46, 96, 168)], 6)

    def bus_sign(self):
        return (250, 170, 20)

    def train(self):
        return self.pick([(232, 232, 226), (160, 164, 164)], 4)

    def accent(self):
        return self.pick([(180, 30, 34), (36, 68, 140), (210, 140, 30)], 6)

    def moto(self):
        return self.pick([(26, 26, 30), (90, 92, 100), (150, 30, 30)], 4)

    def moto_hub(self):
        return self.jit((190, 190, 196), 6)

    def engine(self):
        return self.jit((84, 84, 90), 6)

    def moto_lamp(self):
        return (236, 236, 214)

    def bike(self):
        return self.pick([(28, 28, 30), (110, 112, 118), (36, 60, 110)], 4)

    def hub(self):
        return self.jit((176, 176, 182), 8)

    def tl_body(self):
        return self.pick([(30, 30, 32), (48, 54, 46)], 4)

    def lamps(self):
        return [(255, 40, 30), (255, 190, 0), (40, 220, 110)]

    def sign(self):
        main = self.pick([(30, 84, 170), (196, 36, 40), (236, 190, 30), (236, 236, 232)], 4)
        return main, self.jit((244, 244, 240), 4)

    def void(self):
        return self.pick([(100, 88, 74), (56, 96, 70), (156, 146, 134)], 8)


def make_palette(rng, domain):
    return _TargetPal(rng) if domain == "target" else _SourcePal(rng)
