"""Tiny real pipelines (random weights, no text encoders) for end-to-end tests."""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusion3Pipeline,
)

from .tiny_models import FLUX_BLOCKS

TXT_DIM = 32


def tiny_flux_transformer(seed: int = 0) -> FluxTransformer2DModel:
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        **FLUX_BLOCKS,
        in_channels=16,  # 4 VAE latent channels packed 2x2
        joint_attention_dim=TXT_DIM,
        pooled_projection_dim=TXT_DIM,
        axes_dims_rope=(4, 6, 6),
    )
    # diffusers zero-initialises modulation and output layers: re-draw so every block matters
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in transformer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return transformer.eval()


def tiny_vae(widths: tuple[int, ...] = (8, 16), latent_channels: int = 4) -> AutoencoderKL:
    """An AutoencoderKL with one level per width (2**(levels - 1) x down: 2x by default), identity scaling."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths,
        latent_channels=latent_channels,
        norm_num_groups=4,
        layers_per_block=1,
        shift_factor=0.0,
        scaling_factor=1.0,
    ).eval()


def without_text_encoders(count: int) -> dict[str, None]:
    """`text_encoder=None, tokenizer=None, text_encoder_2=None, ...` for a pipeline of `count`
    text encoders: precomputed embeddings stand in for them (real ones need downloads)."""
    suffixes = ["", *(f"_{i}" for i in range(2, count + 1))]
    return {f"{kind}{suffix}": None for suffix in suffixes for kind in ("text_encoder", "tokenizer")}


def tiny_sd3_pipeline(transformer: torch.nn.Module) -> StableDiffusion3Pipeline:
    """The real StableDiffusion3Pipeline around `transformer`, no text encoders (precomputed embeddings)."""
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=tiny_vae(), **without_text_encoders(3)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_pipeline(transformer: torch.nn.Module, vae: torch.nn.Module) -> FluxPipeline:
    """The real FluxPipeline around `transformer` and `vae`, no text encoders (precomputed embeddings)."""
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, transformer=transformer, **without_text_encoders(2)
    )


def tiny_flux_pipeline(seed: int = 0) -> FluxPipeline:
    torch.manual_seed(seed)
    vae = tiny_vae()
    return flux_pipeline(tiny_flux_transformer(seed), vae)


def flux_call_kwargs(batch: int = 2, steps: int = 3, seed: int = 0) -> dict:
    """Precomputed prompt embeddings stand in for the text encoders (which need downloads)."""
    gen = torch.Generator().manual_seed(100 + seed)
    return dict(
        prompt_embeds=torch.randn(batch, 8, TXT_DIM, generator=gen),
        pooled_prompt_embeds=torch.randn(batch, TXT_DIM, generator=gen),
        height=32,
        width=32,
        num_inference_steps=steps,
        output_type="pt",
        generator=torch.Generator().manual_seed(seed),
    )
