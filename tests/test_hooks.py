"""The hooks context on a real (tiny) FluxPipeline: parity, step indices, cleanup, edits."""

from __future__ import annotations

import pytest
import torch

import ditlens
from ditlens import RecordConfig, Scope, TopK, ZeroChannels
from ditlens.core.channels import Fixed

from .pipelines import flux_call_kwargs, tiny_flux_pipeline, tiny_flux_transformer


@pytest.fixture(scope="module")
def pipe():
    return tiny_flux_pipeline()


def _capture_outputs(transformer):
    """Plain forward hooks that keep every block's (txt, img) output, in call order."""
    captured: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    handles = []
    for list_name in ("transformer_blocks", "single_transformer_blocks"):
        for i, block in enumerate(getattr(transformer, list_name)):
            name = f"{list_name}.{i}"
            handles.append(
                block.register_forward_hook(
                    lambda m, a, o, name=name: captured.append((name, o[0].clone(), o[1].clone()))
                )
            )
    return captured, handles


def test_look_only_hooks_are_bit_identical(pipe):
    plain = pipe(**flux_call_kwargs()).images
    with ditlens.hooks(pipe, record=RecordConfig(keep_hidden=("transformer_blocks.1",))) as run:
        hooked = pipe(**flux_call_kwargs()).images
    assert torch.equal(plain, hooked)
    assert run.stats.num_steps == 3


def test_statistics_equal_direct_computation_and_steps_are_right(pipe):
    transformer = pipe.transformer
    captured, handles = _capture_outputs(transformer)
    try:
        with ditlens.hooks(pipe, record=RecordConfig(streams=("img", "txt"))) as run:
            pipe(**flux_call_kwargs(batch=2, steps=3))
    finally:
        for h in handles:
            h.remove()
    stats = run.stats
    sites = stats.sites
    assert sites == [
        "transformer_blocks.0",
        "transformer_blocks.1",
        "single_transformer_blocks.0",
        "single_transformer_blocks.1",
    ]
    assert stats.img["abs_mean"].shape == (3, 4, 2, transformer.inner_dim)
    assert len(captured) == 3 * len(sites)  # one call per step, blocks in order
    for n, (name, txt, img) in enumerate(captured):
        step, site = divmod(n, len(sites))
        assert sites[site] == name
        torch.testing.assert_close(stats.img["abs_mean"][step, site], img.mean(1).abs(), rtol=0, atol=1e-6)
        torch.testing.assert_close(stats.img["mean_abs"][step, site], img.abs().mean(1), rtol=0, atol=1e-6)
        torch.testing.assert_close(stats.img["max_abs"][step, site], img.abs().amax(1), rtol=0, atol=0)
        torch.testing.assert_close(stats.txt["abs_mean"][step, site], txt.mean(1).abs(), rtol=0, atol=1e-6)
    assert stats.meta["num_steps"] == 3 and stats.meta["rows_per_call"] == [2]


def test_true_cfg_keeps_one_step_index_and_both_halves(pipe):
    kwargs = flux_call_kwargs(batch=1, steps=2)
    gen = torch.Generator().manual_seed(7)
    kwargs |= dict(
        true_cfg_scale=2.0,
        negative_prompt_embeds=torch.randn(1, 8, 32, generator=gen),
        negative_pooled_prompt_embeds=torch.randn(1, 32, generator=gen),
    )
    with ditlens.hooks(pipe, record=True) as run:
        pipe(**kwargs)
    stats = run.stats
    assert stats.num_steps == 2
    assert stats.meta["calls_per_step"] == 2 and stats.num_rows == 2  # cond row, then uncond row
    assert not torch.equal(stats.img["abs_mean"][:, :, 0], stats.img["abs_mean"][:, :, 1])
    assert stats.txt == {} and stats.txt_sites == []  # the default records the image stream only


def test_no_hook_survives_the_context_even_after_an_exception(pipe):
    transformer, scheduler = pipe.transformer, pipe.scheduler
    with pytest.raises(ZeroDivisionError):
        with ditlens.hooks(pipe, record=True, edits=[ZeroChannels(TopK(2))]):
            raise ZeroDivisionError("inside the context")
    modules = [transformer, *transformer.modules()]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)
    assert "step" not in vars(scheduler) and "set_timesteps" not in vars(scheduler)
    with ditlens.hooks(pipe):  # hooking again works once the first context closed
        pass


def test_hooking_twice_is_an_error(pipe):
    with ditlens.hooks(pipe):
        with pytest.raises(RuntimeError, match="Already hooked"):
            with ditlens.hooks(pipe.transformer):
                pass


def test_edit_changes_exactly_the_targeted_entries():
    transformer = tiny_flux_transformer()
    gen = torch.Generator().manual_seed(3)
    inputs = dict(
        hidden_states=torch.randn(2, 16, 16, generator=gen),
        encoder_hidden_states=torch.randn(2, 8, 32, generator=gen),
        pooled_projections=torch.randn(2, 32, generator=gen),
        timestep=torch.tensor([0.5, 0.5]),
        img_ids=torch.zeros(16, 3),
        txt_ids=torch.zeros(8, 3),
    )
    site = "single_transformer_blocks.0"
    tokens = torch.zeros(16)
    tokens[:5] = 1
    edit = ZeroChannels(Fixed((1, 7)), tokens=tokens, scope=Scope(sites=(site,), rows=(1,)))

    def run(edits):
        captured = []
        with ditlens.hooks(transformer, edits=edits):
            # registered after ditlens' hook, so it sees the edited output
            h = transformer.single_transformer_blocks[0].register_forward_hook(lambda m, a, o: captured.append(o[1]))
            try:
                out = transformer(**inputs).sample
            finally:
                h.remove()
        return captured[0], out

    before, out_before = run([])
    after, out_after = run([edit])
    changed = before != after
    expected = torch.zeros_like(changed)
    expected[1, :5][:, [1, 7]] = True
    assert torch.equal(changed, expected & (before != 0))
    assert torch.all(after[1, :5][:, [1, 7]] == 0)
    assert not torch.equal(out_before, out_after)


def test_bad_inputs_get_clear_errors(pipe):
    D = pipe.transformer.inner_dim
    with pytest.raises(ValueError, match=r"Unknown site 'blocks\.99'.*transformer_blocks\.0"):
        with ditlens.hooks(pipe, sites=["blocks.99"]):
            pass
    with pytest.raises(ValueError, match=rf"k must be an integer in 1\.\.{D} \(the hidden size\); got 0"):
        with ditlens.hooks(pipe, edits=[ZeroChannels(TopK(0))]):
            pass
    with pytest.raises(ValueError, match=rf"got {D + 1}"):
        with ditlens.hooks(pipe, edits=[ZeroChannels(TopK(D + 1))]):
            pass
    with pytest.raises(ValueError, match=r"Step window \[2, 10\] is outside the schedule.*<= 3"):
        with ditlens.hooks(pipe, edits=[ZeroChannels(TopK(2), scope=Scope(step_window=(2, 10)))]):
            pipe(**flux_call_kwargs(steps=3))
    with pytest.raises(ditlens.UnsupportedModelError, match="FluxTransformer2DModel"):
        with ditlens.hooks(torch.nn.Linear(2, 2)):
            pass


def test_edit_only_in_the_last_step_still_changes_the_image(pipe):
    plain = pipe(**flux_call_kwargs(steps=3)).images
    edit = ZeroChannels(TopK(4), scope=Scope(step_window=(2, 3)))
    edited = ditlens.run_with_hooks(pipe, [edit], **flux_call_kwargs(steps=3)).images
    assert not torch.equal(plain, edited)


def test_run_with_cache_and_save_load_roundtrip(pipe, tmp_path):
    out, stats = ditlens.run_with_cache(pipe, **flux_call_kwargs())
    path = stats.save(tmp_path / "stats.safetensors")
    loaded = ditlens.ChannelStats.load(path)
    assert loaded.sites == stats.sites and loaded.txt_sites == stats.txt_sites and loaded.meta == stats.meta
    for key in stats.img:
        assert torch.equal(loaded.img[key], stats.img[key])
    assert stats["abs_mean", "transformer_blocks.1"].shape == (3, 2, pipe.transformer.inner_dim)
    with pytest.raises(ValueError, match="Unknown site"):
        stats["abs_mean", "nope"]
