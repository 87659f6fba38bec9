"""`image_to_latents` per family, on tiny random instances of the real diffusers pipelines
and VAEs (no text encoders: precomputed prompt embeddings; no download).

A random VAE cannot reproduce the reference image, so the tests check the layout and the
scaling instead: the latents have the shape of the pipeline's own `prepare_latents`, and
the pipeline's own decode path (unpack, un-normalise, `vae.decode`), run on them, hands the
VAE exactly the raw VAE latents `vae.encode(2x - 1)` (mode) and so gives the raw VAE round
trip as its image. Every VAE has non-trivial statistics (shift, scale, means, stds or
batch-norm running stats), so a wrong packing or scaling shows.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from diffusers import (
    AutoencoderKLFlux2,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Pipeline,
    QwenImagePipeline,
    SanaPipeline,
    StableDiffusion3Pipeline,
)
from torch import nn

from ditlens.adapters import adapter_for
from ditlens.adapters.flux2 import Flux2Adapter

from .full_components import dc_vae, kl_vae, qwen_vae
from .tiny_models import N_TXT, tiny_model

TXT_DIM, POOLED_DIM = 24, 16  # the tiny transformers' joint / caption and pooled widths
SIZES = [(32, 32), (32, 64), (64, 32)]  # (H, W): square and both non-square (SANA wants multiples of 32)


def _flux2(cls: type[Flux2KleinPipeline] | type[Flux2Pipeline]) -> Flux2KleinPipeline | Flux2Pipeline:
    """FLUX.2 klein or dev: the transformer's in_channels 8 are the VAE's 2 latent channels patchified 2x2."""
    vae = kl_vae(AutoencoderKLFlux2, latent_channels=2)
    g = torch.Generator().manual_seed(1)  # batch-norm statistics away from (0, 1)
    vae.bn.running_mean.copy_(torch.randn(vae.bn.num_features, generator=g) * 0.5)
    vae.bn.running_var.copy_(torch.rand(vae.bn.num_features, generator=g) * 2 + 0.3)
    return cls(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        transformer=tiny_model("flux2").transformer,
    )


def qwenimage() -> QwenImagePipeline:
    return QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=qwen_vae(latents_mean=[0.3, -0.2, 0.5, -0.7], latents_std=[1.7, 0.6, 2.5, 1.2]),  # 2x down
        text_encoder=None,
        tokenizer=None,
        transformer=tiny_model("qwenimage").transformer,  # in_channels 16 = 4 z_dim packed 2x2
    )


def sana() -> SanaPipeline:
    vae = dc_vae(
        (8, 16), attention_head_dim=4, scaling_factor=0.41, decoder_norm_types="rms_norm", decoder_act_fns="silu"
    )
    # SANA's own scheduler config: DPM-Solver++ in flow-matching sigmas
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
    return SanaPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=tiny_model("sana").transformer, scheduler=scheduler
    )


def sd3() -> StableDiffusion3Pipeline:
    # 4x down: 64 px is 16 latents, 8 patches (pos_embed_max_size)
    vae = kl_vae(widths=(8, 16, 16), shift_factor=0.3, scaling_factor=1.7)
    return StableDiffusion3Pipeline(
        transformer=tiny_model("sd3").transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def _embeds(b: int) -> dict[str, torch.Tensor]:
    return {"prompt_embeds": torch.randn(b, N_TXT, TXT_DIM, generator=torch.Generator().manual_seed(7))}


@dataclass(frozen=True)
class Family:
    build: Callable[[], Any]
    #: the pipeline's own prepare_latents for (batch, H, W): the latents it denoises
    prepare: Callable[[Any, int, int, int], torch.Tensor]
    #: raw VAE latents (mode) of images in [-1, 1], in the shape vae.decode takes
    raw: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    #: prompt arguments of one call with b rows, with guidance off
    prompt: Callable[[int], dict[str, Any]]
    #: the pipeline's decoded image from the raw VAE output, as output_type="pt" gives it
    image: Callable[[torch.Tensor], torch.Tensor] = lambda decoded: (decoded / 2 + 0.5).clamp(0, 1)


def _prepare(channels: Callable[[Any], int], first: bool = False) -> Callable[[Any, int, int, int], torch.Tensor]:
    def prepare(pipe: Any, b: int, height: int, width: int) -> torch.Tensor:
        out = pipe.prepare_latents(
            b, channels(pipe), height, width, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0)
        )
        return out[0] if first else out  # FLUX.2 returns (latents, latent_ids)

    return prepare


def _mode(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return vae.encode(x).latent_dist.mode()


FAMILIES: dict[str, Family] = {
    **{
        name: Family(
            functools.partial(_flux2, cls),
            _prepare(lambda p: p.transformer.config.in_channels // 4, first=True),
            _mode,
            lambda b: _embeds(b) | {"guidance_scale": 1.0},
        )
        for name, cls in (("flux2_klein", Flux2KleinPipeline), ("flux2_dev", Flux2Pipeline))
    },
    "qwenimage": Family(
        qwenimage,
        _prepare(lambda p: p.transformer.config.in_channels // 4),
        lambda vae, x: _mode(vae, x[:, :, None]),  # a one-frame video
        lambda b: _embeds(b) | {"prompt_embeds_mask": torch.ones(b, N_TXT, dtype=torch.long), "true_cfg_scale": 1.0},
        image=lambda decoded: (decoded[:, :, 0] / 2 + 0.5).clamp(0, 1),
    ),
    "sana": Family(
        sana,
        _prepare(lambda p: p.transformer.config.in_channels),
        lambda vae, x: vae.encode(x).latent,
        lambda b: (
            _embeds(b)
            | {"prompt_attention_mask": torch.ones(b, N_TXT), "guidance_scale": 1.0, "use_resolution_binning": False}
        ),
    ),
    "sd3": Family(
        sd3,
        _prepare(lambda p: p.transformer.config.in_channels),
        _mode,
        lambda b: _embeds(b) | {"pooled_prompt_embeds": torch.randn(b, POOLED_DIM), "guidance_scale": 1.0},
    ),
}


@functools.cache
def _pipe(name: str) -> Any:
    pipe = FAMILIES[name].build()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _images(n: int, height: int, width: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _latents_argument(pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    adapter = adapter_for(pipe)
    if isinstance(adapter, Flux2Adapter):
        return adapter.latents_argument(pipe, latents, height, width)
    return latents


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(FAMILIES))
def test_latents_have_the_layout_of_prepare_latents(name: str, size: tuple[int, int]):
    pipe, family = _pipe(name), FAMILIES[name]
    latents = adapter_for(pipe).image_to_latents(pipe, _images(2, *size))
    assert latents.shape == family.prepare(pipe, 2, *size).shape
    assert latents.dtype == pipe.vae.dtype and latents.device == pipe.vae.device
    assert torch.isfinite(latents).all() and latents.std() > 1e-3


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_pipelines_decode_inverts_image_to_latents(name: str, size: tuple[int, int]):
    """Run the pipeline itself (1 step) from `latents=` our latents, put them back as the
    step's result, and catch what its decode hands to `vae.decode`: the raw VAE latents."""
    pipe, family = _pipe(name), FAMILIES[name]
    x = _images(2, *size)
    latents = adapter_for(pipe).image_to_latents(pipe, x)
    with torch.no_grad():
        raw = family.raw(pipe.vae, x * 2 - 1)
        expected = family.image(pipe.vae.decode(raw, return_dict=False)[0])
    assert not torch.allclose(latents.flatten(), raw.flatten(), atol=1e-2)  # the pipeline's scaling is not identity

    seen: list[torch.Tensor] = []
    decode = pipe.vae.decode

    def recording_decode(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(z.detach().clone())
        return decode(z, *args, **kwargs)

    def put_back(pipeline: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        assert kwargs["latents"].shape == latents.shape  # the layout the loop denoises
        return {"latents": latents.clone()}

    pipe.vae.decode = recording_decode
    try:
        out = pipe(
            **family.prompt(2),
            latents=_latents_argument(pipe, latents, *size),
            height=size[0],
            width=size[1],
            num_inference_steps=1,
            output_type="pt",
            callback_on_step_end=put_back,
            callback_on_step_end_tensor_inputs=["latents"],
        )
    finally:
        del pipe.vae.decode  # the class's method again
    assert len(seen) == 1
    assert seen[0].shape == raw.shape
    torch.testing.assert_close(seen[0], raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.images, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_image_to_latents_follows_the_vae_dtype(name: str):
    pipe = _pipe(name)
    adapter = adapter_for(pipe)
    x = _images(1, 32, 64)
    latents = adapter.image_to_latents(pipe, x)
    from_double = adapter.image_to_latents(pipe, x.double())  # images are cast to the VAE's dtype
    assert from_double.dtype == torch.float32
    torch.testing.assert_close(from_double, latents)
    pipe.vae.to(torch.float64)
    try:
        in_double = adapter.image_to_latents(pipe, x)
    finally:
        pipe.vae.to(torch.float32)
    assert in_double.dtype == torch.float64
    torch.testing.assert_close(in_double.float(), latents, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["flux2_klein", "flux2_dev"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_flux2_latents_argument_is_what_prepare_latents_packs_back(name: str, size: tuple[int, int]):
    pipe = _pipe(name)
    adapter = adapter_for(pipe)
    latents = adapter.image_to_latents(pipe, _images(2, *size))
    argument = adapter.latents_argument(pipe, latents, *size)
    assert argument.shape == (2, latents.shape[2], size[0] // 4, size[1] // 4)  # (B, 4C, h/2, w/2); VAE 2x down
    packed, ids = pipe.prepare_latents(
        2, pipe.transformer.config.in_channels // 4, *size, torch.float32, torch.device("cpu"), None, latents=argument
    )
    assert torch.equal(packed, latents)
    # token j sits at the (h, w) its position id says
    h, w = ids[0, :, 1], ids[0, :, 2]
    torch.testing.assert_close(latents[0], argument[0][:, h, w].T)
    with pytest.raises(ValueError, match="latent tokens do not make a 32x32 image"):
        adapter.latents_argument(pipe, latents[:, :-1], 32, 32)


# ---- image-conditioned transport on every family ------------------------------------------
def _transport_prompts(name: str, rows: int, cfg: bool) -> dict[str, Any]:
    """Pipeline arguments for transport_image's batch of `rows`: row 0 the reference's prompt,
    every other row the target's (one embedding), the negative (with CFG) one for all rows."""
    g = torch.Generator().manual_seed(11)

    def per_row(*shape: int) -> torch.Tensor:  # (rows, *shape): row 0 its own, the rest alike
        a, b = torch.randn(2, 1, *shape, generator=g)
        return torch.cat([a] + [b] * (rows - 1))

    def negative(*shape: int) -> torch.Tensor:
        return torch.randn(1, *shape, generator=g).expand(rows, *shape).clone()

    args: dict[str, Any] = {"prompt_embeds": per_row(N_TXT, TXT_DIM)}
    ones = {"prompt_embeds_mask": torch.ones(rows, N_TXT, dtype=torch.long)}
    scale = 4.0 if cfg else 1.0
    if name == "flux2_dev":  # guidance-distilled: the scale is embedded, there is no CFG call
        return args | {"guidance_scale": scale}
    if name == "flux2_klein":
        args["guidance_scale"] = scale
    elif name == "qwenimage":
        args |= ones | {"true_cfg_scale": scale}
    elif name == "sana":
        args |= {
            "prompt_attention_mask": torch.ones(rows, N_TXT),
            "guidance_scale": scale,
            "use_resolution_binning": False,
        }
    elif name == "sd3":
        args |= {"pooled_prompt_embeds": per_row(POOLED_DIM), "guidance_scale": scale}
    if cfg:
        args["negative_prompt_embeds"] = negative(N_TXT, TXT_DIM)
        if name == "qwenimage":
            args["negative_prompt_embeds_mask"] = ones["prompt_embeds_mask"].clone()
        elif name == "sana":
            args |= {"negative_prompt": None, "negative_prompt_attention_mask": torch.ones(rows, N_TXT)}
        elif name == "sd3":
            args["negative_pooled_prompt_embeds"] = negative(POOLED_DIM)
    return args


#: family -> rows per transformer call of a batch of 3 prompts with CFG (None: no CFG call):
#: FLUX.2 klein and Qwen-Image call the transformer once per half, SANA and SD3 once on both
CFG_LAYOUT = {"flux2_klein": [3, 3], "flux2_dev": None, "qwenimage": [3, 3], "sana": [6], "sd3": [6]}
TRANSPORT_CASES = [
    (name, path, cfg)
    for name in FAMILIES
    for path in ("renoise", "invert")
    for cfg in ((False, True) if CFG_LAYOUT[name] else (False,))
    if path == "renoise" or name != "sana"  # SANA's DPM-Solver++ cannot be run backwards (invert refuses it)
]


@pytest.mark.parametrize(
    ("name", "path", "cfg"), TRANSPORT_CASES, ids=[f"{n}-{p}-{'cfg' if c else 'nocfg'}" for n, p, c in TRANSPORT_CASES]
)
def test_image_conditioned_transport(name: str, path: str, cfg: bool, monkeypatch: pytest.MonkeyPatch):
    """transport_image on the real pipeline (FLUX.2 takes `latents=` unpacked, its loop and
    callbacks see them packed): alpha 0 is the target bit for bit; every channel, every
    token, every site and step at alpha 1 makes the transported row's image stream that of
    the reference row. Rows come in groups of the 3 prompts [reference, target, transported]:
    one group per CFG half, whether the halves are separate calls or one batch."""
    import ditlens.transport
    from ditlens.core.hooks import hooks
    from ditlens.core.record import RecordConfig
    from ditlens.generation import GenerationSettings
    from ditlens.transport import TransportConfig, transport_image

    pipe = _pipe(name)
    if path == "invert":
        assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    settings = GenerationSettings(num_inference_steps=3, height=32, width=64)
    reference = torch.rand(3, 32, 64, generator=torch.Generator().manual_seed(5))

    result = transport_image(
        pipe,
        reference,
        "B",
        TransportConfig(k=4, streams="img", generation=settings),
        alphas=[0.0, 1.0],
        seed=4,
        prompt_embeds=_transport_prompts(name, 4, cfg),
        reference_path=path,
    )
    assert result.transported.shape == (2, 3, 32, 64)
    assert torch.equal(result.transported[0], result.target)
    assert not torch.equal(result.transported[1], result.target)

    adapter = adapter_for(pipe)
    sites = tuple(site.name for site in adapter.sites())
    runs = []

    @contextlib.contextmanager
    def recording(model: Any, **kwargs: Any):  # transport's own hooks, recording the kept tokens too
        with hooks(model, record=RecordConfig(keep_hidden=sites), **kwargs) as run:
            runs.append(run)
            yield run

    monkeypatch.setattr(ditlens.transport, "hooks", recording)
    config = TransportConfig(k=adapter.hidden_size, mask="all", streams="img", generation=settings)
    transport_image(
        pipe,
        reference,
        "B",
        config,
        alphas=[1.0],
        seed=4,
        prompt_embeds=_transport_prompts(name, 3, cfg),
        reference_path=path,
    )
    (run,) = runs  # the inversion runs unhooked
    stats = run.stats
    layout = CFG_LAYOUT[name] if cfg else [3]
    assert stats.meta["rows_per_call"] == layout
    assert set(stats.hidden) == set(sites)
    for site in sites:
        hidden = stats.hidden[site]  # (steps, rows, N, D)
        assert hidden.shape[:2] == (3, sum(layout)), site
        for first in range(0, sum(layout), 3):  # [reference, target alone, transported] per group
            assert torch.equal(hidden[:, first + 2], hidden[:, first]), (site, first)
            assert not torch.equal(hidden[:, first + 1], hidden[:, first]), (site, first)


def test_sana_cannot_invert_the_reference():
    """SANA samples with DPM-Solver++ (multistep): no Euler steps to run backwards, so only
    the re-noised reference path is open to it."""
    from ditlens.generation import GenerationSettings
    from ditlens.transport import TransportConfig, transport_image

    pipe = _pipe("sana")
    config = TransportConfig(k=4, generation=GenerationSettings(num_inference_steps=3, height=32, width=32))
    with pytest.raises(
        ValueError, match="needs a FlowMatchEulerDiscreteScheduler; SanaPipeline uses DPMSolverMultistepScheduler"
    ):
        transport_image(
            pipe,
            torch.rand(3, 32, 32),
            "B",
            config,
            prompt_embeds=_transport_prompts("sana", 3, False),
            reference_path="invert",
        )
