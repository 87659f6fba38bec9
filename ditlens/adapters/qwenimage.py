"""Qwen-Image (and Qwen-Image-Edit): diffusers' `QwenImageTransformer2DModel`.

It has one list of dual-stream blocks; `QwenImageTransformerBlock.forward` returns
`(encoder_hidden_states, hidden_states)`, i.e. `(txt, img)` (diffusers 0.42.1).

For Qwen-Image-Edit the pipeline appends the condition image's latent tokens after the
noisy latents (`img_shapes` lists both), so img is then (B, N_img + N_cond, D).
"""

from __future__ import annotations

from typing import Any

from .base import Adapter, Streams


class QwenImageAdapter(Adapter):
    transformer_classes = ("QwenImageTransformer2DModel",)
    block_lists = ("transformer_blocks",)

    def split(self, output: Any, args: tuple, kwargs: dict) -> Streams:
        txt, img = output
        return Streams(img=img, txt=txt)

    def merge(self, output: Any, args: tuple, kwargs: dict, streams: Streams) -> Any:
        return (streams.txt, streams.img)
