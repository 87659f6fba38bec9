"""Adapters on tiny random instances of the real diffusers classes: where the blocks are,
how a block output splits into img/txt, and that merging gives the block's own format back."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from ditlens.adapters import (
    ADAPTERS,
    Adapter,
    Site,
    Streams,
    UnsupportedModelError,
    adapter_for,
    supported_classes,
)
from ditlens.adapters.flux import FluxAdapter
from ditlens.adapters.flux2 import Flux2Adapter
from ditlens.adapters.qwenimage import QwenImageAdapter
from ditlens.adapters.sana import SanaAdapter
from ditlens.adapters.sd3 import SD3Adapter

from .tiny_models import TinyModel, tiny_model

B = 2
D = 32  # hidden size of every tiny model
EXPECTED = {  # name -> (adapter, site names in forward order)
    "flux": (
        FluxAdapter,
        ["transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0", "single_transformer_blocks.1"],
    ),
    "flux2": (
        Flux2Adapter,
        ["transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0", "single_transformer_blocks.1"],
    ),
    "qwenimage": (QwenImageAdapter, ["transformer_blocks.0", "transformer_blocks.1"]),
    "sana": (SanaAdapter, ["transformer_blocks.0", "transformer_blocks.1"]),
    "sd3": (SD3Adapter, ["transformer_blocks.0", "transformer_blocks.1", "transformer_blocks.2"]),
}


@pytest.fixture(params=list(EXPECTED))
def tiny(request) -> TinyModel:
    return _cached_tiny_model(request.param)


@functools.cache
def _cached_tiny_model(name: str) -> TinyModel:
    return tiny_model(name)  # read-only in these tests, so one build per family is enough


def _inputs(tiny: TinyModel) -> dict:
    return tiny.make_inputs(B, torch.Generator().manual_seed(1))


def _forward(
    tiny: TinyModel, adapter: Adapter, site_hook: Callable | None = None, sites: list[Site] | None = None
) -> torch.Tensor:
    """One forward. With `site_hook(site, output, args, kwargs)`, it runs on the output of each of `sites`
    (default: all) and may return a replacement output, as ditlens' hooks do."""
    if site_hook is None:
        sites = []
    elif sites is None:
        sites = adapter.sites()
    handles = []
    try:
        for site in sites:

            def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any, site=site) -> Any:
                return site_hook(site, output, args, kwargs)

            handles.append(site.module.register_forward_hook(hook, with_kwargs=True))
        with torch.no_grad():
            return tiny.transformer(**_inputs(tiny)).sample
    finally:
        for handle in handles:
            handle.remove()


def _look(fn: Callable) -> Callable:
    """A site hook that only looks: calls `fn(site, output, args, kwargs)` and returns None."""

    def hook(site, output, args, kwargs) -> None:
        fn(site, output, args, kwargs)

    return hook


def _same(a: Any, b: Any) -> bool:
    """Same structure, and every tensor equal bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, tuple) or isinstance(b, tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b


# ---- every family --------------------------------------------------------------------------
def test_sites_follow_the_module_tree(tiny: TinyModel):
    adapter = adapter_for(tiny.transformer)
    adapter_cls, names = EXPECTED[tiny.name]
    assert type(adapter) is adapter_cls
    sites = adapter.sites()
    n_blocks = sum(len(getattr(tiny.transformer, name, [])) for name in adapter.block_lists)
    assert len(sites) == n_blocks == len(names)
    assert [s.name for s in sites] == names
    assert [s.index for s in sites] == list(range(len(sites)))
    assert all(s.module is tiny.transformer.get_submodule(s.name) for s in sites)
    assert adapter.hidden_size == D


def test_split_shapes(tiny: TinyModel):
    adapter = adapter_for(tiny.transformer)
    seen: dict[str, Streams] = {}
    _forward(tiny, adapter, _look(lambda s, o, a, k: seen.setdefault(s.name, adapter.split(o, a, k))))
    assert list(seen) == EXPECTED[tiny.name][1]
    for name, streams in seen.items():
        assert streams.img.shape == (B, tiny.n_img_tokens, D), name
        text_free = tiny.name == "sana" or (tiny.name == "sd3" and name == "transformer_blocks.2")
        if text_free:
            assert streams.txt is None, name
        else:
            assert streams.txt.shape == (B, tiny.n_txt_tokens, D), name


def test_merge_of_split_is_bit_identical(tiny: TinyModel):
    adapter = adapter_for(tiny.transformer)
    baseline = _forward(tiny, adapter)
    checked = []

    def roundtrip(site, out, args, kwargs):
        merged = adapter.merge(out, args, kwargs, adapter.split(out, args, kwargs))
        assert _same(merged, out), site.name
        checked.append(site.name)
        return merged  # hand the rebuilt output on: the parent model must not notice

    assert torch.equal(_forward(tiny, adapter, roundtrip), baseline)
    assert checked == EXPECTED[tiny.name][1]


def test_replacing_img_changes_the_output_at_every_site(tiny: TinyModel):
    adapter = adapter_for(tiny.transformer)
    baseline = _forward(tiny, adapter)
    for target in adapter.sites():

        def replace(site, out, args, kwargs, target=target):
            streams = adapter.split(out, args, kwargs)  # at every site, as the hooks do
            if site.name != target.name:
                return None
            img = torch.randn(streams.img.shape, generator=torch.Generator().manual_seed(2))
            return adapter.merge(out, args, kwargs, Streams(img=img, txt=streams.txt))

        out = _forward(tiny, adapter, replace)
        assert out.shape == baseline.shape
        assert not torch.allclose(out, baseline), target.name


def test_unsupported_model_lists_supported_classes():
    with pytest.raises(UnsupportedModelError) as info:
        adapter_for(nn.Linear(2, 2))
    message = str(info.value)
    assert "Linear" in message
    for name in (
        "FluxTransformer2DModel",
        "Flux2Transformer2DModel",
        "QwenImageTransformer2DModel",
        "SanaTransformer2DModel",
        "SD3Transformer2DModel",
    ):
        assert name in message
        assert name in supported_classes()
    assert len(ADAPTERS) == 5


def test_pipeline_like_object_resolves_to_its_transformer():
    tiny = tiny_model("sana")
    pipe = type("Pipe", (), {"transformer": tiny.transformer})()
    assert adapter_for(pipe).transformer is tiny.transformer


def test_block_output_layout_agrees_with_diffusers_own_registry(tiny: TinyModel):
    """Each adapter's `block_output` says what diffusers' hook registry says of the family's
    block classes (where it registers them), so the layout is read the way diffusers reads it."""
    registry = pytest.importorskip("diffusers.hooks._helpers").TransformerBlockRegistry
    adapter = adapter_for(tiny.transformer)
    checked = 0
    for site in adapter.sites():
        try:
            metadata = registry.get(type(site.module))
        except ValueError:  # a block class diffusers does not register (SANA's)
            continue
        if tiny.name == "flux2" and site.name.startswith("single_"):
            continue  # registered as returning the joint sequence: Flux2Adapter.split reads it itself
        assert metadata.return_hidden_states_index == adapter.block_output.img, site.name
        assert metadata.return_encoder_hidden_states_index == adapter.block_output.txt, site.name
        checked += 1
    assert checked or tiny.name == "sana"


# ---- family specifics ------------------------------------------------------------------------
def test_flux2_single_blocks_return_the_joint_sequence():
    tiny = tiny_model("flux2")
    adapter = adapter_for(tiny.transformer)
    outputs: dict[str, Any] = {}
    _forward(tiny, adapter, _look(lambda s, o, a, k: outputs.setdefault(s.name, o)))
    assert isinstance(outputs["transformer_blocks.1"], tuple)
    joint = outputs["single_transformer_blocks.0"]
    assert isinstance(joint, torch.Tensor)
    assert joint.shape == (B, tiny.n_txt_tokens + tiny.n_img_tokens, D)


def test_flux2_single_blocks_alone_need_the_text_length():
    tiny = tiny_model("flux2")
    adapter = adapter_for(tiny.transformer)
    singles = [s for s in adapter.sites() if s.name.startswith("single_")]
    split = _look(lambda s, o, a, k: adapter.split(o, a, k))
    with pytest.raises(RuntimeError, match="text length"):
        _forward(tiny, adapter, split, sites=singles)

    # with the transformer's forward inputs passed on, single blocks split on their own
    adapter = adapter_for(tiny.transformer)
    seen: dict[str, Streams] = {}
    handle = tiny.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: adapter.on_transformer_call(args, kwargs), with_kwargs=True
    )
    try:
        _forward(
            tiny, adapter, _look(lambda s, o, a, k: seen.setdefault(s.name, adapter.split(o, a, k))), sites=singles
        )
    finally:
        handle.remove()
    for streams in seen.values():
        assert streams.img.shape == (B, tiny.n_img_tokens, D)
        assert streams.txt.shape == (B, tiny.n_txt_tokens, D)


def test_flux2_single_block_called_with_split_or_text_seq_len():
    tiny = tiny_model("flux2")
    adapter = adapter_for(tiny.transformer)
    block = tiny.transformer.single_transformer_blocks[0]
    captured: dict[str, Any] = {}

    def capture(s, o, a, k):
        if s.module is block:
            captured.update(kwargs=k, out=o)
        adapter.split(o, a, k)

    _forward(tiny, adapter, _look(capture))
    kwargs, joint = captured["kwargs"], captured["out"]
    reference = adapter.split(joint, (), kwargs)

    fresh = adapter_for(tiny.transformer)  # knows nothing about the forward call
    n_txt = tiny.n_txt_tokens
    with torch.no_grad():
        as_tuple = block(**{**kwargs, "split_hidden_states": True, "text_seq_len": n_txt})
        as_joint = block(**{**kwargs, "text_seq_len": n_txt})
    assert isinstance(as_tuple, tuple)
    for out, kw in ((as_tuple, {}), (as_joint, {"text_seq_len": n_txt})):
        streams = fresh.split(out, (), {**kwargs, **kw})
        assert torch.equal(streams.img, reference.img) and torch.equal(streams.txt, reference.txt)
        assert _same(fresh.merge(out, (), {**kwargs, **kw}, streams), out)


def test_sd3_last_block_is_context_pre_only():
    tiny = tiny_model("sd3")
    adapter = adapter_for(tiny.transformer)
    blocks = tiny.transformer.transformer_blocks
    assert blocks[-1].context_pre_only and blocks[0].use_dual_attention
    outputs: dict[str, Any] = {}
    _forward(tiny, adapter, _look(lambda s, o, a, k: outputs.setdefault(s.name, o)))
    txt, img = outputs["transformer_blocks.2"]
    assert txt is None and img.shape == (B, tiny.n_img_tokens, D)
    assert adapter.merge(outputs["transformer_blocks.2"], (), {}, Streams(img=img, txt=None)) == (None, img)


def test_sana_blocks_return_tokens_not_feature_maps():
    tiny = tiny_model("sana")
    adapter = adapter_for(tiny.transformer)
    assert not hasattr(tiny.transformer, "inner_dim")  # why Adapter.hidden_size reads the config
    outputs: dict[str, Any] = {}
    _forward(tiny, adapter, _look(lambda s, o, a, k: outputs.setdefault(s.name, o)))
    for out in outputs.values():
        assert isinstance(out, torch.Tensor) and out.shape == (B, tiny.n_img_tokens, D)
