"""Procedural scenes of the built-in model: flat shapes on a plain or split background.

Every scene has an exact caption (a small grammar), exact per-object masks and exact
attribute labels, so prompt fidelity, segmentation and transport can be scored without any
human labels. Colours are flat (no anti-aliasing): a pixel is in an object's mask exactly
when that object is the top-most one drawn there (a pixel counts as drawn when the shape
covers >= 50% of it), and then it has exactly that object's colour; every other pixel has
the background colour of its image half.

    >>> scene = parse_caption("a large red circle on the left on a gray background")
    >>> rendered = render(scene)   # rendered.image (32, 32, 3) uint8, rendered.masks (1, 32, 32)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .worlds import grammar
from .worlds.batches import (
    HELDOUT_MODULUS,
    SPLITS,
    ArrayRows,
    batch_tensors,
    caption_split,
    check_batch,
    draw_counts,
    draw_positions,
    is_heldout_caption,
    object_masks,
)
from .worlds.grammar import CaptionError, CaptionReader, join_caption

if TYPE_CHECKING:
    import torch

# The world's interface: its words and sizes, its grammar, renderer and sampler.
__all__ = (
    ["SHAPES", "COLOURS", "BACKGROUNDS", "SIZES", "POSITIONS", "POSITION_PHRASES", "COLOUR_RGB", "SIZE_PX", "ANCHORS"]
    + ["IMAGE_SIZE", "MAX_OBJECTS", "MIN_VISIBLE", "HELDOUT_MODULUS", "SPLITS"]
    + ["GRAMMAR", "CaptionError", "UnknownWordError", "SceneObject", "Scene"]
    + ["caption", "vocabulary", "check_words", "parse_caption", "RenderedScene", "render"]
    + ["is_heldout", "sample_scene", "SceneBatch", "sample_batch"]
)

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")
BACKGROUNDS: tuple[str, ...] = ("gray", "black", "white", "brown", "navy", "olive")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")

IMAGE_SIZE = 32
MAX_OBJECTS = 3  # scenes the sampler draws; the grammar itself allows one object per position
MIN_VISIBLE = 0.6  # sampled scenes keep at least this share of every object's area visible

# Saturated object colours; dark or desaturated backgrounds, so no background is near an
# object colour (min RGB distance is checked in tests) and a generated image's background
# can be read back from its colour.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 90, 240),
    "yellow": (245, 225, 30),
    "purple": (150, 50, 210),
    "orange": (250, 140, 10),
    "cyan": (30, 225, 230),
    "pink": (250, 135, 200),
    "gray": (128, 128, 128),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "brown": (105, 60, 25),
    "navy": (15, 25, 95),
    "olive": (100, 110, 20),
}

SIZE_PX: dict[str, int] = {"small": 8, "large": 12}
# (x, y) of each position's anchor: a stencil of side s covers [anchor - s//2, anchor + s//2).
ANCHORS: dict[str, tuple[int, int]] = {
    "left": (7, 16),
    "right": (25, 16),
    "top": (16, 7),
    "bottom": (16, 25),
    "center": (16, 16),
}
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
_POSITION_BY_PHRASE: dict[tuple[str, ...], str] = {
    tuple(phrase.split()): position for position, phrase in POSITION_PHRASES.items()
}

GRAMMAR = (
    "caption := object (' and ' object)* ' on a ' background [' and ' background] ' background'; "
    "object := 'a ' size ' ' colour ' ' shape ' ' position; "
    f"size := {' | '.join(SIZES)}; colour := {' | '.join(COLOURS)}; "
    f"shape := {' | '.join(SHAPES)}; background := {' | '.join(BACKGROUNDS)}; "
    f"position := {' | '.join(repr(p) for p in POSITION_PHRASES.values())}; "
    "one object per position; two background colours must differ (left half, right half)"
)


class UnknownWordError(grammar.UnknownWordError):
    """A prompt word the built-in model (world v1) has never seen. World v2's error is a
    subclass, so `except scenes.UnknownWordError` catches both worlds' errors."""

    known = grammar.build_vocabulary(SHAPES + COLOURS + BACKGROUNDS + SIZES, POSITION_PHRASES.values())


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str

    def __post_init__(self) -> None:
        grammar.check_fields(self, {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS})


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # in drawing order: later objects lie on top
    background: tuple[str, ...]  # one colour, or two: (left half, right half)

    def __post_init__(self) -> None:
        # Lists are accepted for convenience but stored as tuples so scenes stay hashable.
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "background", tuple(self.background))
        grammar.check_objects(self.objects, SceneObject, "SceneObject")
        if len(self.background) not in (1, 2):
            raise ValueError(f"Background needs 1 or 2 colours, got {self.background}")
        for colour in self.background:
            grammar.check_choice("background colour", colour, BACKGROUNDS)
        if len(self.background) == 2 and self.background[0] == self.background[1]:
            raise ValueError(
                f"A split background needs two different colours, got {self.background}; "
                f"use ({self.background[0]!r},) for a plain one"
            )

    @property
    def background_left(self) -> str:
        return self.background[0]

    @property
    def background_right(self) -> str:
        return self.background[-1]


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------

# What an object's words are, in caption order: (field, allowed words, what the reader expects)
_OBJECT_WORDS = (("size", SIZES, "a size"), ("colour", COLOURS, "an object colour"), ("shape", SHAPES, "a shape"))


def _object_words(size: str, colour: str, shape: str, position: str) -> tuple[str, ...]:
    return size, colour, shape, POSITION_PHRASES[position]


def caption(scene: Scene) -> str:
    if not scene.objects:
        raise CaptionError(f"The grammar needs at least one object; {scene} has none")
    objects = (_object_words(o.size, o.colour, o.shape, o.position) for o in scene.objects)
    return join_caption(objects, [" and ".join(scene.background)])


# Every word the caption grammar can produce, sorted; and the check that raises
# UnknownWordError (this world's) for the first word of a text outside them.
vocabulary = UnknownWordError.vocabulary
check_words = UnknownWordError.check_words


def parse_caption(text: str) -> Scene:
    """Inverse of `caption` (runs of whitespace are accepted as one space)."""
    check_words(text)
    reader = CaptionReader(text, GRAMMAR)
    objects = [SceneObject(**words) for words in reader.objects(_OBJECT_WORDS, POSITION_PHRASES)]
    reader.take(("a",), "'a'")
    background = [reader.take(BACKGROUNDS, "a background colour")]
    if reader.take(("and", "background"), "'and' or 'background'") == "and":
        background.append(reader.take(BACKGROUNDS, "a second background colour"))
        reader.take(("background",), "'background'")
    reader.end()
    try:
        return Scene(tuple(objects), tuple(background))
    except ValueError as err:  # e.g. two objects at one position
        raise CaptionError(f"Prompt {text!r}: {err}") from err


# ---------------------------------------------------------------------------------------
# Rendering (vectorised over scenes: one batch of 256 is a few numpy ops, not 256 loops)
# ---------------------------------------------------------------------------------------


def _stencil(shape: str, side: int) -> np.ndarray:
    """Boolean (side, side) footprint: a pixel is in when >= 50% of it is covered (8x8
    supersampling); flat pixels keep the masks exact."""
    ss = 8
    t = (np.arange(side * ss) + 0.5) / (side * ss) * 2 - 1  # sub-pixel centres in [-1, 1]
    u, v = np.meshgrid(t, t, indexing="xy")  # u: x (right), v: y (down)
    if shape == "circle":
        inside = u**2 + v**2 <= 1
    elif shape == "square":
        inside = np.ones_like(u, dtype=bool)
    elif shape == "triangle":  # apex up, base on the bottom edge
        inside = np.abs(u) <= (v + 1) / 2
    elif shape == "diamond":
        inside = np.abs(u) + np.abs(v) <= 1
    elif shape == "cross":  # plus sign; arms 2 (small) or 4 (large) px: even, so symmetric
        arm = 2 * round(side / 6) / side
        inside = np.minimum(np.abs(u), np.abs(v)) <= arm
    else:
        raise ValueError(f"Unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
    coverage = inside.reshape(side, ss, side, ss).mean(axis=(1, 3))
    return coverage >= 0.5


def _footprints() -> np.ndarray:
    """(shapes, sizes, positions, 32, 32) bool: every object's full footprint on the canvas."""
    out = np.zeros((len(SHAPES), len(SIZES), len(POSITIONS), IMAGE_SIZE, IMAGE_SIZE), bool)
    for h, shape in enumerate(SHAPES):
        for s, size in enumerate(SIZES):
            side = SIZE_PX[size]
            stencil = _stencil(shape, side)
            for p, position in enumerate(POSITIONS):
                x, y = ANCHORS[position]
                y0, x0 = y - side // 2, x - side // 2
                out[h, s, p, y0 : y0 + side, x0 : x0 + side] = stencil
    return out


_FOOTPRINTS = _footprints()
_AREAS = _FOOTPRINTS.sum(axis=(-2, -1))  # (shapes, sizes, positions)
_PALETTE = np.array([COLOUR_RGB[c] for c in COLOURS + BACKGROUNDS], dtype=np.uint8)
_RIGHT_HALF = np.arange(IMAGE_SIZE) >= IMAGE_SIZE // 2  # split backgrounds: left | right


@dataclass(frozen=True)
class _Codes(ArrayRows):
    """Scenes as integer arrays, the form the vectorised sampler and renderer work on."""

    n: np.ndarray  # (k,) number of objects
    shape: np.ndarray  # (k, MAX) indices; slots >= n are ignored
    colour: np.ndarray  # (k, MAX)
    size: np.ndarray  # (k, MAX)
    position: np.ndarray  # (k, MAX)
    background: np.ndarray  # (k, 2) indices into BACKGROUNDS; equal = plain


def _encode(scenes: list[Scene]) -> _Codes:
    k = len(scenes)
    m = max([len(s.objects) for s in scenes] + [1])
    arrays = {f: np.zeros((k, m), np.int64) for f in ("shape", "colour", "size", "position")}
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            arrays["shape"][i, j] = SHAPES.index(obj.shape)
            arrays["colour"][i, j] = COLOURS.index(obj.colour)
            arrays["size"][i, j] = SIZES.index(obj.size)
            arrays["position"][i, j] = POSITIONS.index(obj.position)
    background = np.array(
        [[BACKGROUNDS.index(s.background_left), BACKGROUNDS.index(s.background_right)] for s in scenes],
        np.int64,
    ).reshape(k, 2)
    n = np.array([len(s.objects) for s in scenes], np.int64)
    return _Codes(n, background=background, **arrays)


def _decode(codes: _Codes, i: int) -> Scene:
    objects = tuple(
        SceneObject(
            shape=SHAPES[codes.shape[i, j]],
            colour=COLOURS[codes.colour[i, j]],
            size=SIZES[codes.size[i, j]],
            position=POSITIONS[codes.position[i, j]],
        )
        for j in range(codes.n[i])
    )
    left, right = codes.background[i]
    if left == right:
        return Scene(objects, (BACKGROUNDS[left],))
    return Scene(objects, (BACKGROUNDS[left], BACKGROUNDS[right]))


def _captions(codes: _Codes) -> list[str]:
    # Same text as `caption(_decode(codes, i))` (tested) without building Scene objects for
    # candidates the sampler throws away.
    out = []
    for i in range(len(codes)):
        objects = (
            _object_words(
                SIZES[codes.size[i, j]],
                COLOURS[codes.colour[i, j]],
                SHAPES[codes.shape[i, j]],
                POSITIONS[codes.position[i, j]],
            )
            for j in range(codes.n[i])
        )
        left, right = codes.background[i]
        colours = BACKGROUNDS[left] if left == right else f"{BACKGROUNDS[left]} and {BACKGROUNDS[right]}"
        out.append(join_caption(objects, [colours]))
    return out


def _labels(codes: _Codes) -> np.ndarray:
    """(k, 32, 32) int8: index of the top-most object per pixel (later objects on top),
    -1 where only background shows."""
    labels = np.full((len(codes), IMAGE_SIZE, IMAGE_SIZE), -1, np.int8)
    for j in range(codes.shape.shape[1]):
        drawn = _FOOTPRINTS[codes.shape[:, j], codes.size[:, j], codes.position[:, j]]
        drawn &= (codes.n > j)[:, None, None]
        labels[drawn] = j
    return labels


def _visible(codes: _Codes, labels: np.ndarray) -> np.ndarray:
    """(k, MAX) share of each object's area left visible; 1 for empty slots."""
    slots = np.arange(codes.shape.shape[1])
    counts = (labels[:, None] == slots[None, :, None, None]).sum(axis=(-2, -1))
    areas = _AREAS[codes.shape, codes.size, codes.position]
    return np.where(slots[None] < codes.n[:, None], counts / areas, 1.0)


def _images(codes: _Codes, labels: np.ndarray) -> np.ndarray:
    """(k, 32, 32, 3) uint8."""
    k = len(codes)
    # Per scene palette: [background left, background right, object 0, object 1, ...]
    palette = np.concatenate(
        [_PALETTE[len(COLOURS) + codes.background], _PALETTE[codes.colour]], axis=1
    )  # (k, 2 + MAX, 3)
    index = np.where(labels >= 0, labels.astype(np.int64) + 2, _RIGHT_HALF.astype(np.int64))
    return palette[np.arange(k)[:, None, None], index]


@dataclass(frozen=True)
class RenderedScene:
    image: np.ndarray  # (32, 32, 3) uint8
    masks: np.ndarray  # (n_obj, 32, 32) bool: visible pixels of each object, in scene order
    background_mask: np.ndarray  # (32, 32) bool: pixels no object covers
    visible: np.ndarray  # (n_obj,) float: share of each object's full area left visible


def render(scene: Scene) -> RenderedScene:
    """Draw one scene. Masks are exact: a pixel is in object i's mask iff object i is the
    top-most object there, and then it has exactly COLOUR_RGB[object.colour]."""
    codes = _encode([scene])
    labels = _labels(codes)
    n = len(scene.objects)
    return RenderedScene(
        image=_images(codes, labels)[0],
        masks=object_masks(labels[0], n),
        background_mask=labels[0] < 0,
        visible=_visible(codes, labels)[0, :n],
    )


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------

_SPLIT_BACKGROUND_P = 0.5


def _sample_codes(rng: np.random.Generator, k: int, n_objects: int | None) -> _Codes:
    n = draw_counts(rng, k, n_objects, MAX_OBJECTS)
    position = draw_positions(rng, k, len(POSITIONS), MAX_OBJECTS)
    shape = rng.integers(len(SHAPES), size=(k, MAX_OBJECTS))
    colour = rng.integers(len(COLOURS), size=(k, MAX_OBJECTS))
    size = rng.integers(len(SIZES), size=(k, MAX_OBJECTS))
    left = rng.integers(len(BACKGROUNDS), size=k)
    other = (left + 1 + rng.integers(len(BACKGROUNDS) - 1, size=k)) % len(BACKGROUNDS)
    right = np.where(rng.random(k) < _SPLIT_BACKGROUND_P, other, left)
    return _Codes(n, shape, colour, size, position, np.stack([left, right], axis=1))


def sample_scene(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    """A random scene (1..3 objects with weights 0.4/0.4/0.2 unless `n_objects` is given)
    whose objects each keep >= MIN_VISIBLE of their area visible."""
    while True:
        codes = _sample_codes(rng, 1, n_objects)
        if _visible(codes, _labels(codes)).min() >= MIN_VISIBLE:
            return _decode(codes, 0)


def is_heldout(scene: Scene) -> bool:
    """Deterministic train/held-out split on the caption (`worlds.batches.is_heldout_caption`)."""
    return is_heldout_caption(caption(scene))


@dataclass(frozen=True)
class SceneBatch:
    scenes: list[Scene]
    captions: list[str]
    images: torch.Tensor  # (n, 3, 32, 32) float32 in [-1, 1]
    masks: list[torch.Tensor]  # per scene (n_obj, 32, 32) bool, in the scene's object order
    background_masks: torch.Tensor  # (n, 32, 32) bool

    def __len__(self) -> int:
        return len(self.scenes)


def sample_batch(n: int, seed: int, split: str = "train", n_objects: int | None = None) -> SceneBatch:
    """`n` rendered scenes of one split; the same arguments give the same batch."""
    check_batch(n, split)
    rng = np.random.default_rng(seed)
    # Candidates are drawn in chunks sized to the expected acceptance rate, then filtered by
    # split and visibility; the chunk size depends only on (n, split), so seeds reproduce.
    chunk = max(32, int(n * (1.3 * HELDOUT_MODULUS if split == "heldout" else 1.4)))
    kept = [_sample_codes(rng, 0, n_objects)]  # empty, so n == 0 also works
    kept_captions: list[str] = []
    total = 0
    while total < n:
        codes = _sample_codes(rng, chunk, n_objects)
        texts = _captions(codes)
        in_split = caption_split(texts, split)
        codes, texts = codes.take(in_split), [texts[i] for i in in_split]
        ok = np.flatnonzero(_visible(codes, _labels(codes)).min(axis=1) >= MIN_VISIBLE)[: n - total]
        kept.append(codes.take(ok))
        kept_captions += [texts[i] for i in ok]
        total += len(ok)
    codes = _Codes.concat(kept)
    labels = _labels(codes)
    images, masks, background_masks = batch_tensors(_images(codes, labels), labels, codes.n)
    return SceneBatch([_decode(codes, i) for i in range(n)], kept_captions, images, masks, background_masks)
