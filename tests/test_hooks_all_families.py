"""The hooks context on tiny random instances of all five supported transformer classes:
look-only parity, statistics against a direct computation, cleanup, targeted edits."""

from __future__ import annotations

import pytest
import torch

import ditlens
from ditlens import Fixed, Scope, ZeroChannels
from ditlens.adapters import adapter_for

from .tiny_models import tiny_model

FAMILIES = ["flux", "flux2", "qwenimage", "sana", "sd3"]


def _output(out):
    return out.sample if hasattr(out, "sample") else out[0]


@pytest.mark.parametrize("name", FAMILIES)
def test_parity_statistics_cleanup_and_edits(name):
    tiny = tiny_model(name)
    model = tiny.transformer.eval()
    inputs = tiny.make_inputs(2, torch.Generator().manual_seed(1))
    adapter = adapter_for(model)
    sites = adapter.sites()

    with torch.no_grad():
        plain = _output(model(**inputs))

    # capture each block's image stream with plain hooks (registered after ditlens' hooks)
    captured: dict[str, torch.Tensor] = {}
    with torch.no_grad(), ditlens.hooks(model, record=True) as run:
        handles = [
            s.module.register_forward_hook(
                lambda m, a, k, o, s=s: captured.__setitem__(s.name, adapter.split(o, a, k).img.clone()),
                with_kwargs=True,
            )
            for s in sites
        ]
        try:
            hooked = _output(model(**inputs))
        finally:
            for h in handles:
                h.remove()
    assert torch.equal(plain, hooked)  # look-only hooks change nothing, bit for bit
    stats = run.stats
    assert stats.sites == [s.name for s in sites]
    for s in sites:
        img = captured[s.name]
        assert img.shape == (2, tiny.n_img_tokens, adapter.hidden_size)
        torch.testing.assert_close(stats["abs_mean", s.name][0], img.mean(1).abs(), rtol=0, atol=1e-6)
        torch.testing.assert_close(stats["max_abs", s.name][0], img.abs().amax(1), rtol=0, atol=0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())

    # an edit at one site changes exactly the targeted rows, tokens and channels there
    site = sites[len(sites) // 2]
    tokens = torch.zeros(tiny.n_img_tokens)
    tokens[:3] = 1
    edit = ZeroChannels(Fixed((1, 5)), tokens=tokens, scope=Scope(sites=(site.name,), rows=(0,)))
    after: dict[str, torch.Tensor] = {}
    with torch.no_grad(), ditlens.hooks(model, edits=[edit]):
        h = site.module.register_forward_hook(
            lambda m, a, k, o: after.__setitem__("img", adapter.split(o, a, k).img.clone()), with_kwargs=True
        )
        try:
            edited = _output(model(**inputs))
        finally:
            h.remove()
    before = captured[site.name]
    expected = torch.zeros_like(before, dtype=torch.bool)
    expected[0, :3][:, [1, 5]] = True
    assert torch.equal(before != after["img"], expected & (before != 0))
    assert not torch.equal(plain, edited)
