"""World "v2" of the built-in model: textured shapes on textured backgrounds, drawn from a seed.

World v1 (`scenes.py`, the shipped default) gives one flat image per caption. Here the
caption fixes the attributes (shape, colour, texture, size word and coarse position of each
object; colour and texture of the background) and an integer seed draws everything else:
the exact centre inside the position's cell, the exact radius inside the size word's range,
the rotation, the texture's period, angle, phase and noise, and the soft shading. So one
caption gives many images, as a prompt does in a real DiT.

    >>> scene = parse_caption("a large striped red star at the top left on a checked navy background")
    >>> r = render(scene, seed=3)   # r.image (64, 64, 3) uint8, r.masks (1, 64, 64) bool

Rules that make the ground truth exact:

- Shapes are point-sampled, no anti-aliasing: a pixel is drawn by an object when the
  object's shape contains the pixel's centre. Objects are drawn in caption order, later on
  top. A pixel is in object i's mask iff object i draws it and no later object does; every
  other pixel is background. (`visible` is the share of an object's on-canvas footprint
  left in its mask; sampled scenes keep it >= MIN_VISIBLE.)
- Colour is a band, texture and shading move a pixel only inside it: every pixel of colour
  word c equals `dark_c + w * (light_c - dark_c)` (rounded to uint8) for some w in [0, 1].
  Objects: light = the word's RGB, dark = DARK_SHARE of it (a brightness change that keeps
  the hue). Backgrounds: dark, desaturated or pale bands of their own. Any two bands stay
  at least MIN_BAND_GAP apart in RGB, an object's and a background's at least 50
  (`band_gaps()`; tested), so the nearest band of every pixel is its own colour word's: a
  pixel's colour can be read back from its RGB alone (tested on every pixel of a batch).
- Which pixel belongs to which texture feature is not part of the ground truth; the
  texture word is (a classifier reads it).

Rendering is numpy only and vectorised over the batch: `sample_batch(512, seed)` runs at
about 2,200-3,300 images/s on one core of a 2-core CPU (docs/world-v2.md).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields

import numpy as np

from .scenes import CaptionError
from .scenes import UnknownWordError as _UnknownWordError

WORLD = "v2"

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------

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
_POSITION_BY_PHRASE: dict[tuple[str, ...], str] = {tuple(v.split()): k for k, v in POSITION_PHRASES.items()}

IMAGE_SIZE = 64
MAX_OBJECTS = 3
MIN_VISIBLE = 0.6  # sampled scenes keep at least this share of every object's footprint visible
HELDOUT_MODULUS = 10  # 1 caption in 10 is held out of training (crc32 of the caption, as v1)
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

GRAMMAR = (
    "caption := object (' and ' object)* ' on a ' texture ' ' background ' background'; "
    "object := 'a ' size ' ' texture ' ' colour ' ' shape ' ' position; "
    f"size := {' | '.join(SIZES)}; texture := {' | '.join(TEXTURES)}; "
    f"colour := {' | '.join(COLOURS)}; shape := {' | '.join(SHAPES)}; "
    f"background := {' | '.join(BACKGROUNDS)}; "
    f"position := {' | '.join(repr(p) for p in POSITION_PHRASES.values())}; "
    f"1 to {MAX_OBJECTS} objects, one per position"
)


class UnknownWordError(_UnknownWordError):
    """A prompt word outside world v2's vocabulary. A subclass of v1's UnknownWordError, so
    `except scenes.UnknownWordError` catches both worlds' errors; the message lists v2's words."""

    def __init__(self, word: str, prompt: str):
        self.word, self.prompt = word, prompt
        hint = " (captions are lowercase)" if word.lower() in _VOCABULARY else ""
        ValueError.__init__(
            self,
            f"Unknown word {word!r} in prompt {prompt!r}{hint}. "
            f"The built-in model (world {WORLD}) knows: {', '.join(vocabulary())}",
        )


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------


def _check_choice(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    texture: str
    size: str
    position: str

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("colour", self.colour, COLOURS)
        _check_choice("texture", self.texture, TEXTURES)
        _check_choice("size", self.size, SIZES)
        _check_choice("position", self.position, POSITIONS)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # in drawing order: later objects lie on top
    background: str  # a background colour word
    background_texture: str = "plain"

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        for obj in self.objects:
            if not isinstance(obj, SceneObject):
                raise ValueError(f"Scene objects must be scenes_v2.SceneObject, got {obj!r}")
        positions = [obj.position for obj in self.objects]
        if len(set(positions)) != len(positions):
            raise ValueError(f"Objects of one scene need distinct positions, got {positions}")
        _check_choice("background colour", self.background, BACKGROUNDS)
        _check_choice("background texture", self.background_texture, TEXTURES)


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------


def caption(scene: Scene) -> str:
    if not 1 <= len(scene.objects) <= MAX_OBJECTS:
        raise CaptionError(f"The grammar takes 1 to {MAX_OBJECTS} objects; {scene} has {len(scene.objects)}")
    objects = " and ".join(
        f"a {o.size} {o.texture} {o.colour} {o.shape} {POSITION_PHRASES[o.position]}" for o in scene.objects
    )
    return f"{objects} on a {scene.background_texture} {scene.background} background"


def _build_vocabulary() -> frozenset[str]:
    words = {"a", "and", "on", "background"}
    words.update(SHAPES, COLOURS, BACKGROUNDS, TEXTURES, SIZES)
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    return frozenset(words)


_VOCABULARY = _build_vocabulary()
# Words of the longest caption: MAX_OBJECTS objects of 'a size texture colour shape' + the
# longest position phrase, the 'and's, then 'on a texture background-colour background'.
MAX_CAPTION_WORDS = MAX_OBJECTS * (5 + max(len(p.split()) for p in POSITION_PHRASES.values())) + (MAX_OBJECTS - 1) + 5


def vocabulary() -> list[str]:
    """Every word the caption grammar can produce, sorted."""
    return sorted(_VOCABULARY)


def check_words(text: str) -> None:
    """Raise UnknownWordError (v2's) for the first word outside the v2 vocabulary."""
    for word in text.split():
        if word not in _VOCABULARY:
            raise UnknownWordError(word, text)


def parse_caption(text: str) -> Scene:
    """Inverse of `caption` (runs of whitespace are accepted as one space)."""
    check_words(text)
    words = text.split()
    i = 0

    def peek() -> str | None:
        return words[i] if i < len(words) else None

    def take(allowed: tuple[str, ...], what: str) -> str:
        nonlocal i
        word = peek()
        if word not in allowed:
            got = f"{word!r}" if word is not None else "the end of the prompt"
            raise CaptionError(f"Expected {what} at word {i + 1} of prompt {text!r}, got {got}. Grammar: {GRAMMAR}")
        i += 1
        return word

    objects = []
    while True:
        take(("a",), "'a'")
        size = take(SIZES, "a size")
        texture = take(TEXTURES, "a texture")
        colour = take(COLOURS, "an object colour")
        shape = take(SHAPES, "a shape")
        start = i
        phrase = [take(("on", "at", "in"), "a position phrase"), take(("the",), "'the'")]
        phrase.append(take(("top", "bottom", "left", "right", "center"), "a position"))
        if phrase[-1] in ("top", "bottom") and peek() in ("left", "right"):
            phrase.append(take(("left", "right"), "'left' or 'right'"))
        if tuple(phrase) not in _POSITION_BY_PHRASE:
            raise CaptionError(
                f"{' '.join(phrase)!r} (word {start + 1} of prompt {text!r}) is not a position "
                f"phrase; use one of: {', '.join(repr(p) for p in POSITION_PHRASES.values())}"
            )
        objects.append(SceneObject(shape, colour, texture, size, _POSITION_BY_PHRASE[tuple(phrase)]))
        if take(("and", "on"), "'and' (another object) or 'on' (the background)") == "on":
            break
        if len(objects) == MAX_OBJECTS:
            raise CaptionError(
                f"Prompt {text!r} names more than {MAX_OBJECTS} objects; the grammar takes 1 to {MAX_OBJECTS}"
            )
    take(("a",), "'a'")
    background_texture = take(TEXTURES, "a background texture")
    background = take(BACKGROUNDS, "a background colour")
    take(("background",), "'background'")
    if i != len(words):
        raise CaptionError(
            f"Unexpected {words[i]!r} after the background (word {i + 1} of prompt {text!r}). Grammar: {GRAMMAR}"
        )
    try:
        return Scene(tuple(objects), background, background_texture)
    except ValueError as err:  # two objects at one position
        raise CaptionError(f"Prompt {text!r}: {err}") from err


# ---------------------------------------------------------------------------------------
# Colour bands
# ---------------------------------------------------------------------------------------


def colour_band(word: str) -> tuple[np.ndarray, np.ndarray]:
    """(dark, light) float RGB of a colour word; its pixels lie on the segment between them."""
    if word in COLOUR_RGB:
        light = np.array(COLOUR_RGB[word], np.float64)
        return DARK_SHARE * light, light
    if word in BACKGROUND_BANDS:
        dark, light = BACKGROUND_BANDS[word]
        return np.array(dark, np.float64), np.array(light, np.float64)
    raise ValueError(f"Unknown colour {word!r}; allowed: {', '.join(COLOURS + BACKGROUNDS)}")


def band_gaps() -> dict[tuple[str, str], float]:
    """RGB distance between the bands of every two colour words (segment to segment, on a
    fine grid of both), for the distinctness rule in the module docstring."""
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

# ---------------------------------------------------------------------------------------
# Seeded draws: a counter-based hash, so one image's draws depend on its seed alone and a
# whole batch is drawn in a few array operations.
# ---------------------------------------------------------------------------------------

_M1, _M2, _GAMMA = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wraps mod 2**64, as intended)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _hash(*keys: np.ndarray | int) -> np.ndarray:
    h = np.atleast_1d(np.asarray(0x243F6A8885A308D3, np.uint64))
    for key in keys:
        key = np.atleast_1d(np.asarray(key))
        h = _mix(h + _GAMMA + key.astype(np.int64).astype(np.uint64))
    return h


def _uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Floats in [0, 1), one per broadcast element of the keys."""
    return (_hash(*keys) >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ---------------------------------------------------------------------------------------
# Layouts: what a seed draws
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # arrays: compare fields with np.array_equal
class Layout:
    """The continuous draws of one image, per object (arrays of shape (n_obj,)) and for the
    background (floats). `draw(scene, layout)` renders exactly these; `render(scene, seed)`
    draws them from the seed first."""

    x: np.ndarray  # object centre, px from the left edge
    y: np.ndarray  # object centre, px from the top edge
    radius: np.ndarray  # px
    angle: np.ndarray  # rotation, radians (clockwise on screen)
    period: np.ndarray  # texture period (px); the noise cell for mottled
    texture_angle: np.ndarray  # texture orientation relative to the object, radians
    phase_x: np.ndarray  # texture phase, in periods
    phase_y: np.ndarray
    key: np.ndarray  # int64 noise key (mottled)
    light_angle: np.ndarray  # direction the soft light comes from, radians
    shade: np.ndarray  # share of the band the shading takes at the far side
    background_period: float
    background_angle: float
    background_phase_x: float
    background_phase_y: float
    background_key: int
    attempt: int = 0  # which placement of the seed met MIN_VISIBLE (render) or was taken

    def __post_init__(self) -> None:
        for f in _OBJECT_FIELDS:
            object.__setattr__(self, f, np.asarray(getattr(self, f), np.int64 if f == "key" else np.float64))


_OBJECT_FIELDS = (
    "x",
    "y",
    "radius",
    "angle",
    "period",
    "texture_angle",
    "phase_x",
    "phase_y",
    "key",
    "light_angle",
    "shade",
)
_BACKGROUND_FIELDS = (
    "background_period",
    "background_angle",
    "background_phase_x",
    "background_phase_y",
    "background_key",
)


@dataclass(frozen=True)
class _Codes:
    """Scenes as integer arrays, the form the vectorised sampler and renderer work on."""

    n: np.ndarray  # (k,) number of objects
    shape: np.ndarray  # (k, MAX) indices; slots >= n are ignored
    colour: np.ndarray  # (k, MAX)
    texture: np.ndarray  # (k, MAX)
    size: np.ndarray  # (k, MAX)
    position: np.ndarray  # (k, MAX)
    background: np.ndarray  # (k,) index into BACKGROUNDS
    background_texture: np.ndarray  # (k,) index into TEXTURES

    def __len__(self) -> int:
        return len(self.n)

    def take(self, index: np.ndarray) -> _Codes:
        return _Codes(*(getattr(self, f.name)[index] for f in fields(_Codes)))

    @staticmethod
    def concat(parts: list[_Codes]) -> _Codes:
        return _Codes(*(np.concatenate([getattr(c, f.name) for c in parts]) for f in fields(_Codes)))


@dataclass(frozen=True)
class _Geometry:
    """Layouts of a batch: object fields (k, MAX), background fields (k,)."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    period: np.ndarray
    texture_angle: np.ndarray
    phase_x: np.ndarray
    phase_y: np.ndarray
    key: np.ndarray
    light_angle: np.ndarray
    shade: np.ndarray
    background_period: np.ndarray
    background_angle: np.ndarray
    background_phase_x: np.ndarray
    background_phase_y: np.ndarray
    background_key: np.ndarray
    attempt: np.ndarray  # (k,)

    def take(self, index: np.ndarray) -> _Geometry:
        return _Geometry(*(getattr(self, f.name)[index] for f in fields(_Geometry)))

    @staticmethod
    def concat(parts: list[_Geometry]) -> _Geometry:
        return _Geometry(*(np.concatenate([getattr(g, f.name) for g in parts]) for f in fields(_Geometry)))

    def layout(self, i: int, n: int) -> Layout:
        return Layout(
            **{f: getattr(self, f)[i, :n].copy() for f in _OBJECT_FIELDS},
            **{f: getattr(self, f)[i].item() for f in _BACKGROUND_FIELDS},
            attempt=int(self.attempt[i]),
        )

    @staticmethod
    def from_layouts(layouts: list[Layout]) -> _Geometry:
        m = max([len(lay.x) for lay in layouts] + [1])

        def pad(a: np.ndarray) -> np.ndarray:
            return np.pad(a, (0, m - len(a)), constant_values=1)  # 1: a harmless radius for empty slots

        return _Geometry(
            **{f: np.stack([pad(getattr(lay, f)) for lay in layouts]) for f in _OBJECT_FIELDS},
            **{f: np.array([getattr(lay, f) for lay in layouts]) for f in _BACKGROUND_FIELDS},
            attempt=np.array([lay.attempt for lay in layouts], np.int64),
        )


def _between(u: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    return lo + u * (np.asarray(hi) - lo)


_RADIUS_LO = np.array([RADIUS_PX[s][0] for s in SIZES])
_RADIUS_HI = np.array([RADIUS_PX[s][1] for s in SIZES])
_CELL_X = np.array([CELL_CENTRES[i % 3] for i in range(len(POSITIONS))])
_CELL_Y = np.array([CELL_CENTRES[i // 3] for i in range(len(POSITIONS))])


def _geometry(codes: _Codes, seeds: np.ndarray, attempt: np.ndarray) -> _Geometry:
    """Draws of each image from (its seed, attempt, object slot, field): (k, MAX) per field."""
    k, m = codes.shape.shape
    s, a = seeds[:, None], attempt[:, None]
    slot = np.arange(m)[None, :]

    def u(field: int) -> np.ndarray:  # (k, MAX)
        return _uniform(s, a, slot, field).reshape(k, m)

    def ub(field: int) -> np.ndarray:  # (k,): the background uses slot -1
        return _uniform(seeds, attempt, -1, field).reshape(k)

    radius = _between(u(2), _RADIUS_LO[codes.size], _RADIUS_HI[codes.size])
    return _Geometry(
        x=_CELL_X[codes.position] + _between(u(0), -CELL_JITTER, CELL_JITTER),
        y=_CELL_Y[codes.position] + _between(u(1), -CELL_JITTER, CELL_JITTER),
        radius=radius,
        angle=_between(u(3), -MAX_ROTATION, MAX_ROTATION),
        period=_between(u(4), *OBJECT_PERIOD) * radius,
        texture_angle=_between(u(5), 0, np.pi),
        phase_x=u(6),
        phase_y=u(7),
        key=_hash(s, a, slot, 8).reshape(k, m).view(np.int64),
        light_angle=_between(u(9), 0, 2 * np.pi),
        shade=_between(u(10), *SHADE_RANGE),
        background_period=_between(ub(0), *BACKGROUND_PERIOD),
        background_angle=_between(ub(1), 0, np.pi),
        background_phase_x=ub(2),
        background_phase_y=ub(3),
        background_key=_hash(seeds, attempt, -1, 4).view(np.int64),
        attempt=attempt.copy(),
    )


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------

_PX = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5  # pixel centres
# Shapes reach at most SHAPE_EXTENT radii from their centre (a rotated square's corner:
# 0.8 * sqrt(2)); footprints are computed in a WINDOW x WINDOW box around the centre, which
# holds any shape of radius <= max RADIUS_PX (tested).
SHAPE_EXTENT = 1.15
WINDOW = 2 * int(np.ceil(SHAPE_EXTENT * max(hi for _, hi in RADIUS_PX.values()) + 2))


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape test in the object's frame: u right, v down, in radii (the shape spans ~[-1, 1])."""
    name = SHAPES[shape]
    if name == "circle":
        return u * u + v * v <= 1
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":  # equilateral, apex up, circumradius 1 around its centroid
        return (v <= 0.5) & (np.abs(u) <= 0.57735 * (v + 1))
    if name == "diamond":  # a tall rhombus: never a rotated square
        return np.abs(u) / 0.62 + np.abs(v) <= 1
    if name == "cross":
        return (np.minimum(np.abs(u), np.abs(v)) <= 0.3) & (np.maximum(np.abs(u), np.abs(v)) <= 0.95)
    if name == "star":  # 5 points, one up; inner radius 0.45
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(u, -v)  # from straight up
        sector = 2 * np.pi / 5
        f = np.abs(np.mod(phi + sector / 2, sector) - sector / 2)
        qx, qy = rho * np.cos(f), rho * np.sin(f)
        bx, by = 0.45 * np.cos(sector / 2), 0.45 * np.sin(sector / 2)
        return (bx - 1) * qy - by * (qx - 1) >= 0  # on the centre's side of the edge (1, 0)-(bx, by)
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.55**2)
    if name == "heart":
        x, y = u * 1.15, 0.15 - v * 1.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    raise AssertionError(name)


def _frame(
    geo: _Geometry, image: np.ndarray, slot: np.ndarray, px: np.ndarray, py: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Object frame coordinates (u, v) in radii of the pixel centres (px, py), per object."""
    cos, sin = np.cos(geo.angle[image, slot]), np.sin(geo.angle[image, slot])
    r = geo.radius[image, slot]
    dx, dy = px - geo.x[image, slot], py - geo.y[image, slot]
    return (dx * cos + dy * sin) / r, (dy * cos - dx * sin) / r


@dataclass(frozen=True)
class _Footprints:
    """The present objects of a batch, flattened (m objects), each with its footprint in a
    window of the canvas."""

    image: np.ndarray  # (m,) image index
    slot: np.ndarray  # (m,) slot in its scene
    rows: np.ndarray  # (m, WINDOW) canvas rows of the window
    cols: np.ndarray  # (m, WINDOW) canvas columns
    inside: np.ndarray  # (m, WINDOW, WINDOW) bool: the shape holds the pixel's centre

    @staticmethod
    def of(codes: _Codes, geo: _Geometry) -> _Footprints:
        image, slot = np.nonzero(np.arange(codes.shape.shape[1])[None, :] < codes.n[:, None])
        offsets = np.arange(WINDOW)
        top = np.clip(np.floor(geo.y[image, slot]).astype(np.int64) - WINDOW // 2, 0, IMAGE_SIZE - WINDOW)
        left = np.clip(np.floor(geo.x[image, slot]).astype(np.int64) - WINDOW // 2, 0, IMAGE_SIZE - WINDOW)
        rows, cols = top[:, None] + offsets, left[:, None] + offsets  # (m, WINDOW)
        # float64: the shape test at a pixel centre must not depend on rounding (tested exactly)
        px = np.arange(IMAGE_SIZE) + 0.5
        u, v = _frame(geo, image[:, None, None], slot[:, None, None], px[cols][:, None, :], px[rows][:, :, None])
        shapes = codes.shape[image, slot]
        inside = np.zeros((len(image), WINDOW, WINDOW), bool)
        for h in np.unique(shapes):
            sel = np.flatnonzero(shapes == h)
            inside[sel] = _inside(int(h), u[sel], v[sel])
        return _Footprints(image, slot, rows, cols, inside)

    def _window(self, sel: np.ndarray) -> tuple[np.ndarray, ...]:
        """Index of the canvas windows of objects `sel`: (len(sel), WINDOW, WINDOW) each."""
        return self.image[sel, None, None], self.rows[sel, :, None], self.cols[sel, None, :]

    def labels(self, k: int) -> np.ndarray:
        """(k, H, W) int8: the top-most object's slot per pixel (later slots on top), -1 = background."""
        labels = np.full((k, IMAGE_SIZE, IMAGE_SIZE), -1, np.int8)
        for j in np.unique(self.slot):
            sel = np.flatnonzero(self.slot == j)  # at most one object of slot j per image
            at = self._window(sel)
            labels[at] = np.where(self.inside[sel], np.int8(j), labels[at])
        return labels

    def visible(self, codes: _Codes, labels: np.ndarray) -> np.ndarray:
        """(k, MAX) share of each object's on-canvas footprint left visible; 1 for empty
        slots (0 for an object wholly off the canvas, which these cell ranges never give)."""
        out = np.ones(codes.shape.shape)
        area = self.inside.sum(axis=(1, 2))
        all_objects = np.arange(len(self.image))
        shown = (labels[self._window(all_objects)] == self.slot[:, None, None]).sum(axis=(1, 2))
        out[self.image, self.slot] = np.where(area > 0, shown / np.maximum(area, 1), 0.0)
        return out


def _value_noise(s: np.ndarray, t: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] at lattice coordinates (s, t): random values on the
    integer lattice (hashed from `key`), blended with a smoothstep."""
    i, j = np.floor(s), np.floor(t)
    fs, ft = s - i, t - j
    fs, ft = fs * fs * (3 - 2 * fs), ft * ft * (3 - 2 * ft)
    i, j = i.astype(np.int64), j.astype(np.int64)

    key = np.asarray(key).astype(np.uint64)

    def at(di: int, dj: int) -> np.ndarray:  # one mix per lattice point: `key` is already random
        h = _mix(key + (i + di).astype(np.uint64) * _GAMMA + (j + dj).astype(np.uint64) * _M1)
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


def _paint(codes: _Codes, geo: _Geometry, labels: np.ndarray) -> np.ndarray:
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


def _place(codes: _Codes, seeds: np.ndarray) -> tuple[_Geometry, np.ndarray]:
    """Each image's first placement (attempt 0, 1, ...) that keeps every object >= MIN_VISIBLE,
    or its last attempt; returns the geometry and whether MIN_VISIBLE was met (k,)."""
    k = len(codes)
    geo = _geometry(codes, seeds, np.zeros(k, np.int64))
    ok = np.zeros(k, bool)
    todo = np.arange(k)
    for attempt in range(MAX_ATTEMPTS):
        sub = codes.take(todo)
        trial = _geometry(sub, seeds[todo], np.full(len(todo), attempt, np.int64)) if attempt else geo.take(todo)
        fp = _Footprints.of(sub, trial)
        good = fp.visible(sub, fp.labels(len(todo))).min(axis=1) >= MIN_VISIBLE
        geo = _geometry_set(geo, todo, trial)
        ok[todo[good]] = True
        todo = todo[~good]
        if not len(todo):
            break
    return geo, ok


def _geometry_set(geo: _Geometry, index: np.ndarray, part: _Geometry) -> _Geometry:
    out = {}
    for f in fields(_Geometry):
        a = getattr(geo, f.name).copy()
        a[index] = getattr(part, f.name)
        out[f.name] = a
    return _Geometry(**out)


def _encode(scenes: list[Scene]) -> _Codes:
    k = len(scenes)
    m = max([len(s.objects) for s in scenes] + [1])
    arrays = {f: np.zeros((k, m), np.int64) for f in ("shape", "colour", "texture", "size", "position")}
    vocab = {"shape": SHAPES, "colour": COLOURS, "texture": TEXTURES, "size": SIZES, "position": POSITIONS}
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            for f, words in vocab.items():
                arrays[f][i, j] = words.index(getattr(obj, f))
    return _Codes(
        n=np.array([len(s.objects) for s in scenes], np.int64),
        background=np.array([BACKGROUNDS.index(s.background) for s in scenes], np.int64),
        background_texture=np.array([TEXTURES.index(s.background_texture) for s in scenes], np.int64),
        **arrays,
    )


def _decode(codes: _Codes, i: int) -> Scene:
    objects = tuple(
        SceneObject(
            SHAPES[codes.shape[i, j]],
            COLOURS[codes.colour[i, j]],
            TEXTURES[codes.texture[i, j]],
            SIZES[codes.size[i, j]],
            POSITIONS[codes.position[i, j]],
        )
        for j in range(codes.n[i])
    )
    return Scene(objects, BACKGROUNDS[codes.background[i]], TEXTURES[codes.background_texture[i]])


def _captions(codes: _Codes) -> list[str]:
    # Same text as `caption(_decode(codes, i))` (tested), without building Scene objects for
    # candidates the sampler throws away.
    out = []
    for i in range(len(codes)):
        objects = " and ".join(
            f"a {SIZES[codes.size[i, j]]} {TEXTURES[codes.texture[i, j]]} {COLOURS[codes.colour[i, j]]} "
            f"{SHAPES[codes.shape[i, j]]} {POSITION_PHRASES[POSITIONS[codes.position[i, j]]]}"
            for j in range(codes.n[i])
        )
        out.append(
            f"{objects} on a {TEXTURES[codes.background_texture[i]]} {BACKGROUNDS[codes.background[i]]} background"
        )
    return out


@dataclass(frozen=True)
class RenderedScene:
    image: np.ndarray  # (64, 64, 3) uint8
    masks: np.ndarray  # (n_obj, 64, 64) bool: visible pixels of each object, in scene order
    background_mask: np.ndarray  # (64, 64) bool: pixels no object covers
    visible: np.ndarray  # (n_obj,) float: share of each object's on-canvas footprint visible
    layout: Layout  # what was drawn; `draw(scene, layout)` repeats it


def _rendered(codes: _Codes, geo: _Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (k, H, W, 3) uint8, labels (k, H, W) int8, visible (k, MAX))."""
    fp = _Footprints.of(codes, geo)
    labels = fp.labels(len(codes))
    return _paint(codes, geo, labels), labels, fp.visible(codes, labels)


def draw(scene: Scene, layout: Layout) -> RenderedScene:
    """Render `scene` with the given draws (e.g. another render's `layout`, edited)."""
    n = len(scene.objects)
    for f in _OBJECT_FIELDS:
        if getattr(layout, f).shape != (n,):
            raise ValueError(f"Layout field {f} has shape {getattr(layout, f).shape}; the scene has {n} objects")
    codes, geo = _encode([scene]), _Geometry.from_layouts([layout])
    images, labels, visible = _rendered(codes, geo)
    return RenderedScene(
        image=images[0],
        masks=labels[0][None] == np.arange(n, dtype=np.int8)[:, None, None],
        background_mask=labels[0] < 0,
        visible=visible[0, :n],
        layout=layout,
    )


def _check_seed(seed: int) -> None:
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"Seed must be in [0, 2**63), got {seed}")


def layout(scene: Scene, seed: int) -> Layout:
    """The draws of `seed` for `scene`: its first placement that keeps every object
    >= MIN_VISIBLE visible, tried MAX_ATTEMPTS times (else the last one)."""
    _check_seed(seed)
    geo, _ = _place(_encode([scene]), np.array([seed], np.int64))
    return geo.layout(0, len(scene.objects))


def render(scene: Scene, seed: int = 0) -> RenderedScene:
    """Draw one image of `scene`; the same (scene, seed) gives the same bytes. Masks are
    exact under the rules in the module docstring."""
    return draw(scene, layout(scene, seed))


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------

_N_OBJECT_WEIGHTS = np.array([0.4, 0.4, 0.2])  # 1, 2, 3 objects, as v1
SPLITS = ("train", "heldout")
_TO_UNIT = (np.arange(256, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)  # uint8 -> [-1, 1]


def _sample_codes(rng: np.random.Generator, k: int, n_objects: int | None) -> _Codes:
    if n_objects is None:
        n = 1 + rng.choice(MAX_OBJECTS, size=k, p=_N_OBJECT_WEIGHTS)
    elif 1 <= n_objects <= MAX_OBJECTS:
        n = np.full(k, n_objects, np.int64)
    else:
        raise ValueError(f"n_objects must be None or 1..{MAX_OBJECTS}, got {n_objects}")
    position = np.argsort(rng.random((k, len(POSITIONS))), axis=1)[:, :MAX_OBJECTS]  # distinct
    return _Codes(
        n=n,
        shape=rng.integers(len(SHAPES), size=(k, MAX_OBJECTS)),
        colour=rng.integers(len(COLOURS), size=(k, MAX_OBJECTS)),
        texture=rng.integers(len(TEXTURES), size=(k, MAX_OBJECTS)),
        size=rng.integers(len(SIZES), size=(k, MAX_OBJECTS)),
        position=position,
        background=rng.integers(len(BACKGROUNDS), size=k),
        background_texture=rng.integers(len(TEXTURES), size=k),
    )


def is_heldout(scene: Scene) -> bool:
    """Deterministic train/held-out split on the caption (crc32, stable across machines)."""
    return _is_heldout_caption(caption(scene))


def _is_heldout_caption(text: str) -> bool:
    return zlib.crc32(text.encode()) % HELDOUT_MODULUS == 0


def sample_scene(rng: np.random.Generator, n_objects: int | None = None, split: str | None = None) -> Scene:
    """Random attributes (1..3 objects, weights 0.4/0.4/0.2 unless `n_objects` is given), of
    one split if `split` is given. The seed of `render` draws the rest."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    while True:
        codes = _sample_codes(rng, 1, n_objects)
        if split is None or _is_heldout_caption(_captions(codes)[0]) == (split == "heldout"):
            return _decode(codes, 0)


@dataclass(frozen=True)
class SceneBatch:
    scenes: list[Scene]  # the attribute labels
    captions: list[str]
    seeds: list[int]  # render(scenes[i], seeds[i]) gives image i again
    images: torch.Tensor  # (n, 3, 64, 64) float32 in [-1, 1] (exactly uint8 / 127.5 - 1)
    masks: list[torch.Tensor]  # per image (n_obj, 64, 64) bool, in the scene's object order
    background_masks: torch.Tensor  # (n, 64, 64) bool

    def __len__(self) -> int:
        return len(self.scenes)


def sample_batch(
    n: int, seed: int, split: str = "train", n_objects: int | None = None, captions: list[str] | None = None
) -> SceneBatch:
    """`n` rendered images of one split; the same arguments give the same batch. With
    `captions`, renders those (n images cycling through them, one fresh seed each) instead
    of sampling attributes; `split` is then not checked."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"Batch size must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    want_heldout = split == "heldout"
    if captions is not None:
        if not captions:
            raise ValueError("captions must be a non-empty list")
        scenes = [parse_caption(captions[i % len(captions)]) for i in range(n)]
        codes = _encode(scenes)
        item_seeds = rng.integers(2**63, size=n, dtype=np.int64)
        geo, _ = _place(codes, item_seeds)
    else:
        # Candidates are drawn in chunks sized to the expected acceptance, then filtered by
        # split and visibility; the chunk size depends only on (n, split), so seeds reproduce.
        chunk = max(32, int(n * (1.2 * HELDOUT_MODULUS if want_heldout else 1.2)))
        kept_codes, kept_geo, kept_seeds, kept_captions = [], [], [], []
        total = 0
        while total < n:
            codes = _sample_codes(rng, chunk, n_objects)
            item_seeds = rng.integers(2**63, size=chunk, dtype=np.int64)
            texts = _captions(codes)
            keep = np.flatnonzero([_is_heldout_caption(t) == want_heldout for t in texts])
            codes, item_seeds = codes.take(keep), item_seeds[keep]
            geo, ok = _place(codes, item_seeds)
            good = np.flatnonzero(ok)[: n - total]
            kept_codes.append(codes.take(good))
            kept_geo.append(geo.take(good))
            kept_seeds.append(item_seeds[good])
            kept_captions += [texts[keep[i]] for i in good]
            total += len(good)
        if kept_codes:
            codes, geo = _Codes.concat(kept_codes), _Geometry.concat(kept_geo)
            item_seeds = np.concatenate(kept_seeds)
        else:  # n == 0
            codes = _sample_codes(rng, 0, n_objects)
            item_seeds = np.zeros(0, np.int64)
            geo = _geometry(codes, item_seeds, np.zeros(0, np.int64))
        scenes = [_decode(codes, i) for i in range(n)]
    pixels, labels, _ = _rendered(codes, geo)
    slots = np.arange(codes.shape.shape[1], dtype=np.int8)
    masks = labels[:, None] == slots[None, :, None, None]  # (n, MAX, 64, 64)
    import torch  # here only: checking prompts needs no torch

    return SceneBatch(
        scenes=scenes,
        captions=[caption(s) for s in scenes] if captions is not None else kept_captions,
        seeds=[int(s) for s in item_seeds],
        images=torch.from_numpy(np.ascontiguousarray(_TO_UNIT[pixels.transpose(0, 3, 1, 2)])),
        masks=[torch.from_numpy(masks[i, : codes.n[i]]) for i in range(n)],
        background_masks=torch.from_numpy(labels < 0),
    )
