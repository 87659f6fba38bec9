"""Which rows are which (`ditlens.core.rows`), checked against layouts written out by hand, and
a recording of several pipeline runs (seeds) with skip-layer guidance, whose steps make
different numbers of calls (this failed in `record._layout` before runs were kept apart)."""

from __future__ import annotations

import pytest
import torch

from ditlens.config import GenerationSettings
from ditlens.core.rows import COND, GUIDANCE, UNCOND, RowLayout, RowLayoutError, call_roles, conditional_slice
from ditlens.find import FindConfig, find_channels

from .test_find_absent import _prompt_kwargs, _sd3_pipeline


@pytest.mark.parametrize(
    "rows_per_call, prompts, roles",
    [
        ([2], 2, [[COND, COND]]),  # no guidance
        ([4], 2, [[UNCOND, UNCOND, COND, COND]]),  # SD3, SANA, built-in: torch.cat([negative, positive])
        ([2, 2], 2, [[COND, COND], [UNCOND, UNCOND]]),  # FLUX.1/Qwen-Image true CFG, FLUX.2 klein: cond call first
        ([4, 2], 2, [[UNCOND, UNCOND, COND, COND], [GUIDANCE, GUIDANCE]]),  # SD3 skip-layer guidance
        ([1, 1], 1, [[COND], [UNCOND]]),
        ([2], 1, [[UNCOND, COND]]),
    ],
)
def test_call_roles(rows_per_call, prompts, roles):
    assert call_roles(rows_per_call, prompts) == roles


def test_a_batch_that_fits_no_layout_is_refused_with_the_numbers():
    with pytest.raises(RowLayoutError, match=r"call 0 of a step has 6 rows, but 2 prompt\(s\) make 2 rows .* or 4"):
        call_roles([6], 2)


@pytest.mark.parametrize(
    "step_calls, prompts, expected",
    [
        ((2,), 2, slice(0, 2)),
        ((4,), 2, slice(2, 4)),
        ((2, 2), 2, None),  # the unconditional call
        ((4, 2), 2, None),  # the skip-layer call
        ((3, 3), 3, None),
        ((6,), 3, slice(3, 6)),
    ],
)
def test_conditional_slice_of_the_latest_call(step_calls, prompts, expected):
    assert conditional_slice(step_calls, prompts) == expected


def test_sample_rows_and_labels_of_two_runs():
    # two seeds of SD3 with skip-layer guidance and 2 prompts: per run [u0 u1 c0 c1 | g0 g1]
    layout = RowLayout((4, 2), prompts=2, runs=2)
    assert layout.sample_rows() == [2, 3, 8, 9]
    labels = layout.labels()
    assert len(labels) == 12
    assert labels[8] == {"run": 1, "call": 0, "role": COND, "prompt": 0}
    assert labels[5] == {"run": 0, "call": 1, "role": GUIDANCE, "prompt": 1}
    # two-call true CFG, 3 prompts, 2 runs: [c0 c1 c2 | u0 u1 u2] per run
    assert RowLayout((3, 3), prompts=3, runs=2).sample_rows() == [0, 1, 2, 6, 7, 8]


def test_find_over_two_seeds_with_skip_layer_guidance_reads_each_samples_conditional_row():
    """Two seeds in one recording: the rows are run after run; each sample's statistics are
    those of its own seed's run alone."""
    pipe = _sd3_pipeline()
    kwargs = _prompt_kwargs(2)
    config = dict(prompts=["a", "b"], k=4, generation=GenerationSettings(4, 3.0, 16, 16))
    both = find_channels(pipe, FindConfig(seeds=[0, 1], **config), prompt_kwargs=kwargs)
    assert both.stats.meta["runs"] == 2 and both.stats.meta["rows_per_call"] == [4, 2]
    assert both.stats.num_rows == 12
    samples = both.samples
    assert samples.num_rows == 4  # seeds x prompts
    for i, seed in enumerate([0, 1]):
        alone = find_channels(pipe, FindConfig(seeds=[seed], **config), prompt_kwargs=kwargs).samples
        torch.testing.assert_close(
            samples.img["abs_mean"][:, :, 2 * i : 2 * i + 2], alone.img["abs_mean"], rtol=0, atol=0
        )
    summary = both.summary()
    assert summary["layout"]["summary_rows"] == [2, 3, 8, 9]
    assert [label["role"] for label in summary["layout"]["row_labels"][:6]] == [
        UNCOND,
        UNCOND,
        COND,
        COND,
        GUIDANCE,
        GUIDANCE,
    ]


def test_the_samples_of_a_samples_view_are_the_view():
    from ditlens.core.record import ChannelStats

    table = torch.arange(2 * 1 * 12 * 3, dtype=torch.float32).view(2, 1, 12, 3)
    stats = ChannelStats(sites=["s"], img={"abs_mean": table}, meta={"rows_per_call": [4, 2], "runs": 2})
    samples = stats.samples(2)
    assert torch.equal(samples.img["abs_mean"], table[:, :, [2, 3, 8, 9]])
    assert torch.equal(samples.samples(2).img["abs_mean"], samples.img["abs_mean"])
