"""World v2's paint: the colour band of each colour word, the textures, the soft shading,
and the painting of a batch's pixels from its labels and layouts.

Every pixel of colour word c is `dark_c + w * (light_c - dark_c)` for some w in [0, 1]
(the rule in `scenes_v2`'s docstring): texture and shading only choose w.
"""

from __future__ import annotations

import numpy as np

from .seeded import GAMMA, M1, mix
from .v2_layout import Geometry
from .v2_spec import BACKGROUND_BANDS, BACKGROUNDS, COLOUR_RGB, COLOURS, DARK_SHARE, IMAGE_SIZE, TEXTURES, Codes


def colour_band(word: str) -> tuple[np.ndarray, np.ndarray]:
    """(dark, light) float RGB of a colour word; its pixels lie on the segment between them."""
    if word in COLOUR_RGB:
        light = np.array(COLOUR_RGB[word], np.float64)
        return DARK_SHARE * light, light
    if word in BACKGROUND_BANDS:
        dark_rgb, light_rgb = BACKGROUND_BANDS[word]
        return np.array(dark_rgb, np.float64), np.array(light_rgb, np.float64)
    raise ValueError(f"Unknown colour {word!r}; allowed: {', '.join(COLOURS + BACKGROUNDS)}")


def band_gaps() -> dict[tuple[str, str], float]:
    """RGB distance between the bands of every two colour words (segment to segment, on a
    fine grid of both), for the distinctness rule in `scenes_v2`'s docstring."""
    t = np.linspace(0, 1, 257)[:, None]
    points = {}
    for word in COLOURS + BACKGROUNDS:
        dark, light = colour_band(word)
        points[word] = dark + t * (light - dark)  # (257, 3)
    words = list(points)
    return {
        (a, b): float(np.sqrt(((points[a][:, None] - points[b][None]) ** 2).sum(-1)).min())
        for i, a in enumerate(words)
        for b in words[i + 1 :]
    }


_PAINT_WORDS = COLOURS + BACKGROUNDS  # painter colour index: objects' colours, then backgrounds'
_DARK = np.array([colour_band(w)[0] for w in _PAINT_WORDS], np.float32)  # (colours, 3)
_SPAN = np.array([colour_band(w)[1] - colour_band(w)[0] for w in _PAINT_WORDS], np.float32)
# Painting looks colours up in a table: w is quantised to _LEVELS steps, each pixel is the
# rounded RGB of the band at its step (still on the band, 4x faster than computing it).
_LEVELS = 1024
_BAND_RGB = (
    np.rint(_DARK[:, None] + np.linspace(0, 1, _LEVELS, dtype=np.float32)[None, :, None] * _SPAN[:, None])
    .astype(np.uint8)
    .reshape(-1, 3)
)  # (colours * _LEVELS, 3)
_PX = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5  # pixel centres


def _value_noise(s: np.ndarray, t: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] at lattice coordinates (s, t): random values on the
    integer lattice (hashed from `key`), blended with a smoothstep."""
    i, j = np.floor(s), np.floor(t)
    fs, ft = s - i, t - j
    fs, ft = fs * fs * (3 - 2 * fs), ft * ft * (3 - 2 * ft)
    i, j = i.astype(np.int64), j.astype(np.int64)

    key = np.asarray(key).astype(np.uint64)

    def at(di: int, dj: int) -> np.ndarray:  # one mix per lattice point: `key` is already random
        h = mix(key + (i + di).astype(np.uint64) * GAMMA + (j + dj).astype(np.uint64) * M1)
        return ((h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)).reshape(np.broadcast(key, i).shape)

    top = at(0, 0) + fs * (at(1, 0) - at(0, 0))
    bottom = at(0, 1) + fs * (at(1, 1) - at(0, 1))
    return top + ft * (bottom - top)


def _pattern(texture: str, s: np.ndarray, t: np.ndarray, g: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Texture value in [0, 1] (1 = the band's light end) at texture coordinates (s, t), in
    periods; `g` in [-1, 1] runs across the painter along the texture direction (gradient)."""
    if texture == "plain":
        return np.ones(np.broadcast(s, t).shape, np.float32)
    if texture == "striped":
        return np.clip(0.5 + 1.5 * np.sin(2 * np.pi * s), 0, 1)
    if texture == "checked":
        return np.clip(0.5 + 3.0 * np.sin(2 * np.pi * s) * np.sin(2 * np.pi * t), 0, 1)
    if texture == "dotted":  # dark dots of radius 0.27 period on the light end
        fs, ft = s - np.floor(s) - 0.5, t - np.floor(t) - 0.5
        return np.clip((np.sqrt(fs * fs + ft * ft) - 0.27) * 8, 0, 1)
    if texture == "mottled":  # two octaves, contrast stretched
        n = 0.65 * _value_noise(s, t, key) + 0.35 * _value_noise(2 * s + 17.0, 2 * t + 31.0, key)
        return np.clip((n - 0.5) * 2.5 + 0.5, 0, 1)
    if texture == "gradient":
        return np.clip(0.5 + 0.5 * g, 0, 1)
    raise AssertionError(texture)


def _texture(
    textures: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    angle: np.ndarray,
    period: np.ndarray,
    phase_x: np.ndarray,
    phase_y: np.ndarray,
    extent: np.ndarray,
    key: np.ndarray,
) -> np.ndarray:
    """Texture values for painters with texture indices `textures` (first axis) at offsets
    (dx, dy) px from their centres; the other arguments broadcast against dx."""
    out = np.empty(np.broadcast(dx, dy, angle).shape, np.float32)
    for tex in np.unique(textures):
        sel = np.flatnonzero(textures == tex)
        c, s = np.cos(angle[sel]).astype(np.float32), np.sin(angle[sel]).astype(np.float32)
        x, y = dx[sel] if dx.shape[0] > 1 else dx, dy[sel] if dy.shape[0] > 1 else dy
        along, across = x * c + y * s, y * c - x * s
        p = period[sel].astype(np.float32)
        out[sel] = _pattern(
            TEXTURES[tex],
            along / p + phase_x[sel].astype(np.float32),
            across / p + phase_y[sel].astype(np.float32),
            along / extent[sel].astype(np.float32),
            key[sel],
        )
    return out


def paint(codes: Codes, geo: Geometry, labels: np.ndarray) -> np.ndarray:
    """(k, H, W, 3) uint8. A pixel is painted by its top-most object, else its background,
    in that painter's band: dark + w * span, w = texture * shading (objects only shade)."""
    k = len(codes)
    col = lambda a: a[:, None, None]  # noqa: E731  (k,) -> (k, 1, 1)
    # Background, on the whole canvas: the frame is the canvas centre, unrotated.
    offset = _PX - IMAGE_SIZE / 2
    w = _texture(
        codes.background_texture,
        offset[None, None, :],
        offset[None, :, None],
        col(geo.background_angle),
        col(geo.background_period),
        col(geo.background_phase_x),
        col(geo.background_phase_y),
        np.full((k, 1, 1), IMAGE_SIZE / 2),
        col(geo.background_key),
    )
    w = np.broadcast_to(w, (k, IMAGE_SIZE, IMAGE_SIZE)).copy()
    colour = np.broadcast_to(col(len(COLOURS) + codes.background), w.shape).copy()
    # Objects, on their visible pixels only: the frame moves and turns with the object.
    image, y, x = np.nonzero(labels >= 0)
    slot = labels[image, y, x].astype(np.int64)
    f32 = np.float32
    dx, dy = _PX[x] - geo.x[image, slot].astype(f32), _PX[y] - geo.y[image, slot].astype(f32)
    r = geo.radius[image, slot].astype(f32)
    p = _texture(
        codes.texture[image, slot],
        dx,
        dy,
        geo.angle[image, slot] + geo.texture_angle[image, slot],
        geo.period[image, slot],
        geo.phase_x[image, slot],
        geo.phase_y[image, slot],
        r,
        geo.key[image, slot],
    )
    # Soft shading: light from `light_angle`; the far side loses `shade` of the band.
    light = geo.light_angle[image, slot]
    facing = np.clip((dx * np.sin(light).astype(f32) - dy * np.cos(light).astype(f32)) / r, -1, 1)
    w[image, y, x] = p * (1 - geo.shade[image, slot].astype(f32) * (0.5 - 0.5 * facing))
    colour[image, y, x] = codes.colour[image, slot]
    level = (w * (_LEVELS - 1) + 0.5).astype(np.int64)
    return _BAND_RGB[colour * _LEVELS + level]  # (k, H, W, 3)
