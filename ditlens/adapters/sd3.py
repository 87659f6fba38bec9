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

from .base import Adapter, Streams


class SD3Adapter(Adapter):
    transformer_classes = ("SD3Transformer2DModel",)
    block_lists = ("transformer_blocks",)

    def split(self, output: Any, args: tuple, kwargs: dict) -> Streams:
        txt, img = output  # txt is None for the context_pre_only last block
        return Streams(img=img, txt=txt)

    def merge(self, output: Any, args: tuple, kwargs: dict, streams: Streams) -> Any:
        return (streams.txt, streams.img)
