"""`find_channels` on a run where a block does not run in every call: the real (tiny)
StableDiffusion3Pipeline with skip-layer guidance, whose extra transformer call skips a
block in some steps. Those entries are NaN in the recording (`ChannelStats.ran` False):
find must neither take them for non-finite activations nor count them as top channels
(`torch.topk` ranks NaN first)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from ditlens.adapters import adapter_for
from ditlens.config import GenerationSettings
from ditlens.core.hooks import hooks
from ditlens.find import FindConfig, FindResult, find_channels

from .pipelines import tiny_sd3_pipeline
from .tiny_models import tiny_sd3

K = 4
SKIPPED = "transformer_blocks.1"


def _sd3_pipeline(transformer: torch.nn.Module | None = None) -> StableDiffusion3Pipeline:
    return tiny_sd3_pipeline(transformer if transformer is not None else tiny_sd3().transformer)


def _prompt_kwargs(rows: int) -> dict:
    gen = torch.Generator().manual_seed(9)
    return {  # precomputed prompt embeddings stand in for the text encoders
        "prompt_embeds": torch.randn(rows, 5, 24, generator=gen),
        "pooled_prompt_embeds": torch.randn(rows, 16, generator=gen),
        "negative_prompt_embeds": torch.randn(rows, 5, 24, generator=gen),
        "negative_pooled_prompt_embeds": torch.randn(rows, 16, generator=gen),
        "skip_guidance_layers": [1],
        "skip_layer_guidance_start": 0.0,
        "skip_layer_guidance_stop": 0.6,  # the skip-layer call in steps 1 and 2 of 4 (0 < i < 2.4)
    }


@pytest.fixture(scope="module")
def found():
    """find_channels with plain forward hooks beside ditlens': per transformer call, each
    block that ran -> its image tokens (as the recording reduces them)."""
    pipe = _sd3_pipeline()
    adapter = adapter_for(pipe)
    calls: list[dict[str, torch.Tensor]] = []
    handles = [pipe.transformer.register_forward_pre_hook(lambda m, a: calls.append({}))]
    for site in adapter.sites():

        def keep(m, a, k, o, name=site.name):
            calls[-1][name] = adapter.split(o, a, k).img.detach().clone()

        handles.append(site.module.register_forward_hook(keep, with_kwargs=True))
    config = FindConfig(
        prompts=["a", "b"],
        seeds=[0],
        k=K,
        surface_step=1,
        generation=GenerationSettings(num_inference_steps=4, guidance_scale=3.0, height=16, width=16),
    )
    try:
        result = find_channels(pipe, config, prompt_kwargs=_prompt_kwargs(2))
    finally:
        for h in handles:
            h.remove()
    return result, calls


def test_find_runs_with_a_block_skipped_in_some_calls(found):
    result, calls = found
    assert len(calls) == 6  # 4 CFG calls and 2 skip-layer calls
    assert [SKIPPED in call for call in calls] == [True, True, False, True, False, True]
    ran = result.stats.ran["img"][:, result.stats.site_index(SKIPPED)]  # (steps, rows)
    assert result.stats.meta["rows_per_call"] == [4, 2]
    assert not bool(ran[:, 4:].any())  # never in the skip-layer call (and no such call in steps 0 and 3)
    assert bool(ran[:, :4].all())
    assert bool(result.stats.img["abs_mean"].isnan().any())  # absent entries are there
    summary = result.summary()
    json.dumps(summary, allow_nan=False)  # no NaN anywhere in what find reports
    assert result.surface is not None and bool(torch.isfinite(result.surface).all())


def _expected_counts(calls: list[dict[str, torch.Tensor]], site: str) -> tuple[Counter, int]:
    """Top-k channels of `site` counted over the samples' conditional rows (the second half
    of each [uncond, cond] CFG call; skip-layer calls are no samples), from the block's own
    outputs (|mean over tokens|, as the recording computes it)."""
    counts: Counter = Counter()
    rows = 0
    for call in calls:
        if site in call and call[site].shape[0] == 4:
            stat = call[site][2:].mean(dim=1, dtype=torch.float32).abs()  # (B, D)
            counts.update(stat.topk(K, dim=-1).indices.flatten().tolist())
            rows += stat.shape[0]
    return counts, rows


@pytest.mark.parametrize("site", ["transformer_blocks.0", SKIPPED, "transformer_blocks.2"])
def test_top_channels_come_from_the_samples_conditional_rows(found, site):
    result, calls = found
    info = result.summary()["sites"][site]
    counts, rows = _expected_counts(calls, site)
    consensus = info["top_channels"]
    assert len(consensus) == K
    assert [round(counts[c] / rows, 4) for c in consensus] == info["frequency_in_top_k"]
    # the k most frequent (ties at the k-th place may be taken in any order)
    others = [n for c, n in counts.items() if c not in consensus]
    assert min(counts[c] for c in consensus) >= max(others, default=0)
    assert all(isinstance(v, float) and math.isfinite(v) for v in info["ratio_to_median"] + info["top_value_mean"])
    for name in ("jaccard_across_prompts", "jaccard_across_steps", "median_mean"):
        assert isinstance(info[name], float) and math.isfinite(info[name]), name
    assert info["jaccard_across_seeds"] is None  # one seed: nothing to compare
    first_row = info["top_k_per_step_first_sample"]
    assert len(first_row) == 4 and all(channels is not None and len(channels) == K for channels in first_row)


def test_unconditional_and_guidance_rows_do_not_change_the_summary(found):
    """Every site's summary equals that of a recording of the samples' conditional rows
    alone (rows 2 and 3 of the [uncond, cond] call), laid out as a run without guidance."""
    result, _ = found
    cond = result.stats.rows([2, 3])
    cond.meta |= {"rows_per_call": [2], "calls_per_step": 1}
    cut = FindResult(stats=cond, config=result.config, images=result.images)
    assert bool(cut.stats.ran["img"].all())
    for site in result.stats.sites:
        want, got = cut.summary()["sites"][site], result.summary()["sites"][site]
        for name in (
            "top_channels",
            "frequency_in_top_k",
            "ratio_to_median",
            "top_value_mean",
            "median_mean",
            "jaccard_across_prompts",
            "jaccard_across_seeds",
            "jaccard_across_steps",
            "top_k_per_step_first_sample",
        ):
            assert got[name] == want[name], (site, name)


def test_non_finite_activations_where_a_block_ran_still_raise():
    """Absent entries are ignored; a NaN where the block ran is still an error."""
    from ditlens.core.checks import NonFiniteError

    pipe = _sd3_pipeline()
    block = pipe.transformer.transformer_blocks[2]
    handle = block.register_forward_hook(
        lambda m, a, o: (o[0], o[1] * float("nan")) if isinstance(o, tuple) else o * float("nan")
    )
    try:
        with pytest.raises(NonFiniteError, match="transformer_blocks.2"):
            find_channels(
                pipe,
                FindConfig(prompts=["a"], k=K, generation=GenerationSettings(2, 3.0, 16, 16)),
                prompt_kwargs={k: (v[:1] if isinstance(v, torch.Tensor) else v) for k, v in _prompt_kwargs(2).items()},
            )
    finally:
        handle.remove()


def test_a_call_that_skips_every_hooked_site_is_no_hook_failure():
    """Hooking only the block that skip-layer calls skip: in those calls no site hook runs,
    which without `skip_layers` would mean a model compiled before hooking (an error)."""
    tiny = tiny_sd3()
    pipe = _sd3_pipeline(tiny.transformer)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad(), hooks(pipe.transformer, record=True, sites=[SKIPPED]) as run:
        pipe.transformer(**tiny.make_inputs(2, gen), skip_layers=[1])  # filed when the next call starts
        pipe.transformer(**tiny.make_inputs(2, gen))
        pipe.transformer(**tiny.make_inputs(2, gen), skip_layers=[1])  # filed when the context closes
    stats = run.stats
    assert stats.sites == [SKIPPED]
    assert stats.num_steps == 1 and bool(stats.ran["img"].all())  # only the call that ran the block
    with torch.no_grad(), hooks(pipe.transformer, record=True, sites=[SKIPPED]):
        pipe.transformer(**tiny.make_inputs(2, gen), skip_layers=[])  # an empty list skips nothing: the block ran
