"""FLUX.2 [klein] (and [dev]): diffusers' `Flux2Transformer2DModel`.

Block outputs in diffusers 0.42.1:
- `Flux2TransformerBlock` (dual stream) returns `(encoder_hidden_states, hidden_states)`,
  i.e. `(txt, img)`.
- `Flux2SingleTransformerBlock` returns `(txt, img)` only when called with
  `split_hidden_states=True`; otherwise it returns the joint sequence `[txt; img]`,
  shape (B, N_txt + N_img, D). `Flux2Transformer2DModel.forward` concatenates the streams
  once before the single blocks and calls each one with `encoder_hidden_states=None` and
  no `text_seq_len`, so in practice every single block returns the joint sequence and its
  own inputs do not say where the text ends.

The text length therefore comes, in order of preference, from the single block's own
inputs (`encoder_hidden_states`, `text_seq_len`, or `num_txt_tokens` which the KV-cache
modes put into `joint_attention_kwargs`), from `on_transformer_call` (the transformer's
forward inputs, if the hooks pass them on), or from the last dual-block output this adapter
split (dual blocks always run before single blocks in one forward).

"img" is every non-text token: with reference images (klein editing) the pipeline appends
their tokens after the noisy latents (or, in KV "extract" mode, puts them first), so img is
then (B, N_img + N_ref, D).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .attention import Flux2Locator
from .base import TXT_IMG, Adapter, Streams, UnsupportedModelError, call_default, grid_from_img_ids, padded_positions

# positions of the inputs in `Flux2SingleTransformerBlock.forward`, for positional calls
# (diffusers' gradient-checkpointing path passes them positionally)
_SINGLE_ARGS = (
    "hidden_states",
    "encoder_hidden_states",
    "temb_mod",
    "image_rotary_emb",
    "joint_attention_kwargs",
    "split_hidden_states",
    "text_seq_len",
)


def _arg(name: str, args: tuple, kwargs: dict) -> Any:
    if name in kwargs:
        return kwargs[name]
    i = _SINGLE_ARGS.index(name)
    return args[i] if i < len(args) else None


class Flux2Adapter(Adapter):
    transformer_classes = ("Flux2Transformer2DModel",)
    block_lists = ("transformer_blocks", "single_transformer_blocks")
    block_output = TXT_IMG  # the dual blocks' (and a single block's with split_hidden_states=True)
    attention_locator = Flux2Locator()
    refused_pipelines = {
        "Flux2KleinKVPipeline": "it caches reference-image tokens in the attention, "
        "which ditlens would mix with the generated ones",
    }

    def __init__(self, transformer: nn.Module):
        super().__init__(transformer)
        # text length and joint length (text + image tokens) of the forward call in progress, once known
        self._num_txt: int | None = None
        self._joint_len: int | None = None

    def on_transformer_call(self, args: tuple, kwargs: dict) -> None:
        """Read the text length from the transformer's own forward inputs."""
        img = kwargs.get("hidden_states", args[0] if args else None)
        txt = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        if img is None or txt is None:
            self._num_txt = self._joint_len = None
            return
        self._num_txt = int(txt.shape[1])
        self._joint_len = int(txt.shape[1]) + int(img.shape[1])

    def split(self, output: Any, args: tuple, kwargs: dict) -> Streams:
        if isinstance(output, tuple):  # dual block, or a single block with split_hidden_states=True
            streams = super().split(output, args, kwargs)
            assert streams.txt is not None  # every FLUX.2 block carries the text stream
            self._num_txt = int(streams.txt.shape[1])
            self._joint_len = self._num_txt + int(streams.img.shape[1])
            return streams
        n_txt = self._text_len(output, args, kwargs)
        return Streams(img=output[:, n_txt:], txt=output[:, :n_txt])  # joint: (B, N_txt + N_img, D)

    def merge(self, output: Any, args: tuple, kwargs: dict, streams: Streams) -> Any:
        if isinstance(output, tuple):
            return super().merge(output, args, kwargs, streams)
        if streams.txt is None:
            raise ValueError("A FLUX.2 single block returns one joint sequence: merge needs the txt stream too.")
        return torch.cat([streams.txt, streams.img], dim=1)

    def text_positions(
        self, pipe: Any, prompt: str, words: Sequence[str], *, max_sequence_length: int | None = None
    ) -> list[int]:
        """Flux2KleinPipeline (and its inpaint kin, `_get_qwen3_prompt_embeds`): the prompt as
        the user turn of Qwen3's chat template (generation prompt, thinking off), padded to
        `max_sequence_length`, every token kept. Flux2Pipeline's Mistral processor is not wired."""
        if not hasattr(pipe, "_get_qwen3_prompt_embeds"):
            raise UnsupportedModelError(
                "Text positions are wired for FLUX.2 [klein]'s Qwen3 chat template only, not for "
                f"{type(pipe).__name__}'s text encoder; give AttentionMaps the positions by hand."
            )
        length = call_default(pipe, "max_sequence_length", max_sequence_length)

        def chat(text: str) -> str:  # as _get_qwen3_prompt_embeds formats it
            messages = [{"role": "user", "content": text}]
            return pipe.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )

        limit = f"{type(pipe).__name__} keeps the chat template's first {length} tokens (max_sequence_length)"
        return padded_positions(pipe.tokenizer, prompt, words, length, limit, template=chat)

    def token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int] | None:
        """From `img_ids`: (t, row, col, l) per packed token."""
        return grid_from_img_ids(args, kwargs, self.transformer)

    def _text_len(self, joint: torch.Tensor, args: tuple, kwargs: dict) -> int:
        txt_in = _arg("encoder_hidden_states", args, kwargs)
        if txt_in is not None:  # the block concatenated the text itself
            return int(txt_in.shape[1])
        text_seq_len = _arg("text_seq_len", args, kwargs)
        if text_seq_len is not None:
            return int(text_seq_len)
        attn_kwargs = _arg("joint_attention_kwargs", args, kwargs) or {}
        if attn_kwargs.get("num_txt_tokens") is not None:
            return int(attn_kwargs["num_txt_tokens"])
        if self._num_txt is None:
            raise RuntimeError(
                "Cannot split a FLUX.2 single block's joint output: its inputs do not give the text length. "
                "Hook at least one of the transformer_blocks too, or call the adapter's "
                "on_transformer_call(args, kwargs) from a forward pre-hook on the transformer."
            )
        if joint.shape[1] != self._joint_len:
            raise RuntimeError(
                f"FLUX.2 single block output has {joint.shape[1]} tokens, but this forward call was seen with "
                f"{self._joint_len} (text {self._num_txt} + image); the text length is stale."
            )
        return self._num_txt

    def image_to_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """Flux2Pipeline / Flux2KleinPipeline: `_encode_vae_image` (VAE mode, 2x2
        `_patchify_latents`, `(x - bn.running_mean) / sqrt(bn.running_var + eps)`), then
        `_pack_latents`: the inverse of the decode at the end of `__call__`."""
        vae = pipe.vae
        with torch.no_grad():
            latents = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent_dist.mode()
        latents = pipe._patchify_latents(latents)  # (B, 4C, h/2, w/2)
        bn_mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        bn_std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(
            latents.device, latents.dtype
        )
        return pipe._pack_latents((latents - bn_mean) / bn_std)  # (B, h/2 * w/2, 4C)

    def latents_argument(self, pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Packed latents (B, h/2 * w/2, 4C), as the pipeline denoises them, -> what its
        `latents=` argument takes: (B, 4C, h/2, w/2), which `prepare_latents` packs back
        (the inverse of `_pack_latents`; rows in `_prepare_latent_ids`' order, h-major)."""
        scale = 2 * pipe.vae_scale_factor
        grid_h, grid_w = int(height) // scale, int(width) // scale
        b, n, c = latents.shape
        if n != grid_h * grid_w:
            raise ValueError(f"{n} latent tokens do not make a {height}x{width} image ({grid_h}x{grid_w} tokens).")
        return latents.permute(0, 2, 1).reshape(b, c, grid_h, grid_w)
