"""World v2's specification: its words, their colours and sizes, the ranges a seed draws
the rest from, and scenes as integer codes (the form its sampler and renderer work on).

The world itself, its grammar and its renderer's rules, is `ditlens.builtin.scenes_v2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batches import ArrayRows

WORLD = "v2"

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star", "ring", "heart")
COLOURS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "lime",
    "green",
    "cyan",
    "blue",
    "purple",
    "magenta",
    "pink",
)
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "white", "brown", "navy", "beige")
TEXTURES: tuple[str, ...] = ("plain", "striped", "checked", "dotted", "mottled", "gradient")
SIZES: tuple[str, ...] = ("small", "medium", "large")
# A 3x3 grid of cells, row-major; a position's words are its name's words.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
POSITION_PHRASES: dict[str, str] = {
    p: ("in the " if p == "center" else "on the " if p in ("left", "right") else "at the ") + p for p in POSITIONS
}

IMAGE_SIZE = 64
MAX_OBJECTS = 3
MIN_VISIBLE = 0.6  # sampled scenes keep at least this share of every object's footprint visible
MAX_ATTEMPTS = 16  # placements tried per seed before a render gives up on MIN_VISIBLE

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (250, 140, 15),
    "yellow": (245, 225, 35),
    "lime": (160, 235, 40),
    "green": (30, 180, 60),
    "cyan": (35, 220, 230),
    "blue": (50, 95, 245),
    "purple": (145, 60, 225),
    "magenta": (230, 40, 210),
    "pink": (255, 120, 185),
}
DARK_SHARE = 0.65  # an object's darkest texture/shading pixel is 65% of its colour
# Background bands (dark, light): desaturated, very dark or pale, away from every object band.
BACKGROUND_BANDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "black": ((5, 5, 5), (35, 35, 35)),
    "gray": ((90, 90, 90), (130, 130, 130)),
    "white": ((205, 205, 205), (245, 245, 245)),
    "brown": ((70, 40, 15), (110, 66, 28)),
    "navy": ((8, 12, 55), (22, 32, 95)),
    "beige": ((180, 165, 125), (215, 200, 160)),
}
MIN_BAND_GAP = 30.0  # RGB distance every two bands keep (object-background pairs keep >= 50)

# Size words are radius ranges in px (a shape spans about its radius each side of its centre);
# the 1 px gaps keep the words apart.
RADIUS_PX: dict[str, tuple[float, float]] = {"small": (5.5, 7.5), "medium": (8.5, 10.5), "large": (11.5, 14.0)}
CELL_CENTRES = (15.0, 32.0, 49.0)  # px, the 3 cell centres per axis
CELL_JITTER = 4.0  # the exact centre is uniform in cell centre +- this, per axis
MAX_ROTATION = np.pi / 6  # +-30 degrees: a triangle stays apex up, a heart stays upright
# Texture periods: an object's scales with its radius (a small star keeps ~3 stripes, not
# less than 3 px, above the 2 px a 64 px image can show); a background's is in px.
OBJECT_PERIOD = (0.55, 0.8)  # x radius
BACKGROUND_PERIOD = (7.0, 12.0)  # px
SHADE_RANGE = (0.15, 0.35)  # share of the band the soft shading darkens an object's far side


@dataclass(frozen=True)
class Codes(ArrayRows):
    """Scenes as integer arrays, the form the vectorised sampler and renderer work on."""

    n: np.ndarray  # (k,) number of objects
    shape: np.ndarray  # (k, MAX) indices; slots >= n are ignored
    colour: np.ndarray  # (k, MAX)
    texture: np.ndarray  # (k, MAX)
    size: np.ndarray  # (k, MAX)
    position: np.ndarray  # (k, MAX)
    background: np.ndarray  # (k,) index into BACKGROUNDS
    background_texture: np.ndarray  # (k,) index into TEXTURES
