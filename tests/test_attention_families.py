"""Attention maps on every wired family, against the softmax of each processor's own q and k.

The reference never rebuilds q or k: it runs the model plainly and records what the real
processor hands `torch.nn.functional.scaled_dot_product_attention` (every processor of the
five families ends there on CPU: directly, or through diffusers' native attention backend),
then materialises softmax(q k^T * scale + mask) in float64.
"""

from __future__ import annotations

import functools
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import FusedJointAttnProcessor2_0, JointAttnProcessor2_0
from diffusers.models.transformers.transformer_flux2 import Flux2KVAttnProcessor

from ditlens.adapters import adapter_for
from ditlens.adapters.sd3 import SD3Adapter
from ditlens.attention import SUPPORTED_CLASSES, AttentionMapProcessor, AttentionMaps
from tests.tiny_models import tiny_model

#: per family, one site of each kind of block
SITES = {
    "flux": ("transformer_blocks.1", "single_transformer_blocks.0"),
    "flux2": ("transformer_blocks.0", "single_transformer_blocks.1"),  # dual; parallel single (fused qkv + MLP)
    "qwenimage": ("transformer_blocks.1",),
    "sana": ("transformer_blocks.1",),  # the map is attn2's (cross-attention)
    "sd3": (
        "transformer_blocks.0",
        "transformer_blocks.1",
        "transformer_blocks.2",
    ),  # SD3.5 dual attention; plain; context_pre_only
}
POSITIONS = [[1, 3], [0]]  # per sample: text positions of the subject's words
PADDED = 2  # sample 1's text ends in this many padding tokens (masked) where the family takes a text mask


@functools.cache
def sharp(name: str):
    """The family's tiny model with sharpened attention (qk-norm gains x4), so that maps are far
    from uniform and errors show; and its inputs, with padding masked where the family has a
    text mask. Cached: tests must leave it as they found it."""
    tiny = tiny_model(name)
    with torch.no_grad():
        for pname, p in tiny.transformer.named_parameters():
            if any(f".{n}." in pname for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k")):
                p.mul_(4.0)
    inputs = tiny.make_inputs(2, torch.Generator().manual_seed(1))
    for mask_name in ("encoder_hidden_states_mask", "encoder_attention_mask"):  # Qwen-Image, SANA
        if mask_name in inputs:
            inputs[mask_name][1, -PADDED:] = 0
    return tiny, inputs


def attention_of(tiny, site: str) -> torch.nn.Module:
    return adapter_for(tiny.transformer).attention_locator.attention(tiny.transformer.get_submodule(site))


def layout(name: str, n_txt: int, n_img: int) -> tuple[slice, slice]:
    """(image query rows, text key columns) of each processor's SDPA call, read off diffusers 0.42.1."""
    if name in ("flux", "flux2", "qwenimage"):
        return slice(n_txt, n_txt + n_img), slice(0, n_txt)  # joint [txt, img]
    if name == "sd3":
        return slice(0, n_img), slice(n_img, n_img + n_txt)  # joint [img, txt]
    return slice(0, n_img), slice(0, n_txt)  # SANA: cross-attention, image queries on text keys


def processor_softmax(tiny, inputs, attn, monkeypatch) -> torch.Tensor:
    """(B, H, L, S) float64: the softmax of the q, k and mask that `attn`'s own processor hands
    SDPA in one plain forward call."""
    calls, inside = [], []
    real = F.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if inside:
            calls.append((query, key, attn_mask, scale))
        return real(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    handles = [
        attn.register_forward_pre_hook(lambda *a: inside.append(1)),
        attn.register_forward_hook(lambda *a: inside.clear()),
    ]
    try:
        with torch.no_grad():
            tiny.transformer(**inputs)
    finally:
        for h in handles:
            h.remove()
        monkeypatch.undo()
    assert len(calls) == 1
    q, k, mask, scale = (x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in calls[0])
    logits = q @ k.transpose(-1, -2) * (scale or 1 / math.sqrt(q.shape[-1]))
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    return logits.softmax(-1)


FAMILY_SITES = [(name, site) for name, sites in SITES.items() for site in sites]


@pytest.mark.parametrize(("name", "site"), FAMILY_SITES)
def test_map_is_the_processors_own_softmax(name, site, monkeypatch):
    tiny, inputs = sharp(name)
    n_txt, n_img = tiny.n_txt_tokens, tiny.n_img_tokens
    probs = processor_softmax(tiny, inputs, attention_of(tiny, site), monkeypatch)
    rows, cols = layout(name, n_txt, n_img)
    on_text = probs[:, :, rows, cols]  # (B, H, N_img, N_txt)
    expected = torch.stack([on_text[b, ..., p].sum(-1).mean(0) for b, p in enumerate(POSITIONS)])  # (B, N_img)
    assert expected.std() > 0.02  # the case is not trivially uniform

    with AttentionMaps(tiny.transformer, POSITIONS, sites=[site]) as maps, torch.no_grad():
        tiny.transformer(**inputs)
    assert maps.sites == [site] and maps.steps == [0]
    got = maps.result()[0, 0]
    assert got.shape == (2, n_img)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)

    if name in ("qwenimage", "sana"):  # the text mask is applied: padding gets no attention
        with AttentionMaps(tiny.transformer, [[0], [n_txt - 1]], sites=[site]) as padded, torch.no_grad():
            tiny.transformer(**inputs)
        on_padding, on_word = padded.result()[0, 0, 1], padded.result()[0, 0, 0]
        assert on_padding.max() < 1e-12 and on_word.max() > 1e-2


@pytest.mark.parametrize("name", list(SITES))
def test_outputs_bit_identical_and_layout(name):
    tiny, inputs = sharp(name)
    transformer = tiny.transformer
    before = dict(transformer.attn_processors)
    with torch.no_grad():
        plain = transformer(**inputs, return_dict=False)[0]
    with AttentionMaps(transformer, POSITIONS) as maps:
        wrapped = {k: p for k, p in transformer.attn_processors.items() if isinstance(p, AttentionMapProcessor)}
        for p in wrapped.values():  # the attention module reads the processor's signature to pick its arguments
            assert inspect.signature(p.__call__) == inspect.signature(p.original.__call__)
        with torch.no_grad():
            seen = [
                transformer(**inputs, return_dict=False)[0] for _ in range(2)
            ]  # a bare transformer: a call is a step
    assert all(torch.equal(plain, s) for s in seen)
    after = dict(transformer.attn_processors)
    assert all(after[k] is before[k] for k in before) and not transformer._forward_pre_hooks

    sites = [s.name for s in adapter_for(transformer).sites()]  # every block of these families attends to text
    assert len(wrapped) == len(sites)  # one attention per block (SD3.5's attn2, SANA's attn1: no text, not wrapped)
    maps_t = maps.result()
    assert maps_t.shape == (2, len(sites), 2, tiny.n_img_tokens)  # (steps, sites, samples, N_img)
    assert maps.steps == [0, 1] and maps.sites == sites
    assert torch.equal(maps_t[0], maps_t[1])  # same inputs, same maps per step
    assert bool(((maps_t >= 0) & (maps_t <= 1)).all())

    # prompts=1 on 2 rows keeps the conditional (last) row
    # (its inputs are cut before q and k are formed: equal up to rounding)
    with AttentionMaps(transformer, POSITIONS[1], prompts=1) as last, torch.no_grad():
        transformer(**inputs)
    assert last.result().shape == (1, len(sites), 1, tiny.n_img_tokens)
    torch.testing.assert_close(last.result()[0, :, 0], maps_t[0, :, 1], atol=1e-6, rtol=0)


def test_a_family_without_locator_is_refused(monkeypatch):
    assert set(SUPPORTED_CLASSES) == {
        "FluxTransformer2DModel",
        "Flux2Transformer2DModel",
        "QwenImageTransformer2DModel",
        "SanaTransformer2DModel",
        "SD3Transformer2DModel",
    }
    tiny, _ = sharp("sd3")
    monkeypatch.setattr(SD3Adapter, "attention_locator", None)
    with pytest.raises(
        ValueError,
        match=r"Attention maps are not wired for SD3Transformer2DModel\. Supported: "
        r"Flux2Transformer2DModel, FluxTransformer2DModel, QwenImageTransformer2DModel, "
        r"SanaTransformer2DModel\.",
    ):
        AttentionMaps(tiny.transformer, [0])


@pytest.mark.parametrize(
    ("name", "site", "processor", "why"),
    [
        (
            "sd3",
            "transformer_blocks.1",
            FusedJointAttnProcessor2_0,
            "reproduces the softmax of JointAttnProcessor2_0 only",
        ),
        (
            "flux2",
            "transformer_blocks.0",
            Flux2KVAttnProcessor,
            "softmax of Flux2AttnProcessor, Flux2ParallelSelfAttnProcessor only",
        ),
    ],
)
def test_processors_it_cannot_reproduce_are_refused(name, site, processor, why):
    tiny, _ = sharp(name)
    attn = attention_of(tiny, site)
    original = attn.processor
    attn.set_processor(processor())
    try:
        before = dict(tiny.transformer.attn_processors)
        with pytest.raises(ValueError, match=f"{site}'s attention uses {processor.__name__}.*{why}"):
            with AttentionMaps(tiny.transformer, [0]):
                pass
        after = dict(tiny.transformer.attn_processors)
        assert all(after[k] is before[k] for k in before)
    finally:
        attn.set_processor(original)


def test_blocks_without_text_attention_are_left_out():
    tiny, inputs = sharp("sana")
    block = tiny.transformer.transformer_blocks[0]
    attn2 = block.attn2
    block.attn2 = None  # as a SANA built with cross_attention_dim=None
    try:
        with pytest.raises(ValueError, match="Site 'transformer_blocks.0' has no attention from image to text"):
            AttentionMaps(tiny.transformer, [0], sites=["transformer_blocks.0"])
        with AttentionMaps(tiny.transformer, [0]) as maps, torch.no_grad():
            tiny.transformer(**inputs)
        assert maps.sites == ["transformer_blocks.1"]
    finally:
        block.attn2 = attn2
    # SD3.5's dual-attention block: attn (joint, with text) is wrapped, attn2 (image only) is not
    sd3, _ = sharp("sd3")
    with AttentionMaps(sd3.transformer, [0]):
        assert isinstance(sd3.transformer.transformer_blocks[0].attn.processor, AttentionMapProcessor)
        assert type(sd3.transformer.transformer_blocks[0].attn2.processor) is JointAttnProcessor2_0
