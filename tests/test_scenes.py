import itertools

import numpy as np
import pytest
import torch

from ditlens.builtin import scenes, scenes_v2
from ditlens.builtin.scenes import (
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    CaptionError,
    Scene,
    SceneObject,
    caption,
    check_words,
    parse_caption,
    render,
    sample_batch,
    sample_scene,
    vocabulary,
)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return images.add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def batch() -> scenes.SceneBatch:
    return sample_batch(128, seed=0)


def test_masks_match_pixels(batch):
    pixels = _to_uint8(batch.images)
    for scene, image, masks, bg in zip(batch.scenes, pixels, batch.masks, batch.background_masks):
        assert masks.shape == (len(scene.objects), 32, 32)
        masks, bg = masks.numpy(), bg.numpy()
        # every pixel is exactly one of: background, object 0, object 1, ...
        assert (masks.sum(0) + bg == 1).all()
        for obj, mask in zip(scene.objects, masks):
            assert mask.any()
            assert (image[mask] == COLOUR_RGB[obj.colour]).all()
        left = np.zeros((32, 32), bool)
        left[:, :16] = True
        assert (image[bg & left] == COLOUR_RGB[scene.background_left]).all()
        assert (image[bg & ~left] == COLOUR_RGB[scene.background_right]).all()


def test_batch_matches_render(batch):
    pixels = _to_uint8(batch.images)
    for i in range(0, len(batch), 7):
        rendered = render(batch.scenes[i])
        assert (rendered.image == pixels[i]).all()
        assert (rendered.masks == batch.masks[i].numpy()).all()
        assert (rendered.background_mask == batch.background_masks[i].numpy()).all()
        assert (rendered.visible >= scenes.MIN_VISIBLE).all()


def test_labels_hand_made_scene():
    scene = Scene(
        (
            SceneObject("square", "red", "large", "left"),
            SceneObject("circle", "blue", "small", "right"),
        ),
        ("white", "navy"),
    )
    r = render(scene)
    assert r.image.shape == (32, 32, 3) and r.image.dtype == np.uint8
    assert r.masks.shape == (2, 32, 32) and r.masks.dtype == bool
    assert r.masks[0].sum() == 144  # large square, fully visible
    ys, xs = np.nonzero(r.masks[0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (1, 12, 10, 21)
    assert r.masks[1].sum() == 52  # the small circle's stencil
    assert tuple(r.image[16, 25]) == COLOUR_RGB["blue"]
    assert tuple(r.image[0, 0]) == COLOUR_RGB["white"]
    assert tuple(r.image[0, 31]) == COLOUR_RGB["navy"]


def test_occlusion_keeps_later_object_on_top():
    under = SceneObject("square", "red", "large", "left")
    over = SceneObject("square", "green", "large", "center")
    r = render(Scene((under, over), ("gray",)))
    assert r.visible[0] == pytest.approx(9 / 12)  # the center square hides 3 of 12 columns
    assert r.visible[1] == 1.0
    assert not (r.masks[0] & r.masks[1]).any()


def test_sampled_scenes_keep_objects_visible():
    rng = np.random.default_rng(3)
    for _ in range(200):
        scene = sample_scene(rng)
        assert 1 <= len(scene.objects) <= scenes.MAX_OBJECTS
        assert render(scene).visible.min() >= scenes.MIN_VISIBLE


def test_caption_round_trip(batch):
    for scene, text in zip(batch.scenes, batch.captions):
        assert caption(scene) == text
        assert parse_caption(text) == scene
        assert text == text.lower() and "  " not in text
        check_words(text)


def test_caption_grammar_example():
    scene = Scene(
        (
            SceneObject("circle", "red", "large", "left"),
            SceneObject("square", "blue", "small", "bottom"),
        ),
        ("gray",),
    )
    text = "a large red circle on the left and a small blue square at the bottom on a gray background"
    assert caption(scene) == text
    split = Scene(scene.objects, ("gray", "navy"))
    assert caption(split).endswith("on a gray and navy background")
    assert parse_caption(caption(split)) == split


def test_determinism_from_seed():
    a, b, c = sample_batch(32, seed=5), sample_batch(32, seed=5), sample_batch(32, seed=6)
    assert a.captions == b.captions and torch.equal(a.images, b.images)
    assert a.captions != c.captions


@pytest.mark.parametrize(
    "world, n_train, n_held, seed", [(scenes, 256, 64, 1), (scenes_v2, 200, 40, 2)], ids=["v1", "v2"]
)
def test_heldout_split_disjoint(world, n_train, n_held, seed):
    train = world.sample_batch(n_train, seed=seed, split="train")
    held = world.sample_batch(n_held, seed=seed, split="heldout")
    assert not any(world.is_heldout(s) for s in train.scenes)
    assert all(world.is_heldout(s) for s in held.scenes)
    assert not set(train.captions) & set(held.captions)


def test_n_objects_and_batch_validation():
    assert all(len(s.objects) == 3 for s in sample_batch(16, seed=0, n_objects=3).scenes)
    with pytest.raises(ValueError, match="n_objects"):
        sample_batch(4, seed=0, n_objects=4)
    with pytest.raises(ValueError, match="'test'"):
        sample_batch(4, seed=0, split="test")


@pytest.mark.parametrize(
    "world, prompt, knows",
    [
        (scenes, "a large red dog on the left on a gray background", "The built-in model knows: "),
        (
            scenes_v2,
            "a large striped red dog at the top left on a checked navy background",
            "The built-in model (world v2) knows: ",
        ),
    ],
    ids=["v1", "v2"],
)
def test_unknown_word_error_names_word_and_vocabulary(world, prompt, knows):
    with pytest.raises(world.UnknownWordError) as info:
        world.parse_caption(prompt)
    message = str(info.value)
    assert "'dog'" in message and prompt in message
    assert knows + ", ".join(world.vocabulary()) in message
    assert isinstance(info.value, scenes.UnknownWordError) and isinstance(info.value, ValueError)
    with pytest.raises(world.UnknownWordError, match="'dog'"):
        world.check_words(prompt)


_V1_CASES = [
    ("a large red circle at the left on a gray background", "'at the left'"),
    ("a red circle on the left on a gray background", "got 'red'"),
    ("a large red circle on the left", "end of the prompt"),
    ("a large red circle on the left and a small red circle on the left on a gray background", "distinct positions"),
    ("a large red circle on the left on a gray and gray background", "different colours"),
]
_V2_CASES = [
    ("a large plain red circle on the top left on a plain gray background", "'on the top left'"),
    ("a large red circle on the left on a plain gray background", "got 'red'"),
    ("a large plain red circle on the left on a gray background", "got 'gray'"),
    ("a large plain red circle on the left", "end of the prompt"),
    (
        "a small plain red circle on the left and a large plain blue star on the left on a plain gray background",
        "distinct positions",
    ),
]


@pytest.mark.parametrize(
    "world, prompt, fragment, error",
    [(scenes, p, f, CaptionError) for p, f in _V1_CASES]
    + [(scenes_v2, p, f, CaptionError) for p, f in _V2_CASES]
    + [
        (
            scenes_v2,
            "a small plain red circle in the center on a plain gray background extra",
            "Unknown word 'extra'",
            scenes_v2.UnknownWordError,
        )
    ],
)
def test_caption_errors_show_the_problem(world, prompt, fragment, error):
    with pytest.raises(error, match=fragment):
        world.parse_caption(prompt)


def test_vocabulary_is_what_the_grammar_produces(batch):
    used = {word for text in batch.captions for word in text.split()}
    assert used <= set(vocabulary())
    assert vocabulary() == sorted(vocabulary())
    assert {"a", "and", "on", "the", "background", "center"} <= set(vocabulary())


def test_scene_validation_shows_bad_value():
    with pytest.raises(ValueError, match="'magenta'"):
        SceneObject("circle", "magenta", "small", "left")
    with pytest.raises(ValueError, match="'red'"):
        Scene((SceneObject("circle", "blue", "small", "left"),), ("red",))


def test_backgrounds_far_from_object_colours():
    # the background of a generated image is read back from its colour: keep them apart
    for bg, obj in itertools.product(BACKGROUNDS, COLOURS):
        assert np.linalg.norm(np.subtract(COLOUR_RGB[bg], COLOUR_RGB[obj])) > 80, (bg, obj)
