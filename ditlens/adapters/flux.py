"""FLUX.1 [dev]/[schnell] and the built-in model: diffusers' `FluxTransformer2DModel`.

Both block kinds return `(encoder_hidden_states, hidden_states)`, i.e. `(txt, img)`
(diffusers 0.42: `FluxTransformerBlock.forward` and `FluxSingleTransformerBlock.forward`;
the single block splits its joint sequence back before returning).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .attention import FluxLocator
from .base import TXT_IMG, Adapter, UnsupportedModelError, call_default, grid_from_img_ids, padded_positions


class FluxAdapter(Adapter):
    transformer_classes = ("FluxTransformer2DModel",)
    block_lists = ("transformer_blocks", "single_transformer_blocks")
    block_output = TXT_IMG
    attention_locator = FluxLocator()
    refused_pipelines = {
        name: "it appends the reference image's tokens to the image stream, "
        "which ditlens would mix with the generated ones"
        for name in ("FluxKontextPipeline", "FluxKontextInpaintPipeline")
    }

    def text_positions(
        self, pipe: Any, prompt: str, words: Sequence[str], *, max_sequence_length: int | None = None
    ) -> list[int]:
        """The built-in model: `word_positions(prompt, words)` ([CLS] first). FluxPipeline (and
        its img2img/inpaint kin): T5's (`tokenizer_2`) sequence as it is, padded to
        `max_sequence_length` (CLIP only gives the pooled vector)."""
        from .text_positions import word_positions

        if getattr(pipe, "words_are_tokens", False):  # the built-in pipeline's text encoder
            return word_positions(prompt, words)
        if getattr(pipe, "tokenizer_2", None) is None:
            raise UnsupportedModelError(
                f"{type(pipe).__name__} has no T5 tokenizer (tokenizer_2): cannot tell its text stream."
            )
        length = call_default(pipe, "max_sequence_length", max_sequence_length)
        limit = f"{type(pipe).__name__} keeps T5's first {length} tokens (max_sequence_length)"
        return padded_positions(pipe.tokenizer_2, prompt, words, length, limit)

    def token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int] | None:
        """From `img_ids`: (0, row, col) per packed token."""
        return grid_from_img_ids(args, kwargs, self.transformer)

    def image_to_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """FluxPipeline: VAE mode, shifted and scaled as the pipeline decodes, packed 2x2."""
        if hasattr(pipe, "image_to_latents"):  # the built-in pipeline works in pixel space
            return pipe.image_to_latents(images)
        vae = pipe.vae
        with torch.no_grad():
            latents = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent_dist.mode()
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        b, c, h, w = latents.shape
        return pipe._pack_latents(latents, b, c, h, w)  # (B, h/2 * w/2, 4c)
