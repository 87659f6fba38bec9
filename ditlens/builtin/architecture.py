"""The built-in model's architecture: a freshly initialised pipeline for a `TrainConfig`.

The transformer is diffusers' own class, unchanged: the one the shipped model's
model_index.json names, so every model this package trains has the shipped one's
architecture, and ditlens' adapter for that family hooks all of them. (Which family that is
lives in `ditlens.adapters` alone.)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable

import torch
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler

from .pipeline import DEFAULT_WEIGHTS, BuiltinPipeline
from .text_encoder import BuiltinTextEncoder
from .train_config import TrainConfig

# adaLN-Zero (DiT): these layers start at 0, so every block starts as the identity and the output as 0
_ZERO_INIT = ("norm1.linear", "norm1_context.linear", "norm.linear", "norm_out.linear")


def transformer_class() -> Callable[..., ModelMixin]:
    """The diffusers class of the built-in transformer, as the shipped model_index.json names it."""
    library, name = json.loads((DEFAULT_WEIGHTS / "model_index.json").read_text())["transformer"]
    return getattr(importlib.import_module(library), name)


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """FLUX-style RoPE split of the head dim (FLUX.1: 128 -> (16, 56, 56)): a small axis 0,
    which stays unused (all ids 0), and equal row and column axes; each must be even."""
    axis0 = head_dim // 4
    rest = (head_dim - axis0) // 2
    if axis0 % 2 or rest % 2 or axis0 + 2 * rest != head_dim:
        raise ValueError(f"head dim {head_dim} does not split into even RoPE axes; use a multiple of 8")
    return (axis0, rest, rest)


def build_pipeline(config: TrainConfig) -> BuiltinPipeline:
    """A freshly initialised pipeline (adaLN-Zero: modulation and output layers start at 0)."""
    config.validate()
    head_dim = config.hidden_size // config.num_heads
    text_encoder = BuiltinTextEncoder(
        vocabulary=config.scenes.vocabulary(),
        max_length=config.max_length,
        hidden_size=config.hidden_size,
        num_layers=config.text_layers,
        num_heads=config.num_heads,
        world=config.world,
    )
    transformer = transformer_class()(
        patch_size=1,  # the pipeline packs 2x2 pixel patches itself, as FLUX packs latents
        in_channels=3 * config.patch_size**2,
        out_channels=3 * config.patch_size**2,
        num_layers=config.num_double_blocks,
        num_single_layers=config.num_single_blocks,
        attention_head_dim=head_dim,
        num_attention_heads=config.num_heads,
        joint_attention_dim=config.hidden_size,
        pooled_projection_dim=config.hidden_size,
        guidance_embeds=False,
        axes_dims_rope=rope_axes(head_dim),
    )
    for name, module in transformer.named_modules():
        if name.endswith(_ZERO_INIT) or name == "proj_out":
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    return BuiltinPipeline(
        transformer=transformer,
        text_encoder=text_encoder,
        scheduler=scheduler,
        image_size=config.scenes.IMAGE_SIZE,
        world=config.world,
    )
