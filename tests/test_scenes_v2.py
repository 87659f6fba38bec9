import itertools

import numpy as np
import pytest
import torch

from ditlens.builtin import scenes, scenes_v2
from ditlens.builtin.scenes_v2 import (
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    CaptionError,
    Layout,
    Scene,
    SceneObject,
    UnknownWordError,
    caption,
    check_words,
    colour_band,
    draw,
    parse_caption,
    render,
    sample_batch,
    vocabulary,
)
from ditlens.builtin.worlds.v2_layout import BACKGROUND_FIELDS, OBJECT_FIELDS
from ditlens.builtin.worlds.v2_shapes import in_shape

EXAMPLE = "a large striped red star at the top left on a checked navy background"


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return images.add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def batch() -> scenes_v2.SceneBatch:
    return sample_batch(96, seed=0)


@pytest.fixture(scope="module")
def crowded() -> scenes_v2.SceneBatch:
    """Three objects per image: the most occlusion."""
    return sample_batch(48, seed=1, n_objects=3)


def _solo(layout: Layout, j: int) -> Layout:
    """The layout of object j alone (background draws kept)."""
    return Layout(
        **{f: getattr(layout, f)[j : j + 1] for f in OBJECT_FIELDS},
        **{f: getattr(layout, f) for f in BACKGROUND_FIELDS},
        attempt=layout.attempt,
    )


def _empty(layout: Layout) -> Layout:
    return Layout(
        **{f: getattr(layout, f)[:0] for f in OBJECT_FIELDS}, **{f: getattr(layout, f) for f in BACKGROUND_FIELDS}
    )


def _full_canvas_footprint(obj: SceneObject, layout: Layout, j: int) -> np.ndarray:
    """The object's shape test on every pixel centre of the canvas (no window)."""
    c = np.arange(IMAGE_SIZE) + 0.5
    py, px = np.meshgrid(c, c, indexing="ij")
    dx, dy = px - layout.x[j], py - layout.y[j]
    cos, sin, r = np.cos(layout.angle[j]), np.sin(layout.angle[j]), layout.radius[j]
    u, v = (dx * cos + dy * sin) / r, (dy * cos - dx * sin) / r
    return in_shape(scenes_v2.SHAPES.index(obj.shape), u, v)


# ---------------------------------------------------------------------------------------
# Determinism and variety
# ---------------------------------------------------------------------------------------


def test_render_is_deterministic_from_seed():
    scene = parse_caption(EXAMPLE)
    a, b = render(scene, seed=7), render(scene, seed=7)
    assert a.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and a.image.dtype == np.uint8
    assert a.image.tobytes() == b.image.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    x, y = sample_batch(16, seed=3), sample_batch(16, seed=3)
    assert x.captions == y.captions and x.seeds == y.seeds
    assert x.images.numpy().tobytes() == y.images.numpy().tobytes()
    assert sample_batch(16, seed=4).captions != x.captions


def test_batch_items_are_renders_of_their_seed(crowded):
    pixels = _to_uint8(crowded.images)
    for i in range(0, len(crowded), 5):
        r = render(crowded.scenes[i], crowded.seeds[i])
        assert r.image.tobytes() == pixels[i].tobytes()
        assert np.array_equal(r.masks, crowded.masks[i].numpy())
        assert np.array_equal(r.background_mask, crowded.background_masks[i].numpy())
        assert (r.visible >= scenes_v2.MIN_VISIBLE).all()


def test_seeds_vary_the_image_not_the_attributes():
    scene = parse_caption(
        "a medium mottled blue heart in the center and a small dotted orange ring "
        "at the bottom right on a striped gray background"
    )
    images = [render(scene, seed).image for seed in range(6)]
    assert len({im.tobytes() for im in images}) == 6
    many = sample_batch(12, seed=0, captions=[caption(scene)])
    assert all(s == scene for s in many.scenes) and set(many.captions) == {caption(scene)}
    assert len({im.numpy().tobytes() for im in many.images}) == 12
    # ... and the seed moves the exact geometry inside the caption's ranges
    layouts = [render(scene, seed).layout for seed in range(6)]
    assert len({float(lay.x[0]) for lay in layouts}) == 6
    lo, hi = scenes_v2.RADIUS_PX["medium"]
    assert all(lo <= lay.radius[0] <= hi for lay in layouts)


# ---------------------------------------------------------------------------------------
# Exact masks
# ---------------------------------------------------------------------------------------


def test_masks_match_renders_object_by_object(crowded):
    """Each object drawn alone, with the same draws, paints exactly the pixels of its mask in
    the full image; masks = footprint minus the footprints of later objects."""
    pixels = _to_uint8(crowded.images)
    occluded = 0
    for i, (scene, seed) in enumerate(zip(crowded.scenes, crowded.seeds)):
        full = render(scene, seed)
        lay = full.layout
        footprints = []
        for j, obj in enumerate(scene.objects):
            alone = draw(Scene((obj,), scene.background, scene.background_texture), _solo(lay, j))
            footprint = alone.masks[0]
            assert np.array_equal(footprint, _full_canvas_footprint(obj, lay, j))  # the window held it
            footprints.append((footprint, alone.image))
        for j, (footprint, alone_image) in enumerate(footprints):
            above = np.zeros_like(footprint)
            for later, _ in footprints[j + 1 :]:
                above |= later
            expected = footprint & ~above
            occluded += int((footprint & above).any())
            assert np.array_equal(full.masks[j], expected), (i, j)
            assert np.array_equal(full.masks[j], crowded.masks[i][j].numpy())
            assert (pixels[i][expected] == alone_image[expected]).all(), (i, j)
        empty = draw(Scene((), scene.background, scene.background_texture), _empty(lay))
        bg = full.background_mask
        assert np.array_equal(bg, ~np.any([f for f, _ in footprints], axis=0))
        assert (pixels[i][bg] == empty.image[bg]).all()
        assert (full.masks.sum(0) + bg == 1).all()  # every pixel: one object or background
    assert occluded >= 5  # the test saw real occlusion


def test_footprint_window_holds_every_shape():
    lo, hi = scenes_v2.RADIUS_PX["large"]
    for shape in scenes_v2.SHAPES:
        for x, y, angle in itertools.product((3.0, 31.6, 60.9), (2.2, 33.0, 61.5), (-0.52, 0.0, 0.31, 0.52)):
            obj = SceneObject(shape, "red", "plain", "large", "center")
            lay = Layout(
                x=[x],
                y=[y],
                radius=[hi],
                angle=[angle],
                period=[5.0],
                texture_angle=[0.0],
                phase_x=[0.0],
                phase_y=[0.0],
                key=[1],
                light_angle=[0.0],
                shade=[0.2],
                background_period=8.0,
                background_angle=0.0,
                background_phase_x=0.0,
                background_phase_y=0.0,
                background_key=2,
            )
            got = draw(Scene((obj,), "gray"), lay).masks[0]
            assert np.array_equal(got, _full_canvas_footprint(obj, lay, 0)), (shape, x, y, angle)


def _nearest_band(pixels: np.ndarray) -> np.ndarray:
    """(P, 3) uint8 -> index into COLOURS + BACKGROUNDS of the nearest colour band."""
    words = COLOURS + BACKGROUNDS
    p = pixels.astype(np.float64)
    dists = []
    for word in words:
        dark, light = colour_band(word)
        d = light - dark
        t = np.clip(((p - dark) @ d) / (d @ d), 0, 1)
        dists.append(np.linalg.norm(p - (dark + t[:, None] * d), axis=1))
    return np.argmin(dists, axis=0)


def test_every_pixel_reads_back_as_its_colour_word(batch):
    """Texture and shading stay inside the colour's band, and bands are far apart."""
    pixels = _to_uint8(batch.images)
    words = COLOURS + BACKGROUNDS
    for i, scene in enumerate(batch.scenes):
        truth = np.full((IMAGE_SIZE, IMAGE_SIZE), words.index(scene.background))
        for obj, mask in zip(scene.objects, batch.masks[i].numpy()):
            truth[mask] = words.index(obj.colour)
        assert (_nearest_band(pixels[i].reshape(-1, 3)) == truth.reshape(-1)).all(), i


def test_backgrounds_far_from_object_colours():
    gaps = scenes_v2.band_gaps()
    assert min(gaps.values()) >= scenes_v2.MIN_BAND_GAP
    for bg, obj in itertools.product(BACKGROUNDS, COLOURS):
        gap = gaps.get((obj, bg), gaps.get((bg, obj)))
        assert gap >= 50, (bg, obj, gap)


def test_textures_are_visible(batch):
    """A textured object spans much more of its band than a plain one (which only shades)."""
    spread = {t: [] for t in scenes_v2.TEXTURES}
    pixels = _to_uint8(batch.images)
    for i, scene in enumerate(batch.scenes):
        for obj, mask in zip(scene.objects, batch.masks[i].numpy()):
            if mask.sum() >= 30:
                brightness = pixels[i][mask].astype(float).sum(1)
                spread[obj.texture].append(np.percentile(brightness, 95) - np.percentile(brightness, 5))
    plain = np.median(spread.pop("plain"))
    for texture, values in spread.items():
        assert np.median(values) > 1.3 * plain, (texture, np.median(values), plain)


# ---------------------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------------------


def test_caption_round_trip(batch):
    texts = sample_batch(400, seed=5).captions + batch.captions
    for text in texts:
        scene = parse_caption(text)
        assert caption(scene) == text
        assert text == text.lower() and "  " not in text
        check_words(text)
    for scene, text in zip(batch.scenes, batch.captions):
        assert caption(scene) == text and parse_caption(text) == scene
    used = {w for t in texts for w in t.split()}
    assert used == set(vocabulary())  # the sample reaches every word, and no other


def test_grammar_example_and_longest_caption():
    scene = parse_caption(EXAMPLE)
    assert scene == Scene((SceneObject("star", "red", "striped", "large", "top left"),), "navy", "checked")
    assert caption(scene) == EXAMPLE
    corners = ("top left", "top right", "bottom right")
    longest = Scene(
        tuple(SceneObject("heart", "magenta", "gradient", "medium", p) for p in corners), "beige", "mottled"
    )
    assert len(caption(longest).split()) == scenes_v2.MAX_CAPTION_WORDS
    assert parse_caption(caption(longest)) == longest


def test_unknown_word_error_lists_the_v2_vocabulary():
    """(What both worlds' errors say is tested in test_scenes.py.)"""
    with pytest.raises(UnknownWordError) as info:
        parse_caption("a large striped red dog at the top left on a checked navy background")
    assert ", ".join(vocabulary()) in str(info.value) and ", ".join(scenes.vocabulary()) not in str(info.value)
    with pytest.raises(UnknownWordError, match="lowercase"):
        check_words("a large striped Red star")
    # v1 grammar words that v2 dropped are unknown here
    with pytest.raises(UnknownWordError, match="'olive'"):
        check_words("on a plain olive background")
    assert issubclass(CaptionError, ValueError) and CaptionError is scenes.CaptionError


def test_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="'olive'"):
        Scene((SceneObject("circle", "red", "plain", "small", "left"),), "olive")
    with pytest.raises(ValueError, match="'wavy'"):
        SceneObject("circle", "red", "wavy", "small", "left")
    with pytest.raises(ValueError, match="n_objects"):
        sample_batch(4, seed=0, n_objects=4)
    with pytest.raises(ValueError, match="'test'"):
        sample_batch(4, seed=0, split="test")
    with pytest.raises(ValueError, match="Seed"):
        render(parse_caption(EXAMPLE), seed=-1)


def test_grammar_takes_at_most_three_objects():
    four = " and ".join(
        f"a small plain red circle {p}" for p in ("on the left", "on the right", "at the top", "at the bottom")
    )
    with pytest.raises(CaptionError, match="more than 3"):
        parse_caption(four + " on a plain gray background")
