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
    is_heldout,
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


@pytest.mark.parametrize(
    "prompt, fragment",
    [
        ("a large plain red circle on the top left on a plain gray background", "'on the top left'"),
        ("a large red circle on the left on a plain gray background", "got 'red'"),
        ("a large plain red circle on the left on a gray background", "got 'gray'"),
        ("a large plain red circle on the left", "end of the prompt"),
        (
            "a small plain red circle on the left and a large plain blue star on the left on a plain gray background",
            "distinct positions",
        ),
        ("a small plain red circle in the center on a plain gray background extra", "Unknown word 'extra'"),
    ],
)
def test_caption_errors_show_the_problem(prompt, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_caption(prompt)


def test_unknown_word_error_lists_the_v2_vocabulary():
    prompt = "a large striped red dog at the top left on a checked navy background"
    with pytest.raises(UnknownWordError) as info:
        parse_caption(prompt)
    message = str(info.value)
    assert "'dog'" in message and prompt in message
    assert "knows: " + ", ".join(vocabulary()) in message
    assert ", ".join(scenes.vocabulary()) not in message
    assert isinstance(info.value, scenes.UnknownWordError) and isinstance(info.value, ValueError)
    with pytest.raises(UnknownWordError, match="lowercase"):
        check_words("a large striped Red star")
    # v1 grammar words that v2 dropped are unknown here
    with pytest.raises(UnknownWordError, match="'olive'"):
        check_words("on a plain olive background")
    assert issubclass(CaptionError, ValueError) and CaptionError is scenes.CaptionError


def test_heldout_split_disjoint():
    train = sample_batch(200, seed=2, split="train")
    held = sample_batch(40, seed=2, split="heldout")
    assert not any(is_heldout(s) for s in train.scenes)
    assert all(is_heldout(s) for s in held.scenes)
    assert not set(train.captions) & set(held.captions)


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


# ---------------------------------------------------------------------------------------
# Training on v2 (a tiny model on CPU)
# ---------------------------------------------------------------------------------------


def _tiny(out, **overrides):
    from ditlens.builtin.train import rung_config

    return rung_config(
        "v2",
        "s",
        out=out,
        steps=4,
        batch_size=4,
        hidden_size=32,
        num_heads=2,
        num_double_blocks=1,
        num_single_blocks=1,
        text_layers=1,
        num_workers=0,
        warmup_steps=2,
        log_every=2,
        sample_every=1000,
        sample_steps=2,
        **overrides,
    )


def test_train_v2_end_to_end_and_resume(tmp_path, one_thread):
    """`python -m ditlens.builtin.train --world v2 --size s` with a tiny model: it trains, writes
    a self-describing folder that loads and generates 64x64 images, and chunks resume exactly."""
    from safetensors.torch import load_file

    from ditlens.builtin import load_builtin
    from ditlens.builtin.train import _parse_args, train

    config, resume, stop = _parse_args(
        [
            "--world",
            "v2",
            "--size",
            "s",
            "--out",
            str(tmp_path / "whole"),
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--hidden-size",
            "32",
            "--num-heads",
            "2",
            "--num-double-blocks",
            "1",
            "--num-single-blocks",
            "1",
            "--text-layers",
            "1",
            "--num-workers",
            "0",
            "--warmup-steps",
            "2",
            "--log-every",
            "2",
            "--sample-every",
            "1000",
            "--sample-steps",
            "2",
        ]
    )
    assert config == _tiny(tmp_path / "whole") and not resume and stop == 0
    train(config)
    # The same run in chunks: stop after every step, then resume.
    chunked = _tiny(tmp_path / "chunks")
    train(chunked, stop_after_s=1e-9)
    assert (tmp_path / "chunks" / "checkpoint.pt").is_file() and not (tmp_path / "chunks" / "model").exists()
    config, resume, stop = _parse_args(["--resume", str(tmp_path / "chunks"), "--stop-after-s", "1e-9"])
    assert config == chunked and resume and stop == 1e-9
    train(config, resume=True, stop_after_s=stop)
    train(config, resume=True)
    assert not (tmp_path / "chunks" / "checkpoint.pt").exists()
    for part in ("transformer", "text_encoder"):
        a = load_file(tmp_path / "whole" / "model" / part / "diffusion_pytorch_model.safetensors")
        b = load_file(tmp_path / "chunks" / "model" / part / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    log = (tmp_path / "chunks" / "train.log").read_text()
    assert "resumed" in log and "trained 4 steps" in log

    pipe = load_builtin(weights=tmp_path / "whole" / "model")
    assert pipe.world == "v2" and pipe.config.image_size == IMAGE_SIZE and pipe.patch_size == 4
    image = pipe(EXAMPLE, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3) and np.isfinite(image).all()
    with pytest.raises(UnknownWordError, match="'olive'.*world v2.*knows"):
        pipe("a large plain red circle on the left on a plain olive background")
    assert (tmp_path / "whole" / "samples" / "step_000004.png").is_file()


def test_the_cli_checks_a_v2_models_prompts_against_the_v2_grammar(tmp_path, one_thread, capsys):
    """A v2 folder's world is read from its model_index.json: the CLI refuses a v1-only word
    (listing the v2 words) and runs a v2 caption; the shipped model stays v1."""
    from ditlens.builtin.train import train
    from ditlens.cli import main
    from ditlens.models import builtin_world

    train(_tiny(tmp_path / "run"))
    model = str(tmp_path / "run" / "model")
    assert builtin_world(model) == "v2" and builtin_world(None) == "v1" and builtin_world("builtin") == "v1"
    argv = ["find", "--model", model, "--steps", "2", "--out", str(tmp_path / "find"), "--quiet"]
    assert main(argv + ["--prompt", "a large red circle on the left on a olive background"]) == 2
    err = capsys.readouterr().err
    assert "Unknown word 'olive'" in err and "world v2" in err and "striped" in err and not (tmp_path / "find").exists()
    assert main(argv + ["--prompt", EXAMPLE]) == 0
    assert (tmp_path / "find" / "channels.json").is_file()
    # a v2-only word on the shipped (v1) model is refused by v1's grammar
    assert main(["find", "--prompt", EXAMPLE, "--out", str(tmp_path / "v1")]) == 2
    assert "Unknown word" in capsys.readouterr().err


def test_train_cli_keeps_v1_defaults_and_refuses_bad_combinations(tmp_path):
    from ditlens.builtin.train import RUNGS, TrainConfig, _parse_args

    config, _, _ = _parse_args(["--out", str(tmp_path)])
    assert config == TrainConfig(out=tmp_path) and config.world == "v1" and config.size == ""
    assert (config.steps, config.batch_size, config.hidden_size, config.patch_size) == (8509, 512, 256, 2)
    for size in ("s", "m", "l"):
        rung, _, _ = _parse_args(["--world", "v2", "--size", size, "--out", str(tmp_path)])
        assert rung.world == "v2" and rung.size == size and rung.patch_size == 4
        assert rung.hidden_size == RUNGS["v2"][size]["hidden_size"]
        rung.validate()
    with pytest.raises(SystemExit):
        _parse_args(["--world", "v2", "--out", str(tmp_path)])  # a v2 run names its rung
    with pytest.raises(SystemExit):
        _parse_args(["--resume", str(tmp_path), "--steps", "5"])
    with pytest.raises(ValueError, match="max_length"):
        TrainConfig(world="v2", patch_size=4).validate()


def test_grammar_takes_at_most_three_objects():
    four = " and ".join(
        f"a small plain red circle {p}" for p in ("on the left", "on the right", "at the top", "at the bottom")
    )
    with pytest.raises(CaptionError, match="more than 3"):
        parse_caption(four + " on a plain gray background")


# ---------------------------------------------------------------------------------------
# Attribute classifier for v2
# ---------------------------------------------------------------------------------------


def test_v2_classifier_trains_saves_and_loads(tmp_path, one_thread):
    from ditlens.metrics import classifier as clf

    config = clf.ClassifierV2Config(channels=(8, 16, 16), feature_dim=32)
    model = clf.train_classifier_v2(steps=3, batch_size=8, config=config, progress=False)
    model.save_pretrained(tmp_path / "clf")
    loaded = clf.AttributeClassifierV2.from_pretrained(tmp_path / "clf")
    held = sample_batch(16, seed=0, split="heldout")
    a, b = clf.logits_v2(model, held.images), clf.logits_v2(loaded, held.images)
    assert torch.equal(a.texture, b.texture) and a.presence.shape == (16, 9, 2)
    assert a.features.shape == (16, 32)
    scores = clf.evaluate_v2(loaded, held.images, held.scenes)
    assert set(scores) == {
        "presence",
        "shape",
        "colour",
        "texture",
        "size",
        "background",
        "background_texture",
        "scene",
    }
    assert all(0 <= v <= 1 for v in scores.values())
    assert all(isinstance(s, Scene) for s in clf.predict_scenes_v2(loaded, held.images))
    with pytest.raises(ValueError, match="world 'v1'"):
        clf.AttributeClassifierV2.from_pretrained(clf.DEFAULT_WEIGHTS)  # the shipped v1 classifier
    with pytest.raises(ValueError, match="64, 64"):
        loaded(torch.zeros(1, 3, 32, 32))
    with pytest.raises(SystemExit):
        clf.main(["--train", "--world", "v2"])  # never overwrites the shipped v1 weights
