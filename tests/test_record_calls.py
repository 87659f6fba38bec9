"""Recording across transformer calls that differ: in token counts (Qwen-Image's CFG calls
with prompts of different lengths, a loop over resolutions) and in which blocks run (SD3's
skip-layer guidance). Every statistic is checked against plain forward hooks on the blocks.
"""

from __future__ import annotations

import pytest
import torch

import ditlens
from ditlens import RecordConfig
from ditlens.adapters import adapter_for

from .pipelines import tiny_sd3_pipeline
from .tiny_models import tiny_flux, tiny_sd3

STREAMS = RecordConfig(streams=("img", "txt"))


class _Clock:
    """A stand-in scheduler: ditlens counts steps by `set_timesteps` and `step` calls."""

    def __init__(self) -> None:
        self.timesteps: list[int] = []

    def set_timesteps(self, num_steps: int) -> None:
        self.timesteps = list(range(num_steps))

    def step(self) -> None:
        pass


class _Pipe:
    """Just enough of a pipeline for ditlens.hooks: a transformer and a scheduler, so that
    several transformer calls share one step as in a CFG pipeline."""

    def __init__(self, transformer: torch.nn.Module):
        self.transformer, self.scheduler = transformer, _Clock()


def _capture(transformer: torch.nn.Module) -> tuple[list[dict[str, tuple]], list]:
    """Plain hooks: per transformer call, each block that ran -> (img, txt) it returned."""
    adapter = adapter_for(transformer)
    calls: list[dict[str, tuple]] = []
    handles = [transformer.register_forward_pre_hook(lambda m, a: calls.append({}))]
    for site in adapter.sites():

        def keep(m, a, k, o, name=site.name):
            streams = adapter.split(o, a, k)
            calls[-1][name] = (streams.img.clone(), None if streams.txt is None else streams.txt.clone())

        handles.append(site.module.register_forward_hook(keep, with_kwargs=True))
    return calls, handles


def _statistics(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, N, D) -> each statistic over that call's own N tokens, (B, D)."""
    return {"abs_mean": x.mean(1).abs(), "mean_abs": x.abs().mean(1), "max_abs": x.abs().amax(1)}


def _expected(calls: list[dict[str, tuple]], steps: list[list[int]], sites: list[str], stream: int) -> dict:
    """statistic -> (steps, sites, rows, D): per step its calls' rows in call order; NaN rows
    where a block did not run in a call, or a step made fewer calls than the longest step."""
    rows = [calls[c][sites[0]][0].shape[0] for c in max(steps, key=len)]
    D = next(iter(calls[0].values()))[0].shape[-1]
    out = {}
    for statistic in ("abs_mean", "mean_abs", "max_abs"):
        table = torch.full((len(steps), len(sites), sum(rows), D), float("nan"))
        for s, step_calls in enumerate(steps):
            start = 0
            for c, n_rows in zip(step_calls, rows):
                for i, site in enumerate(sites):
                    if site in calls[c] and calls[c][site][stream] is not None:
                        table[s, i, start : start + n_rows] = _statistics(calls[c][site][stream])[statistic]
                start += n_rows
        out[statistic] = table
    return out


def _assert_tables(stats: ditlens.ChannelStats, calls, steps: list[list[int]]) -> None:
    for stream, sites, tables in ((0, stats.sites, stats.img), (1, stats.txt_sites, stats.txt)):
        for statistic, want in _expected(calls, steps, sites, stream).items():
            got = tables[statistic]
            assert got.shape == want.shape, statistic
            assert torch.equal(got.isnan(), want.isnan()), statistic  # absent entries and only those
            where = f"{statistic}, {'img' if stream == 0 else 'txt'}"
            torch.testing.assert_close(
                got, want, rtol=1e-6, atol=1e-6, equal_nan=True, msg=lambda m, where=where: f"{where}: {m}"
            )


# ---- token counts that differ between calls ----------------------------------------------
def _flux_inputs(tiny, batch: int, grid: tuple[int, int], n_txt: int, generator: torch.Generator) -> dict:
    """tiny_flux's inputs at another image size (h x w tokens) and text length."""
    inputs = tiny.make_inputs(batch, generator)
    h, w = grid
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1], img_ids[..., 2] = torch.arange(h)[:, None], torch.arange(w)[None, :]
    img_dim, txt_dim = inputs["hidden_states"].shape[-1], inputs["encoder_hidden_states"].shape[-1]
    return inputs | {
        "hidden_states": torch.randn(batch, h * w, img_dim, generator=generator),
        "img_ids": img_ids.reshape(h * w, 3),
        "encoder_hidden_states": torch.randn(batch, n_txt, txt_dim, generator=generator),
        "txt_ids": torch.zeros(n_txt, 3),
    }


@pytest.fixture(scope="module")
def flux():
    return tiny_flux()


def test_calls_of_one_step_with_different_token_counts(flux):
    """Two calls per step (a CFG pipeline's cond and uncond calls, of 2 and 1 rows) with
    different text lengths and image sizes: each call's averages use its own token counts."""
    transformer, gen = flux.transformer, torch.Generator().manual_seed(5)
    pipe = _Pipe(transformer)
    per_call = [(2, (4, 4), 7), (1, (2, 3), 3)]  # (rows, image grid, text tokens)
    calls, handles = _capture(transformer)
    try:
        with torch.no_grad(), ditlens.hooks(pipe, record=STREAMS) as run:
            pipe.scheduler.set_timesteps(2)
            for _ in range(2):
                for rows, grid, n_txt in per_call:
                    transformer(**_flux_inputs(flux, rows, grid, n_txt, gen))
                pipe.scheduler.step()
    finally:
        for h in handles:
            h.remove()
    stats = run.stats
    assert stats.meta["rows_per_call"] == [2, 1] and stats.meta["calls_per_step"] == 2
    _assert_tables(stats, calls, [[0, 1], [2, 3]])
    assert bool(stats.ran["img"].all()) and bool(stats.ran["txt"].all())


def test_steps_with_different_token_counts(flux):
    """A bare transformer called at two image sizes and text lengths: one call per step."""
    transformer, gen = flux.transformer, torch.Generator().manual_seed(6)
    calls, handles = _capture(transformer)
    try:
        with torch.no_grad(), ditlens.hooks(transformer, record=STREAMS) as run:
            for grid, n_txt in (((4, 4), 5), ((2, 2), 9)):
                transformer(**_flux_inputs(flux, 2, grid, n_txt, gen))
    finally:
        for h in handles:
            h.remove()
    _assert_tables(run.stats, calls, [[0], [1]])


# ---- blocks that do not run in a call: SD3's skip layers ---------------------------------
@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3()


def test_skipped_block_is_absent_from_the_calls_it_skipped(sd3, tmp_path):
    """Step 0: one call; step 1: that call and a second one with block 1 skipped (as
    skip-layer guidance calls). Block 1's rows of the skipped call are NaN, not zero, and
    `ran` says so; everything else matches the plain hooks."""
    transformer, gen = sd3.transformer, torch.Generator().manual_seed(8)
    pipe = _Pipe(transformer)
    calls, handles = _capture(transformer)
    try:
        with torch.no_grad(), ditlens.hooks(pipe, record=STREAMS) as run:
            pipe.scheduler.set_timesteps(2)
            transformer(**sd3.make_inputs(2, gen))
            pipe.scheduler.step()
            transformer(**sd3.make_inputs(2, gen))
            transformer(**sd3.make_inputs(1, gen), skip_layers=[1])
            pipe.scheduler.step()
    finally:
        for h in handles:
            h.remove()
    assert "transformer_blocks.1" not in calls[2]  # diffusers did skip it
    stats = run.stats
    assert stats.meta["rows_per_call"] == [2, 1] and stats.meta["calls_per_step"] == 2
    _assert_tables(stats, calls, [[0], [1, 2]])
    ran = torch.ones(2, 3, 3, dtype=torch.bool)
    ran[0, :, 2] = False  # step 0 made no second call
    ran[1, 1, 2] = False  # block 1 skipped in it
    assert torch.equal(stats.ran["img"], ran)
    # averaged over the calls where it ran, the skipped block's statistic is that of the one call that ran it
    block = stats["mean_abs", "transformer_blocks.1"][1]  # (rows, D) of step 1
    torch.testing.assert_close(block.nanmean(0), calls[1]["transformer_blocks.1"][0].abs().mean(1).mean(0))
    loaded = ditlens.ChannelStats.load(stats.save(tmp_path / "stats.safetensors"))
    assert torch.equal(loaded.ran["img"], ran)
    assert torch.equal(loaded.img["max_abs"].isnan(), ~ran[..., None].expand_as(loaded.img["max_abs"]))


def test_sd3_pipeline_with_skip_layer_guidance_records():
    """The real StableDiffusion3Pipeline: the skip-layer call runs in some steps only."""
    tiny = tiny_sd3()
    pipe = tiny_sd3_pipeline(tiny.transformer)
    gen = torch.Generator().manual_seed(9)
    embeds = dict(  # precomputed prompt embeddings stand in for the text encoders
        prompt_embeds=torch.randn(1, 5, 24, generator=gen),
        pooled_prompt_embeds=torch.randn(1, 16, generator=gen),
        negative_prompt_embeds=torch.randn(1, 5, 24, generator=gen),
        negative_pooled_prompt_embeds=torch.randn(1, 16, generator=gen),
    )
    calls, handles = _capture(pipe.transformer)
    try:
        with ditlens.hooks(pipe, record=STREAMS) as run:
            pipe(
                **embeds,
                height=16,
                width=16,
                num_inference_steps=4,
                guidance_scale=3.0,
                skip_guidance_layers=[1],
                skip_layer_guidance_start=0.0,
                skip_layer_guidance_stop=0.6,  # the skip-layer call in steps 1 and 2 (0 < i < 2.4)
                output_type="pt",
                generator=torch.Generator().manual_seed(0),
            )
    finally:
        for h in handles:
            h.remove()
    assert len(calls) == 6
    _assert_tables(run.stats, calls, [[0], [1, 2], [3, 4], [5]])
