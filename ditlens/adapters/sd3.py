"""Stable Diffusion 3 / 3.5: diffusers' `SD3Transformer2DModel`.

Its blocks are `JointTransformerBlock`s (diffusers 0.42.1, `models/attention.py`), which
return `(encoder_hidden_states, hidden_states)`, i.e. `(txt, img)`. The last block is built
with `context_pre_only=True` and returns `(None, img)`: text only feeds its attention.
SD3.5's dual-attention blocks (`use_dual_attention`, a second self-attention on the image
stream) and `qk_norm` change nothing in the output structure. Blocks named in the forward's
`skip_layers` do not run, so their hooks do not fire.
"""

from __future__ import annotations

from typing import Any

import torch

from .attention import SD3Locator
from .base import Adapter, Streams, grid_from_latents


class SD3Adapter(Adapter):
    transformer_classes = ("SD3Transformer2DModel",)
    block_lists = ("transformer_blocks",)
    attention_locator = SD3Locator()

    def split(self, output: Any, args: tuple, kwargs: dict) -> Streams:
        txt, img = output  # txt is None for the context_pre_only last block
        return Streams(img=img, txt=txt)

    def merge(self, output: Any, args: tuple, kwargs: dict, streams: Streams) -> Any:
        return (streams.txt, streams.img)

    def token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int] | None:
        """From the unpacked latents (B, C, H, W) it is called with."""
        return grid_from_latents(args, kwargs, int(self.transformer.config.patch_size))

    def image_to_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """StableDiffusion3Pipeline: VAE mode, `(x - shift_factor) * scaling_factor` as
        `StableDiffusion3Img2ImgPipeline.prepare_latents` does, unpacked (B, C, h, w): the
        inverse of its decode `vae.decode(x / scaling_factor + shift_factor)`."""
        vae = pipe.vae
        with torch.no_grad():
            latents = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent_dist.mode()
        return (latents - vae.config.shift_factor) * vae.config.scaling_factor
