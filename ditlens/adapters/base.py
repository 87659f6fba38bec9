"""What every model family must tell ditlens: where the blocks are, and how to read and
write the image (and text) stream of a block's output.

Where the layout is data, it is data: `block_lists` names the block lists in forward order
and `block_output` says where a block's output tuple holds each stream (`BlockOutput`, in
the terms of diffusers' own hook registry). A family whose blocks return a tuple, as most
do, is those two lines plus its few real differences (token grid, text positions, latents).

An adapter knows nothing about recording or editing; the hooks in `ditlens.core.hooks` call
`split` on each block output and `merge` when an edit changed a stream. Everything else in
ditlens is model-agnostic and only ever sees `Streams`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .attention import AttentionLocator


@dataclass(frozen=True)
class Streams:
    """The residual stream after one block, split by modality."""

    img: torch.Tensor  # (B, N_img, D)
    txt: torch.Tensor | None  # (B, N_txt, D), or None where the block carries no text stream


@dataclass(frozen=True)
class BlockOutput:
    """Where a block's forward output holds each stream. The vocabulary of diffusers' own hook
    registry (`diffusers.hooks._helpers.TransformerBlockMetadata`): `img` is its
    `return_hidden_states_index`, `txt` its `return_encoder_hidden_states_index`."""

    img: int | None  # position of the image tokens in the output tuple; None: the output IS the image tokens
    txt: int | None = None  # position of the text tokens; None: no text stream (the entry itself may be None too)

    def split(self, output: Any) -> Streams:
        if self.img is None:
            return Streams(img=output, txt=None)
        return Streams(img=output[self.img], txt=None if self.txt is None else output[self.txt])

    def merge(self, output: Any, streams: Streams) -> Any:
        """`output` with the streams put back in place; every other entry passes through."""
        if self.img is None:
            return streams.img
        parts = list(output)
        parts[self.img] = streams.img
        if self.txt is not None:
            parts[self.txt] = streams.txt
        return tuple(parts)


#: `(encoder_hidden_states, hidden_states)`: what most dual-stream blocks return (diffusers' registry: 1 and 0)
TXT_IMG = BlockOutput(img=1, txt=0)
#: the image tokens alone, one (B, N, D) tensor: blocks whose text enters by cross-attention only
IMG_ONLY = BlockOutput(img=None)


@dataclass(frozen=True)
class Site:
    """One hookable block. `name` follows the module tree, as `print(transformer)` shows it."""

    name: str  # e.g. "transformer_blocks.3" or "single_transformer_blocks.10"
    module: nn.Module
    index: int  # position in the forward order, 0 = first block the hidden states enter


class Adapter:
    """Per-architecture knowledge, one subclass per diffusers transformer family."""

    #: diffusers class names this adapter handles (matched against the transformer's MRO)
    transformer_classes: ClassVar[tuple[str, ...]] = ()
    #: attribute names of the transformer's block lists, in forward order
    block_lists: ClassVar[tuple[str, ...]]
    #: where its blocks' outputs hold each stream: one layout for all its block lists (diffusers'
    #: registry gives each family's block classes the same indices); a family whose blocks return
    #: something else besides (FLUX.2's joint sequences) reads those in its own `split`
    block_output: ClassVar[BlockOutput]
    #: where and how its blocks attend from image to text (`ditlens.attention`); None = not wired
    attention_locator: ClassVar[AttentionLocator | None] = None
    #: pipelines around this transformer that ditlens refuses, each with its reason (e.g.
    #: edit pipelines that append reference-image tokens to the image stream)
    refused_pipelines: ClassVar[dict[str, str]] = {}

    def __init__(self, transformer: nn.Module):
        self.transformer = transformer

    def sites(self) -> list[Site]:
        sites: list[Site] = []
        for list_name in self.block_lists:
            blocks = getattr(self.transformer, list_name, None)
            if blocks is None:
                continue
            for i, block in enumerate(blocks):
                sites.append(Site(f"{list_name}.{i}", block, len(sites)))
        return sites

    @property
    def hidden_size(self) -> int:
        """The width of both streams: heads x head size, as every supported family builds its
        `inner_dim` (SANA keeps no such attribute, so the config is read)."""
        config = model_config(self.transformer)
        return int(config.num_attention_heads * config.attention_head_dim)

    def on_transformer_call(self, args: tuple, kwargs: dict) -> None:
        """Called with the transformer's forward inputs before its blocks run (e.g. to learn
        the text length of a joint sequence). Most families need nothing here."""

    def skips_blocks(self, args: tuple, kwargs: dict) -> bool:
        """Whether this transformer call skips some blocks (skip-layer guidance), read from
        its forward inputs: then a call in which no hooked block ran is no sign of a compiled
        graph without hooks. Most families skip none."""
        return False

    def generation_kwargs(self, pipe: Any) -> dict[str, Any]:
        """Pipeline arguments ditlens always passes to this family's pipelines, so that it
        generates at the size asked (see SANA's). Most families need none."""
        return {}

    def token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int] | None:
        """(rows, cols) of the generated image's tokens in this call, read from the
        transformer's forward inputs (`args`/`kwargs`): the latent the pipeline actually
        made, whatever size was asked for. None where the inputs do not tell (the caller
        then lays the tokens out from the image size).

        Raises `ExtraImageTokensError` where the image stream holds more tokens than that
        grid (an edit pipeline's reference-image tokens): they would be mixed with the
        generated ones."""
        return None

    def image_to_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) images in [0, 1] -> the latents `pipe` denoises, in its own layout:
        the shape of its `prepare_latents` output (what `callback_on_step_end` sees), scaled
        so that its own decode at the end of `__call__` hands `vae.decode` the VAE mode of
        the images. On the VAE's device and dtype.

        Needed by image-conditioned transport. Pipelines that define `image_to_latents`
        themselves (the built-in one) are used as they are."""
        if hasattr(pipe, "image_to_latents"):
            return pipe.image_to_latents(images)
        raise UnsupportedModelError(
            f"Image-conditioned transport is not wired for {type(pipe).__name__} "
            "(its adapter has no image_to_latents); text-conditioned transport works."
        )

    def latents_argument(self, pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The layout the pipeline's `latents=` argument takes, from the layout its callbacks
        (`callback_on_step_end`) see, for a (height, width) image. Most pipelines take what
        they denoise as it is: the identity."""
        return latents

    def text_positions(
        self, pipe: Any, prompt: str, words: Sequence[str], *, max_sequence_length: int | None = None
    ) -> list[int]:
        """Positions, in the text stream this family's blocks receive for the conditional
        `prompt` (their `encoder_hidden_states`), of every token that overlaps a whole-word,
        case-insensitive occurrence of each of `words` (words or phrases), sorted: the
        `token_positions` of `ditlens.attention.AttentionMaps`.

        max_sequence_length: as passed to `pipe(...)`; None = the pipeline's default. Raises
        ValueError for a word absent from the prompt or cut away by the pipeline (naming the
        word, the prompt and the reason), `UnsupportedModelError` where the family's text
        stream cannot be mapped exactly."""
        raise UnsupportedModelError(
            f"Text positions are not wired for {type(pipe).__name__} ({type(self).__name__}); "
            "give AttentionMaps the positions by hand."
        )

    def split(self, output: Any, args: tuple, kwargs: dict) -> Streams:
        """Read the image and text streams out of one block's forward output, as
        `block_output` lays them out.

        `args`/`kwargs` are the block's forward inputs (some blocks return one joint
        sequence whose text length only the inputs tell)."""
        return self.block_output.split(output)

    def merge(self, output: Any, args: tuple, kwargs: dict, streams: Streams) -> Any:
        """Return `output` rebuilt with the given streams, in the block's own format."""
        return self.block_output.merge(output, streams)


def padded_positions(
    tokenizer: Any, prompt: str, words: Sequence[str], length: int, limit: str, **template: Any
) -> list[int]:
    """`template_positions` for a text stream that the pipeline pads and cuts to `length`
    tokens, as T5, Qwen3 and CLIP streams are tokenized (`padding="max_length"`,
    `truncation=True`); `template`: its other arguments (template, keep, ...)."""
    from .text_positions import template_positions

    encode: dict[str, Any] = {"padding": "max_length", "max_length": length, "truncation": True}
    return template_positions(tokenizer, prompt, words, limit=limit, **(encode | template))


def model_config(model: nn.Module) -> Any:
    """A diffusers model's config, read by attribute (`config.patch_size`). Typed Any: diffusers
    makes its fields from each model class's own __init__ arguments."""
    return model.config


def call_default(pipe: Any, name: str, given: Any = None) -> Any:
    """`given`, or where it is None the default of `pipe.__call__`'s argument `name` (what a
    plain `pipe(prompt)` uses, e.g. `max_sequence_length`)."""
    if given is not None:
        return given
    parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise UnsupportedModelError(
            f"{type(pipe).__name__}.__call__ has no default {name!r}; cannot tell its text stream."
        )
    return parameter.default


def check_image_tokens(n_tokens: int, grid: tuple[int, int], transformer: nn.Module) -> tuple[int, int]:
    """`grid`, once the image stream's `n_tokens` are checked to be exactly its tokens."""
    if n_tokens != grid[0] * grid[1]:
        raise ExtraImageTokensError(_extra_tokens_message(transformer, n_tokens, grid[0] * grid[1]))
    return grid


def _extra_tokens_message(transformer: nn.Module, n_tokens: int, generated: int) -> str:
    return (
        f"{type(transformer).__name__}'s image stream holds {n_tokens} tokens, of which the generated image is "
        f"{generated}: the pipeline appended other tokens (an edit pipeline's reference image?). ditlens does "
        "not mix them with the generated ones; use the family's text-to-image pipeline."
    )


def hidden_states(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A transformer call's `hidden_states`, passed by name or first (SANA's pipeline)."""
    return kwargs.get("hidden_states", args[0] if args else None)


def grid_from_img_ids(args: tuple, kwargs: dict, transformer: nn.Module) -> tuple[int, int] | None:
    """(rows, cols) from FLUX-style position ids `img_ids`, (N, A) or (B, N, A): axis 0 is 0
    for the generated image's tokens (other values mark reference images), axes 1 and 2 are
    row and column. One host sync per call. None where the call passes no ids, or the
    generated tokens do not fill such a grid (a caller's own ids)."""
    ids, hidden = kwargs.get("img_ids"), hidden_states(args, kwargs)
    if ids is None or hidden is None:
        return None
    ids, n_tokens = ids[0] if ids.ndim == 3 else ids, int(hidden.shape[1])
    extra, rows, cols = (
        int(v) for v in torch.stack([(ids[:, 0] != 0).sum(), ids[:, 1].amax(), ids[:, 2].amax()]).tolist()
    )
    if extra:
        raise ExtraImageTokensError(_extra_tokens_message(transformer, n_tokens, n_tokens - extra))
    grid = (rows + 1, cols + 1)
    return grid if grid[0] * grid[1] == n_tokens else None


def grid_from_latents(args: tuple, kwargs: dict, transformer: nn.Module) -> tuple[int, int] | None:
    """(rows, cols) of unpacked latents (B, C, H, W), patchified the transformer's `patch_size`
    a side (SANA, SD3)."""
    hidden = hidden_states(args, kwargs)
    if hidden is None or hidden.ndim != 4:
        return None
    patch_size = int(model_config(transformer).patch_size)
    return (int(hidden.shape[2]) // patch_size, int(hidden.shape[3]) // patch_size)


class UnsupportedModelError(ValueError):
    """The transformer's class (or the pipeline's) has no adapter."""


class ExtraImageTokensError(UnsupportedModelError):
    """The image stream carries tokens besides the generated image's (reference images)."""
