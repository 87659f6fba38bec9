"""Qwen-Image (and Qwen-Image-Edit): diffusers' `QwenImageTransformer2DModel`.

It has one list of dual-stream blocks; `QwenImageTransformerBlock.forward` returns
`(encoder_hidden_states, hidden_states)`, i.e. `(txt, img)` (diffusers 0.42.1).

For Qwen-Image-Edit the pipeline appends the condition image's latent tokens after the
noisy latents (`img_shapes` lists both), so img is then (B, N_img + N_cond, D).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .attention import QwenImageLocator
from .base import TXT_IMG, Adapter, UnsupportedModelError, call_default, check_image_tokens, hidden_states


class QwenImageAdapter(Adapter):
    transformer_classes = ("QwenImageTransformer2DModel",)
    block_lists = ("transformer_blocks",)
    block_output = TXT_IMG
    attention_locator = QwenImageLocator()
    refused_pipelines = {
        name: "it appends the condition image's tokens to the image stream, "
        "which ditlens would mix with the generated ones"
        for name in ("QwenImageEditPipeline", "QwenImageEditPlusPipeline", "QwenImageEditInpaintPipeline")
    } | {"QwenImageLayeredPipeline": "its image stream holds several layers, not one image"}

    def text_positions(
        self, pipe: Any, prompt: str, words: Sequence[str], *, max_sequence_length: int | None = None
    ) -> list[int]:
        """QwenImagePipeline: the prompt inside `prompt_template_encode`, tokenized up to
        `tokenizer_max_length + prompt_template_encode_start_idx` tokens; the first
        `prompt_template_encode_start_idx` (the system turn) are dropped and the rest cut to
        `max_sequence_length` (`_get_qwen_prompt_embeds`, `encode_prompt`)."""
        from .text_positions import template_positions

        template = getattr(pipe, "prompt_template_encode", None)
        drop = getattr(pipe, "prompt_template_encode_start_idx", None)
        if template is None or drop is None:
            raise UnsupportedModelError(
                f"{type(pipe).__name__} has no prompt_template_encode: cannot tell its text stream."
            )
        length = call_default(pipe, "max_sequence_length", max_sequence_length)
        # tokenized alone: in a batch the pipeline pads, but drops the padding before the cut
        return template_positions(
            pipe.tokenizer,
            prompt,
            words,
            template=template.format,
            keep=slice(drop, drop + length),
            limit=f"{type(pipe).__name__} drops the template's first {drop} tokens and keeps the next {length} "
            f"(max_sequence_length), of at most {pipe.tokenizer_max_length}",
            max_length=pipe.tokenizer_max_length + drop,
            truncation=True,
        )

    def token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int] | None:
        """From `img_shapes`: per sample, (frames, rows, cols) of each latent image in the
        stream, the generated one first (Python ints: no sync)."""
        shapes, hidden = kwargs.get("img_shapes"), hidden_states(args, kwargs)
        if not shapes or hidden is None:
            return None
        first = shapes[0] if isinstance(shapes[0], list) else shapes  # per sample a list, or one list for all
        _, rows, cols = first[0]  # one frame: text-to-image; more tokens than that are refused
        return check_image_tokens(int(hidden.shape[1]), (int(rows), int(cols)), self.transformer)

    def image_to_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """QwenImagePipeline: VAE mode of the one-frame video (B, 3, 1, H, W), normalised
        `(x - latents_mean) / latents_std` as `QwenImageImg2ImgPipeline._encode_vae_image`
        does, then packed 2x2 by `_pack_latents`: the inverse of the decode at the end of
        `QwenImagePipeline.__call__` (`_unpack_latents`, `x * std + mean`, frame 0)."""
        vae = pipe.vae
        with torch.no_grad():
            frames = images.to(vae.device, vae.dtype)[:, :, None] * 2 - 1
            latents = vae.encode(frames).latent_dist.mode()  # (B, z_dim, 1, h, w)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
        latents = (latents - mean) * inv_std
        b, c, _, h, w = latents.shape
        return pipe._pack_latents(latents, b, c, h, w)  # (B, h/2 * w/2, 4 z_dim)
