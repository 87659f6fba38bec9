"""SANA / SANA 1.5 (and SANA-Sprint): diffusers' `SanaTransformer2DModel`.

`SanaTransformerBlock.forward` returns the image tokens only, one tensor (B, N_img, D)
(diffusers 0.42.1). Text enters by cross-attention and has no residual stream of its own,
so txt is None. The block unflattens to (B, D, H, W) only inside, around its conv
feed-forward (GLUMBConv), and flattens back before the residual add; the (B, C, H, W)
reshape of the model happens after the last block (unpatchify), outside any site.
"""

from __future__ import annotations

from typing import Any

import torch

from .attention import SanaLocator
from .base import Adapter, Streams, grid_from_latents


class SanaAdapter(Adapter):
    transformer_classes = ("SanaTransformer2DModel",)
    block_lists = ("transformer_blocks",)
    attention_locator = SanaLocator()

    @property
    def hidden_size(self) -> int:
        # SanaTransformer2DModel keeps inner_dim as a local in __init__, not as an attribute
        config = self.transformer.config
        return int(config.num_attention_heads * config.attention_head_dim)

    def generation_kwargs(self, pipe: Any) -> dict[str, Any]:
        """Resolution binning off. SanaPipeline by default generates at the nearest size of
        its aspect-ratio table (512 px and up) and resizes the image to the size asked, so
        a 64 px request was a 512 px generation whose masks did not match the picture.
        ditlens generates at the size asked (any multiple of the VAE's 32 px)."""
        import inspect

        takes = "use_resolution_binning" in inspect.signature(pipe.__call__).parameters
        return {"use_resolution_binning": False} if takes else {}

    def split(self, output: Any, args: tuple, kwargs: dict) -> Streams:
        return Streams(img=output, txt=None)

    def merge(self, output: Any, args: tuple, kwargs: dict, streams: Streams) -> Any:
        return streams.img

    def token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int] | None:
        """From the unpacked latents (B, C, H, W) it is called with."""
        return grid_from_latents(args, kwargs, int(self.transformer.config.patch_size))

    def image_to_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """SanaPipeline: AutoencoderDC's latents (deterministic: no distribution) times
        `scaling_factor`, unpacked (B, C, h, w): the inverse of its decode
        `vae.decode(latents / scaling_factor)`. (SANA-Sprint denoises these times
        `scheduler.config.sigma_data`, in TrigFlow time.)"""
        vae = pipe.vae
        with torch.no_grad():
            latents = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent
        return latents * vae.config.scaling_factor
