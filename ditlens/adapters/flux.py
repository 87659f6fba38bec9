"""FLUX.1 [dev]/[schnell] and the built-in model: diffusers' `FluxTransformer2DModel`.

Both block kinds return `(encoder_hidden_states, hidden_states)`, i.e. `(txt, img)`
(diffusers 0.42: `FluxTransformerBlock.forward` and `FluxSingleTransformerBlock.forward`;
the single block splits its joint sequence back before returning).
"""

from __future__ import annotations

from typing import Any

from .base import Adapter, Streams


class FluxAdapter(Adapter):
    transformer_classes = ("FluxTransformer2DModel",)
    block_lists = ("transformer_blocks", "single_transformer_blocks")

    def split(self, output: Any, args: tuple, kwargs: dict) -> Streams:
        txt, img = output
        return Streams(img=img, txt=txt)

    def merge(self, output: Any, args: tuple, kwargs: dict, streams: Streams) -> Any:
        return (streams.txt, streams.img)
