"""Captured CUDA graphs of edits, and the PerformanceConfig that says when: equal edits share
one graph, only the last few are kept, the switches reach every edit and observer, and (on a
GPU) a replayed edit gives the eager images bit for bit."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import ditlens.core.cuda_graphs as cuda_graphs
from ditlens.core.cuda_graphs import EditGraphs, _SharedEdits
from ditlens.core.hooks import HookContext, hooks
from ditlens.core.performance import DEFAULT_PERFORMANCE, PerformanceConfig
from ditlens.generation import GenerationSettings
from ditlens.transport import TransportConfig, _edits, transport_text

from .pipelines import TXT_DIM, flux_call_kwargs, tiny_flux_pipeline

SETTINGS = GenerationSettings(num_inference_steps=3, height=32, width=32)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


def transport_edit(k: int = 4, mask: str = "source", mask_image: torch.Tensor | None = None) -> Any:
    """The image stream's edit of a transport of prompt 0 into prompt 1 (2 prompts per call)."""
    return _edits(TransportConfig(k=k, mask=mask, streams="img"), [1.0], 1, 2, mask_image, (32, 32))[0]


def test_equal_edits_share_one_graph_owner_and_only_the_last_few_are_kept():
    """Equal settings find the edit that holds the graphs, other settings do not, a user's
    tensor mask is never shared, and only the last `keep` owners are kept."""
    shared, keep = _SharedEdits(), DEFAULT_PERFORMANCE.shared_graph_edits
    first = transport_edit()
    assert shared.find(first, keep).edit is first
    assert shared.find(transport_edit(), keep).edit is first  # equal settings, another object
    assert shared.find(transport_edit(k=8), keep).edit is not first
    user = transport_edit(mask="user", mask_image=torch.ones(32, 32))
    assert user.value_key() is None and shared.find(user, keep).edit is user
    for k in range(1, 1 + keep):
        shared.find(transport_edit(k=10 + k), keep)
    assert len(shared) == keep
    assert shared.find(transport_edit(), keep).edit is not first  # evicted: the least recently used


def test_performance_config_refuses_negative_limits():
    with pytest.raises(ValueError, match="graph_max_bytes must be >= 0"):
        PerformanceConfig(graph_max_bytes=-1)
    with pytest.raises(ValueError, match="shared_graph_edits must be >= 0"):
        PerformanceConfig(shared_graph_edits=-1)


def test_nothing_is_captured_off_cuda_or_when_switched_off():
    edit, img = transport_edit(), torch.randn(2, 16, 32)
    assert edit.graph_safe_for(img)  # TopK and the K = 2 mask are functions of img alone
    assert not EditGraphs(DEFAULT_PERFORMANCE).captures(edit, img)  # a CPU tensor
    if torch.cuda.is_available():
        on_gpu = img.cuda()
        assert EditGraphs(DEFAULT_PERFORMANCE).captures(edit, on_gpu)
        assert not EditGraphs(PerformanceConfig(cuda_graphs=False)).captures(edit, on_gpu)
        assert not EditGraphs(PerformanceConfig(graph_max_bytes=0)).captures(edit, on_gpu)


def test_the_hooks_pass_their_performance_config_to_every_edit_and_observer():
    """HookContext carries the context's config, so a token mask or an observer that makes K = 2
    masks (foreground_tokens(..., performance=ctx.performance)) follows the same switches."""
    pipe = tiny_flux_pipeline()
    config = PerformanceConfig(cuda_graphs=False, compile_clustering=False)
    seen: list[PerformanceConfig] = []

    class Looks:
        def applies(self, ctx: HookContext) -> bool:
            seen.append(ctx.performance)
            return False

    with hooks(pipe, edits=[Looks()], observers=[lambda img, txt, ctx: seen.append(ctx.performance)]) as run:
        pipe(**flux_call_kwargs(steps=1))
    assert run.performance is DEFAULT_PERFORMANCE and seen and set(seen) == {DEFAULT_PERFORMANCE}
    seen.clear()
    with hooks(pipe, edits=[Looks()], performance=config) as run:
        pipe(**flux_call_kwargs(steps=1))
    assert run.performance is config and seen and set(seen) == {config}


# ---- on a GPU ---------------------------------------------------------------------------------
def _embeds(rows: int) -> dict[str, torch.Tensor]:
    """Row 0 = prompt A, all other rows = prompt B (the same embedding)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 8, TXT_DIM, generator=gen)
    pa, pb = torch.randn(2, 1, TXT_DIM, generator=gen)
    return {
        "prompt_embeds": torch.cat([a] + [b] * (rows - 1)).cuda(),
        "pooled_prompt_embeds": torch.cat([pa] + [pb] * (rows - 1)).cuda(),
    }


def _transported(pipe: Any, config: TransportConfig, performance: PerformanceConfig, mask_image: Any) -> torch.Tensor:
    """`transport_text(..., alphas=[0.5, 1.0])`'s batch [A, B, B at 0.5, B at 1.0] under `performance`."""
    edits = _edits(config, [0.5, 1.0], 2, 4, mask_image, (32, 32))
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 2, 2, 2)]
    with hooks(pipe, edits=edits, performance=performance):
        return pipe(**_embeds(4), generator=generators, output_type="pt", **SETTINGS.kwargs(pipe, 4, {})).images


@needs_cuda
@pytest.mark.parametrize(
    "mask, streams", [("all", "img"), ("source", "img"), ("union", "img"), ("user", "img"), ("source", "both")]
)
def test_cuda_graph_of_the_edit_gives_the_eager_images(mask, streams, monkeypatch):
    """On CUDA a small block output's edit is captured once per shape and replayed at every
    site and step: the same kernels, so the same images bit for bit. An equal edit of a later
    context replays the first one's graph; a user's tensor mask cannot be told equal."""
    cuda_graphs.release_graphs()  # no graph from an earlier test
    pipe = tiny_flux_pipeline().to("cuda")
    captured: list[str] = []
    capture = cuda_graphs._capture
    monkeypatch.setattr(
        cuda_graphs, "_capture", lambda fn, *rest: captured.append(fn.__qualname__) or capture(fn, *rest)
    )
    user_mask = torch.zeros(32, 32)
    user_mask[:, :16] = 1
    config = TransportConfig(k=4, mask=mask, streams=streams, generation=SETTINGS)
    mask_image = user_mask if mask == "user" else None
    edits = 2 if streams == "both" else 1  # the text stream's edit is captured on its own shape

    def edit_captures() -> int:
        return sum(name.startswith("EditGraphs.apply") for name in captured)

    graphed = _transported(pipe, config, DEFAULT_PERFORMANCE, mask_image)
    assert edit_captures() == edits  # one shape: one capture per edit, replayed at 4 sites x 3 steps
    again = _transported(pipe, config, DEFAULT_PERFORMANCE, mask_image)
    assert edit_captures() == (2 if mask == "user" else edits)
    eager = _transported(pipe, config, PerformanceConfig(cuda_graphs=False), mask_image)
    assert edit_captures() == (2 if mask == "user" else edits)  # switched off: nothing captured
    assert torch.equal(graphed, eager) and torch.equal(again, eager)
    assert not torch.equal(graphed[2], graphed[1])  # the edit did act
    public = transport_text(
        pipe,
        "A",
        "B",
        config,
        alphas=[0.5, 1.0],
        source_seed=1,
        target_seed=2,
        prompt_embeds=_embeds(4),
        mask_image=mask_image,
    )
    assert torch.equal(public.transported, eager[2:].cpu())  # the public call, graphed by default


@needs_cuda
def test_release_graphs_frees_the_shared_edits():
    cuda_graphs.release_graphs()
    pipe = tiny_flux_pipeline().to("cuda")
    config = TransportConfig(k=4, mask="all", streams="img", generation=SETTINGS)
    _transported(pipe, config, DEFAULT_PERFORMANCE, None)
    assert len(cuda_graphs._SHARED_EDITS) == 1
    cuda_graphs.release_graphs()
    assert len(cuda_graphs._SHARED_EDITS) == 0
