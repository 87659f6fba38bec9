"""CLIP scores on a tiny random CLIP saved to a folder offline (model, BPE tokenizer, processor)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPModel

from ditlens.metrics.clip import ClipScorer

from .tiny_scorers import clip_image_processor as image_processor
from .tiny_scorers import save_tiny_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny CLIP folder as save_pretrained writes it: hidden 32, 2 layers, 32 px images, patch 8."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return ClipScorer.from_pretrained(clip_dir)


def images(n: int, seed: int, size: int = 48) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_shapes_range_and_determinism(clip_dir, scorer):
    x = images(3, 0)
    prompts = ["a red cube", "a blue ball", "the green cone on the left"]
    scores = scorer.clip_score(x, prompts)
    assert scores.shape == (3,) and bool(((scores >= 0) & (scores <= 100)).all())
    assert torch.equal(scores, ClipScorer.from_pretrained(clip_dir).clip_score(x, prompts))  # reload, same numbers
    feats = scorer.image_features(x)
    assert feats.shape == (3, 16) and torch.allclose(feats.norm(dim=-1), torch.ones(3))
    assert torch.equal(feats, scorer.image_features(x))
    other = scorer.clip_score(x, prompts[::-1])
    assert not torch.equal(scores, other)  # the text matters
    # long prompts are truncated to the text model's 16 positions, not an error
    assert scorer.clip_score(x[:1], ["a red cube " * 20]).shape == (1,)


def test_clip_score_is_the_models_own_cosine(clip_dir, scorer):
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    x, prompts = images(2, 1, size=32), ["a red cube", "a ball"]
    processor = image_processor(32)
    pixels = processor(images=list((x * 255).round().to(torch.uint8)), return_tensors="pt")["pixel_values"]
    tokens = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels)
        txt = model.get_text_features(**tokens)
    img, txt = (t if isinstance(t, torch.Tensor) else t.pooler_output for t in (img, txt))
    expected = 100 * torch.cosine_similarity(img, txt).clamp(min=0)
    # 32 px in, 32 px out: only the uint8 rounding of transformers' PIL path differs
    torch.testing.assert_close(scorer.clip_score((x * 255).round() / 255, prompts), expected, atol=1e-3, rtol=0)


def test_torch_preprocessing_matches_transformers_processor(scorer):
    x = (images(2, 2, size=80) * 255).round() / 255
    x[:, :, :, :40] *= 0.2  # some structure for the resampling to preserve
    ours = scorer.pixel_values(x)
    theirs = image_processor(32)(images=list((x * 255).to(torch.uint8)), return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    diff = (ours - theirs).abs()
    assert (
        diff.mean() < 0.01 and diff.max() < 0.05
    )  # torch antialiased bicubic vs PIL (measured 0.005, 0.02), std units
    wide = scorer.pixel_values(torch.rand(1, 3, 40, 80))  # shortest edge to 32, then centre crop
    assert wide.shape == (1, 3, 32, 32)


def test_own_text_scores_higher_when_built_so(clip_dir):
    """Rewire the visual projection so image i's embedding IS prompt i's: each must then score
    100 with its own text and less with the other."""
    scorer = ClipScorer.from_pretrained(clip_dir)  # its own: the test rewires the model
    x, prompts = images(2, 3), ["a red cube", "a blue ball"]
    with torch.no_grad():
        pooled = scorer.model.vision_model(pixel_values=scorer.pixel_values(x)).pooler_output  # U: (2, 32)
        text = scorer.text_features(prompts)  # T: (2, 16)
        # W U^T = T^T with W = T^T (U U^T)^-1 U
        scorer.model.visual_projection.weight.copy_(text.T @ torch.linalg.solve(pooled @ pooled.T, pooled))
    own = scorer.clip_score(x, prompts)
    swapped = scorer.clip_score(x, prompts[::-1])
    torch.testing.assert_close(own, torch.full((2,), 100.0), atol=1e-3, rtol=0)
    assert bool((swapped < own - 1).all())


def test_feature_distances(scorer):
    a, b = images(6, 4), images(6, 5)
    same = scorer.cosine_distance(a, a)
    assert same.shape == (6,) and same.abs().max() < 1e-5
    assert bool((scorer.cosine_distance(a, b) > 0).all())
    assert scorer.frechet_distance(a, a) < 1e-6
    assert scorer.frechet_distance(a, b * 0.3) > scorer.frechet_distance(a, b) > 0


def test_refusals(scorer, tmp_path):
    missing = tmp_path / "no_clip_here"
    with pytest.raises(ValueError, match=r"No CLIP model at .*no_clip_here.*expected a local folder with config.json"):
        ClipScorer.from_pretrained(missing)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ValueError, match="needs a CLIPModel"):
        ClipScorer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        scorer.image_features(images(1, 0) * 2)
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        scorer.image_features(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorer.clip_score(images(2, 0), ["a red cube"])
