import json
import math

import pytest
import torch
from torch import nn

from ditlens.builtin import scenes, scenes_v2
from ditlens.builtin.scenes import Scene, SceneObject, caption, render
from ditlens.metrics import classifier as clf
from ditlens.metrics.classifier import (
    AttributeClassifier,
    AttributeLogits,
    ClassifierConfig,
    features,
    frechet_distance,
    predict_scenes,
    score_fidelity,
)


@pytest.fixture(scope="module")
def shipped() -> AttributeClassifier:
    return AttributeClassifier.from_pretrained()


@pytest.fixture(scope="module")
def heldout() -> scenes.SceneBatch:
    return scenes.sample_batch(256, seed=2024, split="heldout")


def _images(scene_list: list[Scene]) -> torch.Tensor:
    pixels = torch.stack([torch.from_numpy(render(s).image) for s in scene_list])
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1


class _Oracle(nn.Module):
    """Answers with one-hot logits of given scenes, so scoring is tested without depending
    on how well any classifier was trained."""

    def __init__(self, answers: list[Scene]):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.targets = clf.scene_targets(answers)

    def forward(self, images: torch.Tensor) -> AttributeLogits:
        n = len(images)

        def one_hot(name: str, classes: int) -> torch.Tensor:
            y = self.targets[name][:n].clamp_min(0)  # empty slots: any class, presence says 0
            return nn.functional.one_hot(y, classes).float()

        return AttributeLogits(
            presence=one_hot("presence", 2),
            shape=one_hot("shape", len(scenes.SHAPES)),
            colour=one_hot("colour", len(scenes.COLOURS)),
            size=one_hot("size", len(scenes.SIZES)),
            background_left=one_hot("background_left", len(scenes.BACKGROUNDS)),
            background_right=one_hot("background_right", len(scenes.BACKGROUNDS)),
            features=torch.zeros(n, 4),
        )


def test_shipped_classifier_reads_fresh_renders(shipped, heldout):
    acc = clf.evaluate(shipped, heldout.images, heldout.scenes)
    for name, value in acc.items():
        assert value >= 0.95, (name, value)
    predicted = predict_scenes(shipped, heldout.images)
    # predictions list objects in POSITIONS order, scenes in drawing order
    exact = sum(
        set(p.objects) == set(s.objects) and p.background == s.background for p, s in zip(predicted, heldout.scenes)
    ) / len(heldout)
    assert exact >= 0.95


def test_shipped_weights_are_small_and_match_vocabulary():
    files = list(clf.DEFAULT_WEIGHTS.iterdir())
    assert sum(f.stat().st_size for f in files) < 3 * 2**20
    config = json.loads((clf.DEFAULT_WEIGHTS / "config.json").read_text())
    assert tuple(config["colours"]) == scenes.COLOURS


def test_save_load_round_trip_and_vocabulary_check(tmp_path, heldout):
    torch.manual_seed(0)
    model = AttributeClassifier(ClassifierConfig(channels=(8, 8), feature_dim=16)).eval()
    model.save_pretrained(tmp_path)
    loaded = AttributeClassifier.from_pretrained(tmp_path)
    x = heldout.images[:8]
    assert torch.equal(features(model, x), features(loaded, x))
    assert features(model, x).shape == (8, 16)

    config = json.loads((tmp_path / "config.json").read_text())
    config["colours"] = config["colours"][:-1]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="colours"):
        AttributeClassifier.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="--train"):
        AttributeClassifier.from_pretrained(tmp_path / "missing")


def test_bad_image_shape_is_named(shipped):
    with pytest.raises(ValueError, match=r"\(2, 3, 64, 64\)"):
        features(shipped, torch.zeros(2, 3, 64, 64))


def test_frechet_distance_zero_for_same_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 16, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    d = [frechet_distance(a, a + s) for s in (0.1, 0.5, 1.0)]
    assert d[0] < d[1] < d[2]
    assert d[2] == pytest.approx(16.0, rel=1e-6)  # same covariance: |mean shift|^2


def test_frechet_distance_matches_closed_form():
    # b = 2a + 3: S_b = 4 S_a, (S_a S_b)^1/2 = 2 S_a, so FD = |mu_a - mu_b|^2 + tr(S_a)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(400, 8, generator=g) @ torch.randn(8, 8, generator=g)
    b = 2 * a + 3
    a64 = a.double()
    expected = (a64.mean(0) - b.double().mean(0)).square().sum() + torch.cov(a64.T).trace()
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="Feature sizes differ"):
        frechet_distance(a, a[:, :4])


def test_score_fidelity_hand_made_case():
    shown = [
        Scene(
            (SceneObject("circle", "red", "large", "left"), SceneObject("square", "blue", "small", "bottom")), ("gray",)
        ),
        Scene(
            (SceneObject("circle", "red", "large", "left"), SceneObject("square", "blue", "small", "bottom")), ("gray",)
        ),
        Scene((SceneObject("triangle", "yellow", "small", "center"),), ("black", "white")),
    ]
    prompts = [
        caption(shown[0]),  # all right
        # wrong colour on the left, object asked at the top but drawn at the bottom, wrong bg
        "a large green circle on the left and a small blue square at the top on a gray and navy background",
        "a large yellow triangle in the center on a black and white background",  # wrong size
    ]
    scores = score_fidelity(_Oracle(shown), _images(shown), prompts)
    assert scores.n_images == 3 and scores.n_objects == 5
    assert scores.correct == {"position": 4, "shape": 4, "colour": 3, "size": 3, "full_object": 2, "background": 2}
    assert scores.extra_objects == 1  # the square at the bottom, which no prompt names there
    assert scores.accuracy("colour") == pytest.approx(3 / 5)
    assert scores.accuracy("background") == pytest.approx(2 / 3)

    two, one = scores.by_n_objects[2], scores.by_n_objects[1]
    assert set(scores.by_n_objects) == {1, 2}
    assert (two.n_images, two.n_objects, two.correct["full_object"]) == (2, 4, 2)
    assert (one.n_objects, one.correct["size"], one.correct["shape"]) == (1, 0, 1)
    d = scores.to_dict()
    assert d["by_n_objects"]["1"]["accuracy"]["size"] == 0.0
    assert d["accuracy"]["full_object"] == pytest.approx(2 / 5)
    json.dumps(d)  # plain types only
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        score_fidelity(_Oracle(shown), _images(shown), prompts[:2])


def test_score_fidelity_shipped_on_renders(shipped, heldout):
    scores = score_fidelity(shipped, heldout.images[:64], heldout.captions[:64])
    assert scores.accuracy("full_object") >= 0.95 and scores.accuracy("background") >= 0.95
    assert scores.extra_objects <= 2
    empty = clf.FidelityScores(0, 0, dict.fromkeys(clf.ATTRIBUTES, 0), 0)
    assert math.isnan(empty.accuracy("shape"))


def test_augment_keeps_range_and_changes_pixels(heldout):
    g = torch.Generator().manual_seed(0)
    x = clf.augment(heldout.images[:32], g)
    assert x.shape == (32, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert not torch.equal(x, heldout.images[:32])


def test_shipped_names_the_packages_classifier_of_each_world():
    from ditlens.metrics.classifier import SHIPPED_V2, AttributeClassifierV2, classifier_world, load_classifier

    assert classifier_world(SHIPPED_V2) == "v2" and isinstance(load_classifier("shipped", "v2"), AttributeClassifierV2)
    assert type(load_classifier("shipped", "v1")).__name__ == "AttributeClassifier"
    assert load_classifier(None, "v2") is None  # never implied for v2: its texture head is weak (docs/world-v2.md)


def test_v2_classifier_trains_saves_and_loads(tmp_path, one_thread):
    from ditlens.metrics import classifier as clf

    config = clf.ClassifierV2Config(channels=(8, 16, 16), feature_dim=32)
    model = clf.train_classifier_v2(steps=3, batch_size=8, config=config, progress=False)
    model.save_pretrained(tmp_path / "clf")
    loaded = clf.AttributeClassifierV2.from_pretrained(tmp_path / "clf")
    held = scenes_v2.sample_batch(16, seed=0, split="heldout")
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
    assert all(isinstance(s, scenes_v2.Scene) for s in clf.predict_scenes_v2(loaded, held.images))
    with pytest.raises(ValueError, match="world 'v1'"):
        clf.AttributeClassifierV2.from_pretrained(clf.DEFAULT_WEIGHTS)  # the shipped v1 classifier
    with pytest.raises(ValueError, match="64, 64"):
        loaded(torch.zeros(1, 3, 32, 32))
    with pytest.raises(SystemExit):
        clf.main(["--train", "--world", "v2"])  # never overwrites the shipped v1 weights
