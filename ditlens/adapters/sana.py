"""SANA / SANA 1.5 (and SANA-Sprint): diffusers' `SanaTransformer2DModel`.

`SanaTransformerBlock.forward` returns the image tokens only, one tensor (B, N_img, D)
(diffusers 0.42.1). Text enters by cross-attention and has no residual stream of its own,
so txt is None. The block unflattens to (B, D, H, W) only inside, around its conv
feed-forward (GLUMBConv), and flattens back before the residual add; the (B, C, H, W)
reshape of the model happens after the last block (unpatchify), outside any site.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .attention import SanaLocator
from .base import IMG_ONLY, Adapter, UnsupportedModelError, call_default, grid_from_latents, padded_positions


class SanaAdapter(Adapter):
    transformer_classes = ("SanaTransformer2DModel",)
    block_lists = ("transformer_blocks",)
    block_output = IMG_ONLY
    attention_locator = SanaLocator()

    def generation_kwargs(self, pipe: Any) -> dict[str, Any]:
        """Resolution binning off. SanaPipeline by default generates at the nearest size of
        its aspect-ratio table (512 px and up) and resizes the image to the size asked, so
        a 64 px request was a 512 px generation whose masks did not match the picture.
        ditlens generates at the size asked (any multiple of the VAE's 32 px)."""
        import inspect

        takes = "use_resolution_binning" in inspect.signature(pipe.__call__).parameters
        return {"use_resolution_binning": False} if takes else {}

    def text_positions(
        self, pipe: Any, prompt: str, words: Sequence[str], *, max_sequence_length: int | None = None
    ) -> list[int]:
        """SanaPipeline (`_get_gemma_prompt_embeds`, `encode_prompt`): the prompt, lower-cased
        and stripped, after the default `complex_human_instruction` (its lines joined by
        newlines), padded on the right to the instruction's tokens + `max_sequence_length` - 2;
        the stream keeps the first token (<bos>) and the last `max_sequence_length` - 1, which
        start where the instruction ends. Exact, since the padded length is fixed. Positions are
        those of the default instruction (a `complex_human_instruction=` of one's own moves
        them); `clean_caption=True` rewrites the prompt and is not wired. Errors name the
        prompt as the pipeline encodes it (lower-cased)."""
        if not hasattr(pipe, "_text_preprocessing"):
            raise UnsupportedModelError(
                f"{type(pipe).__name__} has no _text_preprocessing: cannot tell what it encodes."
            )
        instruction = call_default(pipe, "complex_human_instruction")
        length = call_default(pipe, "max_sequence_length", max_sequence_length)
        text = pipe._text_preprocessing(prompt, clean_caption=False)[0]  # what the pipeline encodes
        prefix = "\n".join(instruction) if instruction else ""
        total = len(pipe.tokenizer.encode(prefix)) + length - 2 if instruction else length
        limit = f"{type(pipe).__name__} keeps {length - 1} tokens of the instruction and prompt (max_sequence_length)"
        return padded_positions(
            pipe.tokenizer,
            text,
            words,
            total,
            limit,
            template=lambda p: prefix + p,
            keep=[0, *range(-length + 1, 0)],
            padding_side="right",
            add_special_tokens=True,
        )

    def token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int] | None:
        """From the unpacked latents (B, C, H, W) it is called with."""
        return grid_from_latents(args, kwargs, self.transformer)

    def image_to_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """SanaPipeline: AutoencoderDC's latents (deterministic: no distribution) times
        `scaling_factor`, unpacked (B, C, h, w): the inverse of its decode
        `vae.decode(latents / scaling_factor)`. (SANA-Sprint denoises these times
        `scheduler.config.sigma_data`, in TrigFlow time.)"""
        vae = pipe.vae
        with torch.no_grad():
            latents = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent
        return latents * vae.config.scaling_factor
