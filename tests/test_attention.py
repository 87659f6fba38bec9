"""Attention-map baseline: exact against a brute-force softmax, changes nothing, always detaches."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

from ditlens import hooks
from ditlens.adapters.attention import FluxLocator
from ditlens.attention import (
    AttentionMapProcessor,
    AttentionMaps,
    attention_masks,
    image_to_text_attention,
    word_positions,
)
from tests.pipelines import flux_call_kwargs, tiny_flux_pipeline
from tests.tiny_models import tiny_flux

SITES = ("transformer_blocks.1", "single_transformer_blocks.0")  # one block of each kind


def peaky(tiny):
    """Sharpen attention (q/k norm gains x4) so the maps are far from uniform and errors show."""
    with torch.no_grad():
        for name, p in tiny.transformer.named_parameters():
            if ".attn.norm_" in name:
                p.mul_(4.0)
    return tiny


def processors(transformer) -> dict[str, object]:
    return dict(transformer.attn_processors)


# ---- a brute-force copy of FluxAttnProcessor (diffusers 0.42.1) with an explicit softmax ----
def reference_attention(attn, hidden_states, encoder_hidden_states=None, image_rotary_emb=None):
    """Returns (the processor's output, softmax weights (B, H, S, S) over the joint [txt, img])."""
    query = attn.to_q(hidden_states).unflatten(-1, (-1, attn.head_dim))
    key = attn.to_k(hidden_states).unflatten(-1, (-1, attn.head_dim))
    value = attn.to_v(hidden_states).unflatten(-1, (-1, attn.head_dim))
    query, key = attn.norm_q(query), attn.norm_k(key)
    if encoder_hidden_states is not None:
        eq = attn.norm_added_q(attn.add_q_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim)))
        ek = attn.norm_added_k(attn.add_k_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim)))
        ev = attn.add_v_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim))
        query, key, value = torch.cat([eq, query], 1), torch.cat([ek, key], 1), torch.cat([ev, value], 1)
    if image_rotary_emb is not None:
        query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
        key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
    q, k, v = (x.transpose(1, 2).double() for x in (query, key, value))  # (B, H, S, hd)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # (B, H, S, S)
    out = (weights @ v).transpose(1, 2).flatten(2, 3).to(query.dtype)  # (B, S, H*hd)
    if encoder_hidden_states is None:
        return out, weights
    n_txt = encoder_hidden_states.shape[1]
    return (attn.to_out[0](out[:, n_txt:]), attn.to_add_out(out[:, :n_txt])), weights


def capture_attention_inputs(transformer, inputs, site):
    """The keyword inputs of `site`'s attention module in one plain forward call."""
    captured = {}
    attn = transformer.get_submodule(site).attn
    handle = attn.register_forward_pre_hook(lambda m, a, kw: captured.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            transformer(**inputs)
    finally:
        handle.remove()
    return attn, captured


# ---- tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("site", SITES)
def test_map_equals_brute_force_softmax(site):
    tiny = peaky(tiny_flux())
    inputs = tiny.make_inputs(2, torch.Generator().manual_seed(1))
    attn, kw = capture_attention_inputs(tiny.transformer, inputs, site)
    n_txt = tiny.n_txt_tokens
    positions = [[1, 3], [0]]  # per sample
    weights = torch.zeros(2, n_txt)
    weights[0, [1, 3]] = weights[1, 0] = 1

    with torch.no_grad():
        ref_out, probs = reference_attention(attn, **kw)
        real_out = FluxAttnProcessor()(attn, **kw)
        got = image_to_text_attention(FluxLocator().locate(attn, kw, n_txt), weights)
    # the copy really is the processor's math
    as_tuple = lambda x: x if isinstance(x, tuple) else (x,)  # noqa: E731
    for a, b in zip(as_tuple(ref_out), as_tuple(real_out), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    img_rows = probs[:, :, n_txt:]  # (B, H, N_img, S): image queries
    expected = torch.stack([img_rows[b, :, :, p].sum(-1).mean(0) for b, p in enumerate(positions)])  # (B, N_img)
    assert got.shape == (2, tiny.n_img_tokens)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.02  # the case is not trivially uniform

    # the observer wired into a forward call gives the same map for that site
    with AttentionMaps(tiny.transformer, positions, sites=[site]) as maps, torch.no_grad():
        tiny.transformer(**inputs)
    assert maps.sites == [site] and maps.steps == [0]
    torch.testing.assert_close(maps.result()[0, 0].double(), expected, atol=1e-5, rtol=0)


def test_chunks_and_masks_follow_sdpa_rules():
    tiny = peaky(tiny_flux())
    inputs = tiny.make_inputs(1, torch.Generator().manual_seed(2))
    attn, kw = capture_attention_inputs(tiny.transformer, inputs, "single_transformer_blocks.1")
    locate = lambda mask=None: FluxLocator().locate(attn, kw | {"attention_mask": mask}, tiny.n_txt_tokens)  # noqa: E731
    weights = torch.zeros(1, tiny.n_txt_tokens)
    weights[0, [0, 2]] = 1
    with torch.no_grad():
        whole = image_to_text_attention(locate(), weights)
        chunked = image_to_text_attention(locate(), weights, chunk_elements=1)  # one query row at a time
        S = tiny.n_txt_tokens + tiny.n_img_tokens
        allowed = torch.ones(S, S, dtype=torch.bool)  # (L, S): per joint query row, as SDPA broadcasts it
        same = image_to_text_attention(locate(allowed), weights)
        allowed[:, 2] = False  # nobody may look at text token 2
        masked = image_to_text_attention(locate(allowed), weights)
        only_0 = weights.clone()
        only_0[0, 2] = 0
        probs = reference_attention(attn, kw["hidden_states"], None, kw["image_rotary_emb"])[1]
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(same, whole, atol=0, rtol=0)
    # with key 2 masked the softmax renormalises over the others: weight on 0 = p0 / (1 - p2)
    p = probs[0, :, tiny.n_txt_tokens :]
    expected = (p[..., 0] / (1 - p[..., 2])).mean(0)
    torch.testing.assert_close(masked[0].double(), expected, atol=1e-5, rtol=0)


def test_pipeline_outputs_bit_identical_and_processors_restored():
    pipe = tiny_flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    before = processors(pipe.transformer)
    plain = pipe(**flux_call_kwargs(batch=2, steps=3)).images
    with hooks(pipe) as run, AttentionMaps(pipe, [1, 4], step_fn=lambda: run.clock.step) as maps:
        inside = processors(pipe.transformer)
        seen = pipe(**flux_call_kwargs(batch=2, steps=3)).images
    assert torch.equal(plain, seen)
    assert all(isinstance(p, AttentionMapProcessor) for p in inside.values())
    after = processors(pipe.transformer)
    assert all(after[k] is before[k] for k in before)
    assert not pipe.transformer._forward_pre_hooks

    maps_t = maps.result()
    n_img = (32 // (pipe.vae_scale_factor * 2)) ** 2  # 32 px, VAE downscale, then packed 2x2
    assert maps_t.shape == (3, 4, 2, n_img)  # (steps, sites, samples, N_img)
    assert maps.steps == [0, 1, 2] and maps.sites[0] == "transformer_blocks.0"
    assert bool(((maps_t >= 0) & (maps_t <= 1)).all())


def test_rows_and_per_sample_positions():
    tiny = peaky(tiny_flux())
    inputs = tiny.make_inputs(2, torch.Generator().manual_seed(3))
    results = {}
    for key, positions, rows in (
        ("both", [[1], [2, 3]], None),
        ("a", [1], None),
        ("b", [2, 3], None),
        ("last", [2, 3], 1),
    ):  # prompts=1 on 2 rows: [uncond, cond], the last row
        with AttentionMaps(tiny.transformer, positions, prompts=rows) as maps, torch.no_grad():
            tiny.transformer(**inputs)
            tiny.transformer(**inputs)  # a bare transformer: every call is one step
        results[key] = maps.result()
    assert results["both"].shape == (2, 4, 2, tiny.n_img_tokens)
    assert torch.equal(results["both"][:, :, 0], results["a"][:, :, 0])
    assert torch.equal(results["both"][:, :, 1], results["b"][:, :, 1])
    # scoring fewer rows changes GEMM shapes, so equal up to rounding only
    torch.testing.assert_close(results["last"][:, :, 0], results["b"][:, :, 1], atol=1e-6, rtol=0)
    assert torch.equal(results["a"][0], results["a"][1])  # same inputs, same maps per step


def test_processors_restored_after_an_exception():
    tiny = tiny_flux()
    before = processors(tiny.transformer)
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionMaps(tiny.transformer, [0]):
            raise RuntimeError("boom")
    after = processors(tiny.transformer)
    assert all(after[k] is before[k] for k in before)
    assert not tiny.transformer._forward_pre_hooks

    # an error during a forward call (bad position) also leaves nothing behind
    with pytest.raises(ValueError, match="Token position 99 is out of range: the text has 5 tokens"):
        with AttentionMaps(tiny.transformer, [99]), torch.no_grad():
            tiny.transformer(**tiny.make_inputs(1, torch.Generator().manual_seed(0)))
    after = processors(tiny.transformer)
    assert all(after[k] is before[k] for k in before)


def test_refusals_are_clear():
    tiny = tiny_flux()
    with pytest.raises(ValueError, match="Unsupported transformer class 'Linear'. Supported: .*FluxTransformer2DModel"):
        AttentionMaps(torch.nn.Linear(2, 2), [0])
    with pytest.raises(ValueError, match="Unknown site 'blocks.9'"):
        AttentionMaps(tiny.transformer, [0], sites=["blocks.9"])
    with pytest.raises(ValueError, match="token_positions is empty"):
        AttentionMaps(tiny.transformer, [])
    with pytest.raises(ValueError, match="prompts must be a positive int"):
        AttentionMaps(tiny.transformer, [0], prompts=0)
    with AttentionMaps(tiny.transformer, [0]):
        with pytest.raises(RuntimeError, match="Already hooked"):
            AttentionMaps(tiny.transformer, [0]).__enter__()
    assert all(type(p) is FluxAttnProcessor for p in processors(tiny.transformer).values())

    class WithExtras(FluxAttnProcessor):
        def __call__(
            self,
            attn,
            hidden_states,
            encoder_hidden_states=None,
            attention_mask=None,
            image_rotary_emb=None,
            ip_hidden_states=None,
        ):  # an IP-Adapter-like extra argument
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    odd = WithExtras()
    tiny.transformer.single_transformer_blocks[1].attn.set_processor(odd)
    before = processors(tiny.transformer)
    with pytest.raises(ValueError, match="WithExtras"):
        with AttentionMaps(tiny.transformer, [0]):
            pass
    after = processors(tiny.transformer)
    assert all(after[k] is before[k] for k in before)


def test_attention_masks_recover_a_planted_region():
    gen = torch.Generator().manual_seed(0)
    side, shape = 8, (2, 3, 4)  # steps, sites, samples
    truth = torch.zeros(*shape, side, side, dtype=torch.bool)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in shape)).tolist():
        r, c = torch.randint(0, side // 2, (2,), generator=gen).tolist()
        truth[tuple(idx)][r : r + 3, c : c + 4] = True
    maps = 0.02 + 0.005 * torch.rand(*truth.shape, generator=gen) + 0.3 * truth  # subject gets the attention
    fg = attention_masks(maps.flatten(-2))
    assert fg.dtype == torch.bool and fg.shape == shape + (side * side,)
    assert torch.equal(fg.view_as(truth), truth)


def test_word_positions():
    assert word_positions("a red cube left of a blue ball", ["cube"]) == [3]  # [CLS] a red cube ...
    assert word_positions("a red cube left of a red ball", ["red"]) == [2, 7]
    assert word_positions("a red cube left of a blue ball", ["blue ball"]) == [7, 8]
    with pytest.raises(ValueError, match="Word 'cone' does not occur"):
        word_positions("a red cube", ["cone"])

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "a", "photo", "of", "red", "cubes", "cube"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    assert word_positions("A photo of red Cube", ["cube", "photo"], fast) == [1, 4]
    with pytest.raises(ValueError, match="does not occur"):
        word_positions("a photo of red cubes", ["cube"], fast)  # whole words only


def test_two_calls_in_one_step_score_only_the_conditional_one():
    """With `prompts`, the second call of a step (true CFG's unconditional one) is no sample."""
    tiny = peaky(tiny_flux())
    gen = torch.Generator().manual_seed(4)
    cond, uncond = tiny.make_inputs(2, gen), tiny.make_inputs(2, gen)
    with AttentionMaps(tiny.transformer, [1], prompts=2, step_fn=lambda: 0) as maps, torch.no_grad():
        tiny.transformer(**cond)
        tiny.transformer(**uncond)
    with AttentionMaps(tiny.transformer, [1], prompts=2) as alone, torch.no_grad():
        tiny.transformer(**cond)
    assert maps.result().shape == (1, 4, 2, tiny.n_img_tokens)
    assert torch.equal(maps.result(), alone.result())
