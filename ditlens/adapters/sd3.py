"""Stable Diffusion 3 / 3.5: diffusers' `SD3Transformer2DModel`.

Its blocks are `JointTransformerBlock`s (diffusers 0.42.1, `models/attention.py`), which
return `(encoder_hidden_states, hidden_states)`, i.e. `(txt, img)`. The last block is built
with `context_pre_only=True` and returns `(None, img)`: text only feeds its attention.
SD3.5's dual-attention blocks (`use_dual_attention`, a second self-attention on the image
stream) and `qk_norm` change nothing in the output structure. Blocks named in the forward's
`skip_layers` do not run, so their hooks do not fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .attention import SD3Locator
from .base import TXT_IMG, Adapter, UnsupportedModelError, call_default, grid_from_latents, padded_positions


class SD3Adapter(Adapter):
    transformer_classes = ("SD3Transformer2DModel",)
    block_lists = ("transformer_blocks",)
    block_output = TXT_IMG  # the context_pre_only last block returns (None, img): no text stream there
    attention_locator = SD3Locator()

    def skips_blocks(self, args: tuple, kwargs: dict) -> bool:
        """Skip-layer guidance: the forward's `skip_layers` names blocks that do not run."""
        skip_layers = kwargs.get("skip_layers")
        return skip_layers is not None and len(skip_layers) > 0

    def text_positions(
        self, pipe: Any, prompt: str, words: Sequence[str], *, max_sequence_length: int | None = None
    ) -> list[int]:
        """StableDiffusion3Pipeline (`encode_prompt`): CLIP-L's and CLIP-G's `tokenizer_max_length`
        tokens (77; the two joined along the width, so one position is one token of both),
        then T5's `max_sequence_length` tokens (zeros without text_encoder_3, so no position
        there). A word cut from CLIP's 77 tokens but kept by T5 gets its T5 positions only."""
        from .text_positions import TruncatedWordError

        clip_length = int(pipe.tokenizer_max_length)
        length = call_default(pipe, "max_sequence_length", max_sequence_length)

        def kept(tokenizer: Any, word: str, max_length: int) -> list[int]:  # [] where truncated
            try:
                return padded_positions(tokenizer, prompt, [word], max_length, limit="")
            except TruncatedWordError:
                return []

        positions: set[int] = set()
        for word in [words] if isinstance(words, str) else words:
            found = kept(pipe.tokenizer, word, clip_length)  # raises for a word absent from the prompt
            if kept(pipe.tokenizer_2, word, clip_length) != found:
                raise UnsupportedModelError(
                    f"{type(pipe).__name__}'s two CLIP tokenizers split {word!r} differently: one text position would "
                    "hold different tokens of each."
                )
            if pipe.text_encoder_3 is not None:
                found += [clip_length + i for i in kept(pipe.tokenizer_3, word, length)]
            if not found:
                raise TruncatedWordError(
                    f"Word {word!r} of prompt {prompt!r} does not reach the transformer: {type(pipe).__name__} "
                    f"keeps CLIP's first {clip_length} tokens and T5's first {length} (max_sequence_length)."
                )
            positions.update(found)
        return sorted(positions)

    def token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int] | None:
        """From the unpacked latents (B, C, H, W) it is called with."""
        return grid_from_latents(args, kwargs, self.transformer)

    def image_to_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """StableDiffusion3Pipeline: VAE mode, `(x - shift_factor) * scaling_factor` as
        `StableDiffusion3Img2ImgPipeline.prepare_latents` does, unpacked (B, C, h, w): the
        inverse of its decode `vae.decode(x / scaling_factor + shift_factor)`."""
        vae = pipe.vae
        with torch.no_grad():
            latents = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent_dist.mode()
        return (latents - vae.config.shift_factor) * vae.config.scaling_factor
