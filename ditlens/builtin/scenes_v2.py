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

This module is the world's grammar and its interface; its parts are in
`ditlens.builtin.worlds`: `v2_spec` (words, colours, the ranges a seed draws from),
`v2_layout` (what a seed draws), `v2_shapes` (footprints, masks) and `v2_paint` (colour
bands, textures, shading).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import scenes
from .worlds.batches import (
    HELDOUT_MODULUS,
    SPLITS,
    batch_tensors,
    caption_split,
    check_batch,
    check_split,
    draw_counts,
    draw_positions,
    is_heldout_caption,
    object_masks,
)
from .worlds.grammar import (
    CaptionError,
    CaptionReader,
    build_vocabulary,
    check_choice,
    check_fields,
    check_objects,
    join_caption,
)
from .worlds.v2_layout import OBJECT_FIELDS, Geometry, Layout, geometry
from .worlds.v2_paint import band_gaps, colour_band, paint
from .worlds.v2_shapes import SHAPE_EXTENT, WINDOW, Footprints
from .worlds.v2_spec import (
    BACKGROUND_BANDS,
    BACKGROUND_PERIOD,
    BACKGROUNDS,
    CELL_CENTRES,
    CELL_JITTER,
    COLOUR_RGB,
    COLOURS,
    DARK_SHARE,
    IMAGE_SIZE,
    MAX_ATTEMPTS,
    MAX_OBJECTS,
    MAX_ROTATION,
    MIN_BAND_GAP,
    MIN_VISIBLE,
    OBJECT_PERIOD,
    POSITION_PHRASES,
    POSITIONS,
    RADIUS_PX,
    SHADE_RANGE,
    SHAPES,
    SIZES,
    TEXTURES,
    WORLD,
    Codes,
)

if TYPE_CHECKING:
    import torch

# The world's interface: its words, the ranges a seed draws from and its colour bands
# (defined in worlds.v2_spec and worlds.v2_paint), then its grammar, renderer and sampler.
__all__ = (
    ["WORLD", "SHAPES", "COLOURS", "BACKGROUNDS", "TEXTURES", "SIZES", "POSITIONS", "POSITION_PHRASES"]
    + ["IMAGE_SIZE", "MAX_OBJECTS", "MIN_VISIBLE", "HELDOUT_MODULUS", "MAX_ATTEMPTS", "SPLITS"]
    + ["COLOUR_RGB", "DARK_SHARE", "BACKGROUND_BANDS", "MIN_BAND_GAP", "colour_band", "band_gaps"]
    + ["RADIUS_PX", "CELL_CENTRES", "CELL_JITTER", "MAX_ROTATION", "OBJECT_PERIOD", "BACKGROUND_PERIOD"]
    + ["SHADE_RANGE", "SHAPE_EXTENT", "WINDOW"]
    + ["GRAMMAR", "CaptionError", "UnknownWordError", "SceneObject", "Scene", "MAX_CAPTION_WORDS"]
    + ["caption", "vocabulary", "check_words", "parse_caption"]
    + ["RenderedScene", "Layout", "draw", "layout", "render"]
    + ["is_heldout", "sample_scene", "SceneBatch", "sample_batch"]
)

GRAMMAR = (
    "caption := object (' and ' object)* ' on a ' texture ' ' background ' background'; "
    "object := 'a ' size ' ' texture ' ' colour ' ' shape ' ' position; "
    f"size := {' | '.join(SIZES)}; texture := {' | '.join(TEXTURES)}; "
    f"colour := {' | '.join(COLOURS)}; shape := {' | '.join(SHAPES)}; "
    f"background := {' | '.join(BACKGROUNDS)}; "
    f"position := {' | '.join(repr(p) for p in POSITION_PHRASES.values())}; "
    f"1 to {MAX_OBJECTS} objects, one per position"
)


class UnknownWordError(scenes.UnknownWordError):
    """A prompt word outside world v2's vocabulary. A subclass of v1's UnknownWordError, so
    `except scenes.UnknownWordError` catches both worlds' errors; the message lists v2's words."""

    known = build_vocabulary(SHAPES + COLOURS + BACKGROUNDS + TEXTURES + SIZES, POSITION_PHRASES.values())
    model = f"The built-in model (world {WORLD})"


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    texture: str
    size: str
    position: str

    def __post_init__(self) -> None:
        check_fields(
            self, {"shape": SHAPES, "colour": COLOURS, "texture": TEXTURES, "size": SIZES, "position": POSITIONS}
        )


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # in drawing order: later objects lie on top
    background: str  # a background colour word
    background_texture: str = "plain"

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        check_objects(self.objects, SceneObject, "scenes_v2.SceneObject")
        check_choice("background colour", self.background, BACKGROUNDS)
        check_choice("background texture", self.background_texture, TEXTURES)


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------

# Words of the longest caption: MAX_OBJECTS objects of 'a size texture colour shape' + the
# longest position phrase, the 'and's, then 'on a texture background-colour background'.
MAX_CAPTION_WORDS = MAX_OBJECTS * (5 + max(len(p.split()) for p in POSITION_PHRASES.values())) + (MAX_OBJECTS - 1) + 5
# What an object's words are, in caption order: (field, allowed words, what the reader expects)
_OBJECT_WORDS = (
    ("size", SIZES, "a size"),
    ("texture", TEXTURES, "a texture"),
    ("colour", COLOURS, "an object colour"),
    ("shape", SHAPES, "a shape"),
)


def _object_words(size: str, texture: str, colour: str, shape: str, position: str) -> tuple[str, ...]:
    return size, texture, colour, shape, POSITION_PHRASES[position]


def caption(scene: Scene) -> str:
    if not 1 <= len(scene.objects) <= MAX_OBJECTS:
        raise CaptionError(f"The grammar takes 1 to {MAX_OBJECTS} objects; {scene} has {len(scene.objects)}")
    objects = (_object_words(o.size, o.texture, o.colour, o.shape, o.position) for o in scene.objects)
    return join_caption(objects, [scene.background_texture, scene.background])


# Every word the caption grammar can produce, sorted; and the check that raises
# UnknownWordError (this world's) for the first word of a text outside them.
vocabulary = UnknownWordError.vocabulary
check_words = UnknownWordError.check_words


def parse_caption(text: str) -> Scene:
    """Inverse of `caption` (runs of whitespace are accepted as one space)."""
    check_words(text)
    reader = CaptionReader(text, GRAMMAR)
    objects = [SceneObject(**words) for words in reader.objects(_OBJECT_WORDS, POSITION_PHRASES, MAX_OBJECTS)]
    reader.take(("a",), "'a'")
    background_texture = reader.take(TEXTURES, "a background texture")
    background = reader.take(BACKGROUNDS, "a background colour")
    reader.take(("background",), "'background'")
    reader.end()
    try:
        return Scene(tuple(objects), background, background_texture)
    except ValueError as err:  # two objects at one position
        raise CaptionError(f"Prompt {text!r}: {err}") from err


# ---------------------------------------------------------------------------------------
# Scenes as codes
# ---------------------------------------------------------------------------------------

_WORDS = {"shape": SHAPES, "colour": COLOURS, "texture": TEXTURES, "size": SIZES, "position": POSITIONS}


def _encode(scene_list: list[Scene]) -> Codes:
    k = len(scene_list)
    m = max([len(s.objects) for s in scene_list] + [1])
    arrays = {f: np.zeros((k, m), np.int64) for f in _WORDS}
    for i, scene in enumerate(scene_list):
        for j, obj in enumerate(scene.objects):
            for f, words in _WORDS.items():
                arrays[f][i, j] = words.index(getattr(obj, f))
    return Codes(
        n=np.array([len(s.objects) for s in scene_list], np.int64),
        background=np.array([BACKGROUNDS.index(s.background) for s in scene_list], np.int64),
        background_texture=np.array([TEXTURES.index(s.background_texture) for s in scene_list], np.int64),
        **arrays,
    )


def _object_words_at(codes: Codes, i: int, j: int) -> tuple[str, str, str, str, str]:
    """(shape, colour, texture, size, position) of slot j of image i: SceneObject's field order."""
    return (
        SHAPES[codes.shape[i, j]],
        COLOURS[codes.colour[i, j]],
        TEXTURES[codes.texture[i, j]],
        SIZES[codes.size[i, j]],
        POSITIONS[codes.position[i, j]],
    )


def _decode(codes: Codes, i: int) -> Scene:
    objects = tuple(SceneObject(*_object_words_at(codes, i, j)) for j in range(codes.n[i]))
    return Scene(objects, BACKGROUNDS[codes.background[i]], TEXTURES[codes.background_texture[i]])


def _captions(codes: Codes) -> list[str]:
    # Same text as `caption(_decode(codes, i))` (tested), without building Scene objects for
    # candidates the sampler throws away.
    out = []
    for i in range(len(codes)):
        objects = []
        for j in range(codes.n[i]):
            shape, colour, texture, size, position = _object_words_at(codes, i, j)
            objects.append(_object_words(size, texture, colour, shape, position))
        background = [TEXTURES[codes.background_texture[i]], BACKGROUNDS[codes.background[i]]]
        out.append(join_caption(objects, background))
    return out


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _place(codes: Codes, seeds: np.ndarray) -> tuple[Geometry, np.ndarray]:
    """Each image's first placement (attempt 0, 1, ...) that keeps every object >= MIN_VISIBLE,
    or its last attempt; returns the geometry and whether MIN_VISIBLE was met (k,)."""
    k = len(codes)
    geo = geometry(codes, seeds, np.zeros(k, np.int64))
    ok = np.zeros(k, bool)
    todo = np.arange(k)
    for attempt in range(MAX_ATTEMPTS):
        sub = codes.take(todo)
        trial = geometry(sub, seeds[todo], np.full(len(todo), attempt, np.int64)) if attempt else geo.take(todo)
        fp = Footprints.of(sub, trial)
        good = fp.visible(sub, fp.labels(len(todo))).min(axis=1) >= MIN_VISIBLE
        geo = geo.with_rows(todo, trial)
        ok[todo[good]] = True
        todo = todo[~good]
        if not len(todo):
            break
    return geo, ok


@dataclass(frozen=True)
class RenderedScene:
    image: np.ndarray  # (64, 64, 3) uint8
    masks: np.ndarray  # (n_obj, 64, 64) bool: visible pixels of each object, in scene order
    background_mask: np.ndarray  # (64, 64) bool: pixels no object covers
    visible: np.ndarray  # (n_obj,) float: share of each object's on-canvas footprint visible
    layout: Layout  # what was drawn; `draw(scene, layout)` repeats it


def _rendered(codes: Codes, geo: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (k, H, W, 3) uint8, labels (k, H, W) int8, visible (k, MAX))."""
    fp = Footprints.of(codes, geo)
    labels = fp.labels(len(codes))
    return paint(codes, geo, labels), labels, fp.visible(codes, labels)


def draw(scene: Scene, layout: Layout) -> RenderedScene:
    """Render `scene` with the given draws (e.g. another render's `layout`, edited)."""
    n = len(scene.objects)
    for f in OBJECT_FIELDS:
        if getattr(layout, f).shape != (n,):
            raise ValueError(f"Layout field {f} has shape {getattr(layout, f).shape}; the scene has {n} objects")
    codes, geo = _encode([scene]), Geometry.from_layouts([layout])
    images, labels, visible = _rendered(codes, geo)
    return RenderedScene(
        image=images[0],
        masks=object_masks(labels[0], n),
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


def _sample_codes(rng: np.random.Generator, k: int, n_objects: int | None) -> Codes:
    n = draw_counts(rng, k, n_objects, MAX_OBJECTS)
    position = draw_positions(rng, k, len(POSITIONS), MAX_OBJECTS)
    return Codes(
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
    """Deterministic train/held-out split on the caption (crc32, stable across machines, as v1)."""
    return is_heldout_caption(caption(scene))


def sample_scene(rng: np.random.Generator, n_objects: int | None = None, split: str | None = None) -> Scene:
    """Random attributes (1..3 objects, weights 0.4/0.4/0.2 unless `n_objects` is given), of
    one split if `split` is given. The seed of `render` draws the rest."""
    if split is not None:
        check_split(split)
    while True:
        codes = _sample_codes(rng, 1, n_objects)
        if split is None or is_heldout_caption(_captions(codes)[0]) == (split == "heldout"):
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


def _given_captions(rng: np.random.Generator, n: int, captions: list[str]) -> tuple[Codes, Geometry, np.ndarray]:
    """`n` images cycling through `captions`, one fresh seed each."""
    if not captions:
        raise ValueError("captions must be a non-empty list")
    codes = _encode([parse_caption(captions[i % len(captions)]) for i in range(n)])
    seeds = rng.integers(2**63, size=n, dtype=np.int64)
    geo, _ = _place(codes, seeds)
    return codes, geo, seeds


def _sampled(
    rng: np.random.Generator, n: int, split: str, n_objects: int | None
) -> tuple[Codes, Geometry, np.ndarray, list[str]]:
    """`n` images of sampled attributes of `split`, each with a seed whose placement keeps
    every object >= MIN_VISIBLE visible."""
    # Candidates are drawn in chunks sized to the expected acceptance, then filtered by
    # split and visibility; the chunk size depends only on (n, split), so seeds reproduce.
    chunk = max(32, int(n * (1.2 * HELDOUT_MODULUS if split == "heldout" else 1.2)))
    kept_codes, kept_geo, kept_seeds, kept_captions = [], [], [], []
    total = 0
    while total < n:
        codes = _sample_codes(rng, chunk, n_objects)
        seeds = rng.integers(2**63, size=chunk, dtype=np.int64)
        texts = _captions(codes)
        keep = caption_split(texts, split)
        codes, seeds = codes.take(keep), seeds[keep]
        geo, ok = _place(codes, seeds)
        good = np.flatnonzero(ok)[: n - total]
        kept_codes.append(codes.take(good))
        kept_geo.append(geo.take(good))
        kept_seeds.append(seeds[good])
        kept_captions += [texts[keep[i]] for i in good]
        total += len(good)
    if not kept_codes:  # n == 0
        codes = _sample_codes(rng, 0, n_objects)
        seeds = np.zeros(0, np.int64)
        return codes, geometry(codes, seeds, np.zeros(0, np.int64)), seeds, []
    return Codes.concat(kept_codes), Geometry.concat(kept_geo), np.concatenate(kept_seeds), kept_captions


def sample_batch(
    n: int, seed: int, split: str = "train", n_objects: int | None = None, captions: list[str] | None = None
) -> SceneBatch:
    """`n` rendered images of one split; the same arguments give the same batch. With
    `captions`, renders those (n images cycling through them, one fresh seed each) instead
    of sampling attributes; `split` is then not checked."""
    check_batch(n, split)
    rng = np.random.default_rng(seed)
    if captions is not None:
        codes, geo, seeds = _given_captions(rng, n, captions)
    else:
        codes, geo, seeds, texts = _sampled(rng, n, split, n_objects)
    scene_list = [_decode(codes, i) for i in range(n)]
    pixels, labels, _ = _rendered(codes, geo)
    images, masks, background_masks = batch_tensors(pixels, labels, codes.n)
    return SceneBatch(
        scenes=scene_list,
        captions=[caption(s) for s in scene_list] if captions is not None else texts,
        seeds=[int(s) for s in seeds],
        images=images,
        masks=masks,
        background_masks=background_masks,
    )
