"""The shipped built-in model: loading, generation, determinism, vocabulary errors, fidelity."""

from __future__ import annotations

import json

import pytest
import torch

from ditlens.builtin import scenes
from ditlens.builtin.pipeline import DEFAULT_WEIGHTS, BuiltinPipeline, image_ids, load_builtin, patchify, unpatchify

PROMPTS = [
    "a large red circle on the left on a gray background",
    "a small blue square at the top on a navy background",
    "a large yellow triangle in the center on a black and white background",
    "a large green diamond on the right and a small pink cross at the bottom on a brown background",
]
STEPS = 4  # few steps keep the fidelity test fast; the model still draws the right objects (97% on a GPU sweep)


@pytest.fixture(scope="module")
def pipe() -> BuiltinPipeline:
    torch.set_num_threads(2)
    return load_builtin()


def test_weights_are_shipped_and_small():
    assert (DEFAULT_WEIGHTS / "model_index.json").is_file()
    index = json.loads((DEFAULT_WEIGHTS / "model_index.json").read_text())
    assert index["text_encoder"] == ["ditlens.builtin.text_encoder", "BuiltinTextEncoder"]
    assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    size = sum(f.stat().st_size for f in DEFAULT_WEIGHTS.rglob("*") if f.is_file())
    assert size <= 50e6


def test_loads_as_flux_transformer(pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    assert type(pipe.transformer) is FluxTransformer2DModel
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.transformer.dtype == torch.float32
    assert not pipe.transformer.config.guidance_embeds


def test_patchify_roundtrip_and_ids():
    x = torch.randn(2, 3, 32, 32)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 256, 12)
    assert torch.equal(unpatchify(tokens, 32, 32, 2), x)
    ids = image_ids(32, 32, 2)
    assert ids.shape == (256, 3) and ids[17].tolist() == [0, 1, 1]


def test_generates_valid_images(pipe):
    images = pipe(PROMPTS, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (4, 3, 32, 32)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.1  # not a blank canvas
    pil = pipe(PROMPTS[0], num_inference_steps=1, guidance_scale=1.0, output_type="pil").images
    assert pil[0].size == (32, 32)


def test_deterministic_with_generator(pipe):
    a = pipe(PROMPTS[:2], num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="pt").images
    b = pipe(PROMPTS[:2], num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="pt").images
    assert torch.equal(a, b)


def test_cfg_is_one_call_uncond_then_cond(pipe):
    seen = []
    handle = pipe.transformer.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs["encoder_hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        pipe(PROMPTS[:3], num_inference_steps=2, guidance_scale=4.0, output_type="latent")
        pipe(PROMPTS[:3], num_inference_steps=1, guidance_scale=1.0, output_type="latent")
    finally:
        handle.remove()
    assert seen == [6, 6, 3]  # CFG: one batch of 2B per step; none without it


def test_unknown_word_lists_vocabulary(pipe):
    with pytest.raises(scenes.UnknownWordError) as err:
        pipe("a large red dog on the left on a gray background", num_inference_steps=1)
    assert "'dog'" in str(err.value) and "circle" in str(err.value)


def test_empty_prompt_is_unconditional(pipe):
    images = pipe("", num_inference_steps=1, guidance_scale=1.0, output_type="pt").images
    assert torch.isfinite(images).all()


def test_fidelity_above_chance(pipe):
    classifier_module = pytest.importorskip("ditlens.metrics.classifier")
    classifier = classifier_module.AttributeClassifier.from_pretrained()
    batch = scenes.sample_batch(8, seed=7, split="heldout", n_objects=1)
    images = pipe(
        batch.captions, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    scores = classifier_module.score_fidelity(classifier, images * 2 - 1, batch.captions)
    # chance: shape 1/5, colour 1/8; the trained model is far above it even at 4 steps
    assert scores.accuracy("shape") >= 0.75
    assert scores.accuracy("colour") >= 0.75
    assert scores.accuracy("position") >= 0.75
