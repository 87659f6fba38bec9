"""Tiny, randomly initialised instances of the real diffusers transformer classes.

Each builder writes its config here (no download), re-initialises every parameter from a
seeded normal (diffusers zero-initialises output and modulation layers, which would make
every block's contribution vanish), and comes with `make_inputs(B, generator)`: the forward
kwargs a pipeline would pass, shaped as in each model's `forward` signature (diffusers
0.42.1). Everything is CPU and float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import (
    Flux2Transformer2DModel,
    FluxTransformer2DModel,
    QwenImageTransformer2DModel,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
)
from torch import nn

SEED = 0
INIT_STD = 0.05  # large enough that every block moves the residual stream, small enough to stay stable
HEADS, HEAD_DIM = 2, 16  # hidden size D = 32 everywhere
N_TXT = 5  # text tokens
GRID = 4  # image tokens per side after patchify: N_img = 16
#: the FLUX families' shared layout: packed latents in (patch 1), two double- then two single-stream blocks
FLUX_BLOCKS = dict(
    patch_size=1, num_layers=2, num_single_layers=2, attention_head_dim=HEAD_DIM, num_attention_heads=HEADS
)


@dataclass
class TinyModel:
    name: str
    transformer: nn.Module
    make_inputs: Callable[[int, torch.Generator], dict]
    n_img_tokens: int
    n_txt_tokens: int


def _randomise(model: nn.Module, seed: int = SEED, std: float = INIT_STD) -> nn.Module:
    """Overwrite every parameter: norm weights ~ 1 + N(0, std), everything else ~ N(0, std)."""
    g = torch.Generator().manual_seed(seed)
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
    with torch.no_grad():
        for module in model.modules():
            is_norm = isinstance(module, norm_types) or type(module).__name__.endswith("RMSNorm")
            for name, p in module.named_parameters(recurse=False):
                nn.init.normal_(p, mean=0.0, std=std, generator=g)
                if is_norm and name == "weight":
                    p.add_(1.0)
    return model.eval()


def _build(cls: type[nn.Module], **config) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # diffusers' own init must not move the caller's RNG
        model = cls(**config)
    return _randomise(model)


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator)


def _timestep(b: int, generator: torch.Generator, scale: float) -> torch.Tensor:
    return torch.rand(b, generator=generator) * scale


# ---- FLUX.1 -----------------------------------------------------------------------------
def tiny_flux() -> TinyModel:
    in_channels, joint_dim, pooled_dim = 8, 24, 16
    model = _build(
        FluxTransformer2DModel,
        **FLUX_BLOCKS,
        in_channels=in_channels,
        joint_attention_dim=joint_dim,
        pooled_projection_dim=pooled_dim,
        guidance_embeds=True,  # FLUX.1 [dev]
        axes_dims_rope=(4, 6, 6),  # sums to HEAD_DIM
    )
    n_img = GRID * GRID

    def make_inputs(b: int, generator: torch.Generator) -> dict:
        img_ids = torch.zeros(GRID, GRID, 3)
        img_ids[..., 1] = torch.arange(GRID)[:, None]
        img_ids[..., 2] = torch.arange(GRID)[None, :]
        return {
            "hidden_states": _randn(generator, b, n_img, in_channels),  # (B, N_img, C): packed latents
            "encoder_hidden_states": _randn(generator, b, N_TXT, joint_dim),
            "pooled_projections": _randn(generator, b, pooled_dim),
            "timestep": _timestep(b, generator, 1.0),  # pipelines pass t / 1000
            "guidance": torch.full((b,), 3.5),
            "img_ids": img_ids.reshape(n_img, 3),
            "txt_ids": torch.zeros(N_TXT, 3),
        }

    return TinyModel("flux", model, make_inputs, n_img, N_TXT)


# ---- FLUX.2 [klein] ---------------------------------------------------------------------
def tiny_flux2() -> TinyModel:
    in_channels, joint_dim = 8, 24
    model = _build(
        Flux2Transformer2DModel,
        **FLUX_BLOCKS,
        in_channels=in_channels,
        joint_attention_dim=joint_dim,
        timestep_guidance_channels=32,
        mlp_ratio=3.0,
        axes_dims_rope=(4, 4, 4, 4),  # (T, H, W, L), sums to HEAD_DIM
        guidance_embeds=False,  # klein is not guidance-distilled
    )
    n_img = GRID * GRID

    def make_inputs(b: int, generator: torch.Generator) -> dict:
        # ids as Flux2KleinPipeline builds them: image (0, h, w, 0), text (0, 0, 0, l)
        h, w = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
        img_ids = torch.stack([torch.zeros_like(h), h, w, torch.zeros_like(h)], dim=-1).reshape(n_img, 4)
        txt_ids = torch.zeros(N_TXT, 4, dtype=torch.long)
        txt_ids[:, 3] = torch.arange(N_TXT)
        return {
            "hidden_states": _randn(generator, b, n_img, in_channels),
            "encoder_hidden_states": _randn(generator, b, N_TXT, joint_dim),
            "timestep": _timestep(b, generator, 1.0),  # pipelines pass t / 1000
            "img_ids": img_ids.expand(b, -1, -1),  # (B, N_img, 4)
            "txt_ids": txt_ids.expand(b, -1, -1),  # (B, N_txt, 4)
        }

    return TinyModel("flux2", model, make_inputs, n_img, N_TXT)


# ---- Qwen-Image -------------------------------------------------------------------------
def tiny_qwenimage() -> TinyModel:
    patch, latent_channels, joint_dim = 2, 4, 24
    model = _build(
        QwenImageTransformer2DModel,
        patch_size=patch,
        in_channels=latent_channels * patch * patch,  # packed 2x2 latents
        out_channels=latent_channels,
        num_layers=2,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=joint_dim,
        axes_dims_rope=(4, 6, 6),  # (frame, h, w), sums to HEAD_DIM
    )
    n_img = GRID * GRID

    def make_inputs(b: int, generator: torch.Generator) -> dict:
        return {
            "hidden_states": _randn(generator, b, n_img, latent_channels * patch * patch),
            "encoder_hidden_states": _randn(generator, b, N_TXT, joint_dim),
            "encoder_hidden_states_mask": torch.ones(b, N_TXT, dtype=torch.long),
            "timestep": _timestep(b, generator, 1.0),  # pipelines pass t / 1000
            "img_shapes": [[(1, GRID, GRID)]] * b,  # per sample: list of (frames, h, w) after patchify
        }

    return TinyModel("qwenimage", model, make_inputs, n_img, N_TXT)


# ---- SANA -------------------------------------------------------------------------------
def tiny_sana() -> TinyModel:
    patch, latent_channels, caption_channels = 1, 4, 24
    inner = HEADS * HEAD_DIM
    model = _build(
        SanaTransformer2DModel,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        num_layers=2,
        num_cross_attention_heads=HEADS,
        cross_attention_head_dim=HEAD_DIM,
        cross_attention_dim=inner,  # captions are projected to the hidden size first
        caption_channels=caption_channels,
        mlp_ratio=2.5,
        sample_size=GRID * patch,
        patch_size=patch,
        qk_norm="rms_norm_across_heads",  # as in SANA 1.5
    )
    n_img = GRID * GRID

    def make_inputs(b: int, generator: torch.Generator) -> dict:
        return {
            "hidden_states": _randn(generator, b, latent_channels, GRID * patch, GRID * patch),  # (B, C, H, W)
            "encoder_hidden_states": _randn(generator, b, N_TXT, caption_channels),
            "encoder_attention_mask": torch.ones(b, N_TXT),
            "timestep": _timestep(b, generator, 1000.0),
        }

    return TinyModel("sana", model, make_inputs, n_img, N_TXT)


# ---- SD3 / 3.5 --------------------------------------------------------------------------
def tiny_sd3() -> TinyModel:
    patch, latent_channels, joint_dim, pooled_dim = 2, 4, 24, 16
    model = _build(
        SD3Transformer2DModel,
        sample_size=GRID * patch,
        patch_size=patch,
        in_channels=latent_channels,
        num_layers=3,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=joint_dim,
        caption_projection_dim=HEADS * HEAD_DIM,  # text joins the image in joint attention: same width
        pooled_projection_dim=pooled_dim,
        out_channels=latent_channels,
        pos_embed_max_size=GRID * 2,
        dual_attention_layers=(0,),  # SD3.5 style on block 0
        qk_norm="rms_norm",  # SD3.5
    )
    n_img = GRID * GRID

    def make_inputs(b: int, generator: torch.Generator) -> dict:
        return {
            "hidden_states": _randn(generator, b, latent_channels, GRID * patch, GRID * patch),  # (B, C, H, W)
            "encoder_hidden_states": _randn(generator, b, N_TXT, joint_dim),
            "pooled_projections": _randn(generator, b, pooled_dim),
            "timestep": _timestep(b, generator, 1000.0),
        }

    return TinyModel("sd3", model, make_inputs, n_img, N_TXT)


_BUILDERS: dict[str, Callable[[], TinyModel]] = {
    "flux": tiny_flux,
    "flux2": tiny_flux2,
    "qwenimage": tiny_qwenimage,
    "sana": tiny_sana,
    "sd3": tiny_sd3,
}


def tiny_model(name: str) -> TinyModel:
    if name not in _BUILDERS:
        raise ValueError(f"Unknown tiny model {name!r}. Known: {', '.join(_BUILDERS)}.")
    return _BUILDERS[name]()


def tiny_models() -> list[TinyModel]:
    return [build() for build in _BUILDERS.values()]
