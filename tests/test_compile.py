"""Hooks under torch.compile: compiled and eager runs give the same statistics and outputs.

Hooks are registered BEFORE compiling, as a user would: `with hooks(t, ...): torch.compile(t)`.
The backend "eager" runs dynamo (which inlines the block hooks into the transformer's graph,
guards on what they read and replays their side effects) without a code generator, so the
tests stay fast on the CPU; the edit test uses "aot_eager", which also functionalises the
graph as inductor would (the edits write in place). Both are torch's own test backends.
"""

from __future__ import annotations

import pytest
import torch

from ditlens import RecordConfig, TopK, ZeroChannels, hooks

from .tiny_models import tiny_flux

dynamo = pytest.importorskip("torch._dynamo")
if not dynamo.is_dynamo_supported():
    pytest.skip("torch.compile is not supported on this platform", allow_module_level=True)

from torch._dynamo.utils import counters  # noqa: E402

STEPS = 2  # two transformer calls = two denoising steps: enough to see a per-step recompile


@pytest.fixture(scope="module")
def model():
    return tiny_flux()


@pytest.fixture(scope="module")
def steps(model):
    gen = torch.Generator().manual_seed(1)
    return [model.make_inputs(2, gen) for _ in range(STEPS)]


def run_steps(transformer, steps, compile_backend: str | None, **hook_kwargs):
    """Outputs and the HookedRun of one hooked run over all steps; compiled after hooking."""
    with torch.no_grad(), hooks(transformer, **hook_kwargs) as run:
        model = torch.compile(transformer, backend=compile_backend) if compile_backend else transformer
        outputs = [model(**s, return_dict=False)[0] for s in steps]
    return outputs, run


@pytest.fixture(scope="module")
def recorded(model, steps):
    """(eager outputs, eager stats, compiled outputs, compiled stats, graphs, graph breaks)."""
    eager_out, eager_run = run_steps(model.transformer, steps, None, record=RecordConfig(streams=("img", "txt")))
    dynamo.reset()
    counters.clear()
    try:
        compiled_out, compiled_run = run_steps(
            model.transformer, steps, "eager", record=RecordConfig(streams=("img", "txt"))
        )
        graphs = int(counters["stats"]["unique_graphs"])
        breaks = dict(counters["graph_break"])
    finally:
        dynamo.reset()
    return eager_out, eager_run.stats, compiled_out, compiled_run.stats, graphs, breaks


def test_compiled_recording_gives_the_same_statistics(recorded):
    _, eager, _, compiled, _, _ = recorded
    assert compiled.sites == eager.sites and compiled.txt_sites == eager.txt_sites
    for stream in ("img", "txt"):
        eager_tables, compiled_tables = getattr(eager, stream), getattr(compiled, stream)
        assert eager_tables.keys() == compiled_tables.keys()
        for statistic, table in eager_tables.items():
            assert compiled_tables[statistic].shape == table.shape == (STEPS, len(eager.sites), 2, 32)
            torch.testing.assert_close(compiled_tables[statistic], table, rtol=1e-5, atol=1e-6)


def test_compiled_recording_gives_the_same_outputs(recorded, model, steps):
    eager_out, _, compiled_out, _, _, _ = recorded
    with torch.no_grad():
        plain = [model.transformer(**s, return_dict=False)[0] for s in steps]
    for got, hooked, want in zip(compiled_out, eager_out, plain):
        assert torch.equal(hooked, want)  # eager look-only hooks: bit for bit
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_recording_hooks_do_not_graph_break(recorded):
    *_, breaks = recorded
    assert breaks == {}


def test_recording_compiles_once_for_all_steps(recorded):
    *_, graphs, _ = recorded
    assert graphs == 1


def test_compiled_edit_gives_the_same_output(model, steps):
    edit = ZeroChannels(TopK(4))
    eager_out, _ = run_steps(model.transformer, steps[:1], None, edits=[edit])
    dynamo.reset()
    try:
        compiled_out, _ = run_steps(model.transformer, steps[:1], "aot_eager", edits=[edit])
    finally:
        dynamo.reset()
    with torch.no_grad():
        plain = model.transformer(**steps[0], return_dict=False)[0]
    assert not torch.allclose(eager_out[0], plain)  # the edit did act
    torch.testing.assert_close(compiled_out[0], eager_out[0], rtol=1e-5, atol=1e-6)


def test_hooking_an_already_compiled_model_is_a_clear_error(model, steps):
    """dynamo does not guard on module hooks by default: a graph traced before hooking would
    silently skip them. ditlens notices the call in which no site hook ran."""
    dynamo.reset()
    try:
        compiled = torch.compile(model.transformer, backend="eager")
        with torch.no_grad():
            compiled(**steps[0], return_dict=False)  # traced without hooks
            with pytest.raises(RuntimeError, match=r"compiled \(torch.compile\) before ditlens.hooks"):
                with hooks(model.transformer, record=RecordConfig()):
                    compiled(**steps[0], return_dict=False)
    finally:
        dynamo.reset()
    assert not model.transformer._ditlens_hooked  # the context still cleaned up
