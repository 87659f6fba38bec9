"""The token grid each adapter reads from a transformer call's own inputs (the latent the
pipeline made, not the size asked for), the refusal of image streams that carry reference
tokens besides the generated image's, and SANA generating at the size asked."""

from __future__ import annotations

import pytest
import torch

from ditlens.adapters import ExtraImageTokensError, UnsupportedModelError, adapter_for
from ditlens.core.hooks import hooks

from .full_pipelines import pipeline_folder
from .tiny_models import tiny_flux, tiny_flux2, tiny_qwenimage, tiny_sana, tiny_sd3


def _flux_ids(rows: int, cols: int, axis0: float = 0.0) -> torch.Tensor:
    ids = torch.zeros(rows, cols, 3)
    ids[..., 0] = axis0
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)


def test_flux_grid_from_img_ids_and_kontext_reference_tokens_refused():
    adapter = adapter_for(tiny_flux().transformer)
    hidden = torch.zeros(1, 8, 4)
    assert adapter.token_grid((), {"hidden_states": hidden, "img_ids": _flux_ids(2, 4)}) == (2, 4)
    # FluxKontextPipeline: the reference's tokens appended, their ids with axis 0 = 1
    kontext = torch.cat([_flux_ids(2, 4), _flux_ids(2, 4, axis0=1.0)])
    with pytest.raises(ExtraImageTokensError, match="holds 16 tokens, of which the generated image is 8"):
        adapter.token_grid((), {"hidden_states": torch.zeros(1, 16, 4), "img_ids": kontext})
    # ids that lay out no grid (a caller's own): no grid, the image size decides
    assert adapter.token_grid((), {"hidden_states": hidden, "img_ids": torch.zeros(8, 3)}) is None


def test_flux2_grid_from_its_four_axis_ids():
    adapter = adapter_for(tiny_flux2().transformer)
    h, w = torch.meshgrid(torch.arange(3), torch.arange(5), indexing="ij")
    ids = torch.stack([torch.zeros_like(h), h, w, torch.zeros_like(h)], dim=-1).reshape(1, 15, 4)
    assert adapter.token_grid((), {"hidden_states": torch.zeros(1, 15, 4), "img_ids": ids}) == (3, 5)
    reference = ids.clone()
    reference[..., 0] = 10  # klein's reference images: t offset by 10
    with pytest.raises(ExtraImageTokensError):
        adapter.token_grid((), {"hidden_states": torch.zeros(1, 30, 4), "img_ids": torch.cat([ids, reference], dim=1)})


def test_qwenimage_grid_from_img_shapes_and_edit_condition_refused():
    adapter = adapter_for(tiny_qwenimage().transformer)
    assert adapter.token_grid((), {"hidden_states": torch.zeros(2, 12, 4), "img_shapes": [[(1, 3, 4)]] * 2}) == (3, 4)
    edit = [[(1, 3, 4), (1, 3, 4)]] * 2  # QwenImageEditPipeline: the condition image's latents after the noisy ones
    with pytest.raises(ExtraImageTokensError):
        adapter.token_grid((), {"hidden_states": torch.zeros(2, 24, 4), "img_shapes": edit})


@pytest.mark.parametrize("build", [tiny_sana, tiny_sd3], ids=["sana", "sd3"])
def test_unpacked_families_grid_from_the_latent_shape(build):
    tiny = build()
    adapter = adapter_for(tiny.transformer)
    p = int(tiny.transformer.config.patch_size)
    assert adapter.token_grid((torch.zeros(1, 4, 6 * p, 10 * p),), {}) == (6, 10)


def test_an_observer_sees_the_grid_and_reference_tokens_stop_the_run():
    """Through the hooks: the grid reaches HookContext; Kontext-like ids raise before any block runs."""
    tiny = tiny_flux()
    inputs = tiny.make_inputs(1, torch.Generator().manual_seed(0))
    seen = []
    with torch.no_grad(), hooks(tiny.transformer, observers=[lambda img, txt, ctx: seen.append(ctx.grid)]):
        tiny.transformer(**inputs)
    assert set(seen) == {(4, 4)}
    ids = inputs["img_ids"].clone()
    inputs |= {
        "hidden_states": torch.cat([inputs["hidden_states"]] * 2, dim=1),
        "img_ids": torch.cat([ids, ids + torch.tensor([1.0, 0, 0])]),
    }
    with (
        torch.no_grad(),
        hooks(tiny.transformer, observers=[lambda img, txt, ctx: None]),
        pytest.raises(ExtraImageTokensError),
    ):
        tiny.transformer(**inputs)


def test_edit_pipelines_are_refused_by_class():
    class FluxKontextPipeline:  # the class name is what decides; its transformer is a real FLUX one
        transformer = tiny_flux().transformer

    with pytest.raises(UnsupportedModelError, match="Unsupported pipeline 'FluxKontextPipeline'"):
        adapter_for(FluxKontextPipeline())


def test_sana_generates_at_the_size_asked(tmp_path_factory):
    """Resolution binning would run a 32x64 request at an aspect-ratio bin of 512 px and
    resize; ditlens switches it off, so the transformer sees the latent of 32x64."""
    from ditlens.generation import GenerationSettings, generate
    from ditlens.models import load_pipeline

    pipe = load_pipeline(str(pipeline_folder(tmp_path_factory, "sana")))
    shapes = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: shapes.append(tuple(k.get("hidden_states", a[0] if a else None).shape)), with_kwargs=True
    )
    try:
        images = generate(pipe, ["a red cube"], [0], GenerationSettings(num_inference_steps=2, height=32, width=64))
    finally:
        handle.remove()
    assert images.shape[-2:] == (32, 64)
    scale = pipe.vae_scale_factor
    assert {s[-2:] for s in shapes} == {(32 // scale, 64 // scale)}
