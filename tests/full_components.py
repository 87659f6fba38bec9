"""The shared pieces of the tiny pipelines of tests/full_pipelines.py (real classes, random weights).

Seeded building, the denoising transformer with every parameter re-drawn (diffusers
zero-initialises output and modulation layers), `transformers` text encoders, tiny VAEs of the
families' classes (tests/test_image_latents.py builds its VAEs here too) and flow-match schedulers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import AutoencoderDC, AutoencoderKL, AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from .tiny_models import _randomise

HEADS, HEAD_DIM = 2, 16  # every transformer: hidden size 32
SEED = 0


def seeded(build: Callable[[], torch.nn.Module], seed: int = SEED) -> torch.nn.Module:
    """Build a module with a fixed torch seed, without moving the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def transformer(cls, **config) -> torch.nn.Module:
    """The denoising transformer `cls`, 2 heads x 16 dims, every parameter re-drawn."""
    return _randomise(seeded(lambda: cls(attention_head_dim=HEAD_DIM, num_attention_heads=HEADS, **config)))


# ---- VAEs ---------------------------------------------------------------------------------
def kl_vae(cls=AutoencoderKL, widths: tuple[int, ...] = (8, 16), latent_channels: int = 4, **extra) -> torch.nn.Module:
    """KL autoencoder of `cls` (AutoencoderKL and its kin), one block a width (2x down after each
    but the last), one layer a block, 4 norm groups."""
    blocks = len(widths)
    return seeded(
        lambda: cls(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            block_out_channels=widths,
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=4,
            **extra,
        )
    )


def dc_vae(widths: tuple[int, ...], attention_head_dim: int, scaling_factor: float, **extra) -> torch.nn.Module:
    """AutoencoderDC with 4 latent channels, one stage a width (2x down after each but the last):
    ResBlock stages, the last an EfficientViT attention block; the decoder mirrors the encoder."""
    stages = len(widths)
    side = {
        "block_types": ("ResBlock",) * (stages - 1) + ("EfficientViTBlock",),
        "block_out_channels": widths,
        "layers_per_block": (1,) * stages,
        "qkv_multiscales": ((),) * (stages - 1) + ((5,),),
    }
    both = {f"{coder}_{key}": value for coder in ("encoder", "decoder") for key, value in side.items()}
    return seeded(
        lambda: AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=attention_head_dim,
            scaling_factor=scaling_factor,
            **both,
            **extra,
        )
    )


def qwen_vae(latents_mean: Sequence[float], latents_std: Sequence[float]) -> torch.nn.Module:
    """AutoencoderKLQwenImage 2x down (one spatial downsample, none in time), z_dim 4, with these
    per-channel latent statistics."""
    return seeded(
        lambda: AutoencoderKLQwenImage(
            base_dim=8,
            z_dim=4,
            dim_mult=[1, 2],
            num_res_blocks=1,
            temperal_downsample=[False],
            latents_mean=list(latents_mean),
            latents_std=list(latents_std),
        )
    )


# ---- text encoders ------------------------------------------------------------------------
def token_ids(tokenizer, *kinds: str) -> dict[str, int]:
    """`{kind}_token_id` of `tokenizer` for each kind ("bos", "eos", "pad"), as config arguments."""
    return {f"{kind}_token_id": getattr(tokenizer, f"{kind}_token_id") for kind in kinds}


def decoder_dims(tokenizer, width: int, layers: int, positions: int) -> dict[str, int]:
    """The sizes of a decoder-only text model (Qwen3, Qwen2.5-VL's text part, Gemma2): `width`
    wide with an MLP twice as wide, 2 query heads and 1 key-value head, `positions` positions."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": positions,
    }


def clip_text_encoder(tokenizer, projection: bool, seed: int = SEED) -> torch.nn.Module:
    """CLIP text model, 16 wide, 2 layers, 77 positions; with a 16-wide projection (SD3) or not (FLUX)."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        **token_ids(tokenizer, "bos", "eos", "pad"),  # the pooled output is read at the first eos
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return seeded(lambda: cls(config), seed)


def t5_encoder(tokenizer, d_model: int = 32) -> torch.nn.Module:
    """T5 v1.1 encoder, 32 wide, 1 layer (relative positions: any length, 512 or 256 tokens here)."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",  # T5 v1.1 / T5-XXL as in FLUX and SD3
        is_encoder_decoder=False,
        decoder_start_token_id=tokenizer.pad_token_id,
        **token_ids(tokenizer, "eos", "pad"),
    )
    return seeded(lambda: T5EncoderModel(config))


def flow_scheduler(**config) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **config)
