"""Where each family's image tokens attend to text: one attention locator per model family.

`ditlens.attention.AttentionMaps` does everything generic (wrapping processors, rows, steps,
the chunked softmax scores); a locator, as DAAM keeps one per model apart from its hooks,
says only where and what:

- `attention(block)`: the attention module of a block whose softmax holds image queries and
  text keys (None: the block has none);
- `locate(attn, call, n_txt)`: from the arguments one processor call received, the image
  queries and every key they attend to, formed by the module's own sub-modules and
  diffusers' own helpers the way that family's processor forms them (diffusers 0.42.1),
  with where the text keys sit and the mask the processor applies.

Only queries and keys are formed, never values or outputs: the map is the softmax, and the
processor itself still runs unchanged. diffusers' helpers are imported inside `locate`:
`import ditlens` does not import diffusers, and this module is imported by the adapters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

#: a diffusers attention module of one of the families (`Attention`, `FluxAttention`,
#: `Flux2ParallelSelfAttention`, ...): their sub-modules and sizes are read by name, as each
#: family's processor reads them, so no one class describes them all
AttentionModule = Any


@dataclass(frozen=True)
class ImageQueries:
    """One attention call as the scores need it: image queries against every key they see."""

    q: torch.Tensor  # (B, H, N_img, hd): image queries, after the processor's norms and RoPE
    key: torch.Tensor  # (B, H, S, hd): every key of the softmax, text and (joint attention) image
    txt: slice  # where the text keys sit along S
    mask: torch.Tensor | None = None  # broadcasts to (B, H, N_img, S); SDPA rules: bool True = attend, float = added

    @property
    def n_txt(self) -> int:
        return len(range(self.key.shape[2])[self.txt])


class AttentionLocator(ABC):
    """Per family: which attention of a block to read, and how its processor forms q and k."""

    #: processor classes (names, matched against the processor's MRO, with the same arguments)
    #: whose softmax `locate` reproduces; any other processor is refused, since it may attend
    #: differently (IP-Adapter images, FLUX.2 KV caches, a fused SD3 processor without qk norms)
    processors: ClassVar[tuple[str, ...]] = ()
    #: processor arguments with a leading batch axis, cut to the rows the maps keep before `locate`
    batched: ClassVar[tuple[str, ...]] = ("hidden_states", "encoder_hidden_states")

    def attention(self, block: nn.Module) -> AttentionModule | None:
        return getattr(block, "attn", None)

    @abstractmethod
    def locate(self, attn: AttentionModule, call: Mapping[str, Any], n_txt: int | None) -> ImageQueries:
        """call: the processor's arguments by name (defaults filled in); n_txt: the text length
        of the transformer call in progress (blocks that get one joint sequence need it)."""


def _as_4d(mask: torch.Tensor) -> torch.Tensor:
    while mask.ndim < 4:  # SDPA broadcasts masks against (B, H, L, S) from the right
        mask = mask.unsqueeze(0)
    return mask


# ---- FLUX.1 and FLUX.2: joint [txt, img], RoPE over the joint sequence ----------------------
def _joint_norms(
    attn: AttentionModule, q_img: torch.Tensor, k_img: torch.Tensor, k_txt: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The optional per-head qk norms of diffusers' shared joint `Attention` (Qwen-Image, SD3),
    each applied where the module has it, as their processors do."""
    norm = lambda module, x: x if module is None else module(x)  # noqa: E731
    return norm(attn.norm_q, q_img), norm(attn.norm_k, k_img), norm(attn.norm_added_k, k_txt)


class FluxLocator(AttentionLocator):
    """`FluxAttnProcessor` (FLUX.1, the built-in model). Dual-stream blocks get the image as
    `hidden_states` and the text as `encoder_hidden_states` (own projections `add_*_proj`, own
    norms `norm_added_*`); single-stream blocks get the joint sequence [txt, img] as
    `hidden_states`, with `n_txt` saying where the image starts. Keys are [txt, img]."""

    processors: ClassVar[tuple[str, ...]] = ("FluxAttnProcessor",)
    batched = ("hidden_states", "encoder_hidden_states", "attention_mask")

    def locate(self, attn: AttentionModule, call: Mapping[str, Any], n_txt: int | None) -> ImageQueries:
        from diffusers.models.embeddings import apply_rotary_emb

        hd = attn.head_dim
        heads = lambda x: x.unflatten(-1, (-1, hd))  # noqa: E731  (B, S, H*hd) -> (B, S, H, hd)
        txt = call.get("encoder_hidden_states")
        if txt is not None:  # dual stream
            n_txt = txt.shape[1]
            q_img, k_img, k_txt = self._dual_projections(attn, call["hidden_states"], txt)
            q_img = attn.norm_q(heads(q_img))
            key = torch.cat([attn.norm_added_k(heads(k_txt)), attn.norm_k(heads(k_img))], dim=1)
        else:  # single stream
            if n_txt is None:
                raise RuntimeError("Text length unknown: a single-stream attention ran outside a transformer call.")
            q_img, key = self._single_projections(attn, call["hidden_states"], n_txt)
            q_img, key = attn.norm_q(heads(q_img)), attn.norm_k(heads(key))
        rope = call.get("image_rotary_emb")
        if rope is not None:  # RoPE is per position: the image rows take the image slice
            cos, sin = rope  # (N_txt + N_img, hd) each
            # diffusers annotates a 1-tuple in and a pair out; it takes (cos, sin) and returns one tensor
            key = apply_rotary_emb(key, (cos, sin), sequence_dim=1)  # type: ignore[arg-type,assignment]
            q_img = apply_rotary_emb(q_img, (cos[n_txt:], sin[n_txt:]), sequence_dim=1)  # type: ignore[arg-type,assignment]
        q_img, key = q_img.transpose(1, 2), key.transpose(1, 2)  # (B, H, N, hd)
        mask = self._mask(call.get("attention_mask"), key, slice(n_txt, None))
        return ImageQueries(q_img, key, slice(0, n_txt), mask)

    @staticmethod
    def _dual_projections(attn: AttentionModule, img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if getattr(attn, "fused_projections", False):  # after fuse_qkv_projections(), as the processor reads it
            q_img, k_img, _ = attn.to_qkv(img).chunk(3, dim=-1)
            _, k_txt, _ = attn.to_added_qkv(txt).chunk(3, dim=-1)
            return q_img, k_img, k_txt
        return attn.to_q(img), attn.to_k(img), attn.add_k_proj(txt)

    @staticmethod
    def _single_projections(
        attn: AttentionModule, joint: torch.Tensor, n_txt: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image queries, joint keys), each (B, N, H*hd)."""
        if getattr(attn, "fused_projections", False):
            q, key, _ = attn.to_qkv(joint).chunk(3, dim=-1)
            return q[:, n_txt:], key
        return attn.to_q(joint[:, n_txt:]), attn.to_k(joint)

    @staticmethod
    def _mask(mask: torch.Tensor | None, key: torch.Tensor, img_rows: slice) -> torch.Tensor | None:
        """`attention_mask` as the processor hands it to `dispatch_attention_fn`: SDPA rules, plus
        the native backend's (B, S) -> (B, 1, 1, S); then only the image query rows. diffusers'
        FLUX pipelines pass none; a mask can only come through `joint_attention_kwargs`."""
        if mask is None:
            return None
        if mask.ndim == 2 and tuple(mask.shape) == (key.shape[0], key.shape[2]):
            mask = mask[:, None, None, :]
        mask = _as_4d(mask)
        return mask if mask.shape[-2] == 1 else mask[..., img_rows, :]


class Flux2Locator(FluxLocator):
    """FLUX.2: `Flux2AttnProcessor` in the dual-stream blocks (FLUX.1's attribute names and
    layout) and `Flux2ParallelSelfAttnProcessor` in the single-stream blocks, whose q, k, v
    come out of one projection fused with the MLP input (`to_qkv_mlp_proj`). RoPE (4 axes)
    arrives as (cos, sin) over [txt, img], as in FLUX.1. The KV-cache processors of
    Flux2KleinKVPipeline insert reference keys between text and image and are refused."""

    processors = ("Flux2AttnProcessor", "Flux2ParallelSelfAttnProcessor")

    @staticmethod
    def _single_projections(
        attn: AttentionModule, joint: torch.Tensor, n_txt: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # the whole fused projection runs (MLP columns too): the module's own forward, never its sliced weights
        fused = attn.to_qkv_mlp_proj(joint)
        # the processor's split: q, k, v first, by their share of the fused width
        qkv_dim = 3 * attn.inner_dim
        mlp_dim = attn.mlp_hidden_dim * attn.mlp_mult_factor
        local_qkv = fused.shape[-1] * qkv_dim // (qkv_dim + mlp_dim)
        q, key, _ = fused[..., :local_qkv].chunk(3, dim=-1)
        return q[:, n_txt:], key


# ---- Qwen-Image: joint [txt, img], complex RoPE per stream, text mask -----------------------
class QwenImageLocator(AttentionLocator):
    """`QwenDoubleStreamAttnProcessor2_0`: image in `hidden_states`, text in
    `encoder_hidden_states`, keys joined [txt, img]. RoPE comes per stream as complex
    frequencies `(img_freqs, txt_freqs)` for `apply_rotary_emb_qwen(..., use_real=False)`.
    The text mask `encoder_hidden_states_mask` (B, N_txt) is extended with ones over the
    image keys, as the processor builds its joint mask."""

    processors = ("QwenDoubleStreamAttnProcessor2_0",)
    batched = ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask")

    def locate(self, attn: AttentionModule, call: Mapping[str, Any], n_txt: int | None) -> ImageQueries:
        from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

        img, txt = call["hidden_states"], call["encoder_hidden_states"]
        hd = attn.inner_dim // attn.heads  # the shared Attention has no head_dim attribute
        q_img = attn.to_q(img).unflatten(-1, (-1, hd))  # (B, N_img, H, hd)
        k_img = attn.to_k(img).unflatten(-1, (-1, hd))
        k_txt = attn.add_k_proj(txt).unflatten(-1, (-1, hd))  # (B, N_txt, H, hd)
        q_img, k_img, k_txt = _joint_norms(attn, q_img, k_img, k_txt)
        rope = call.get("image_rotary_emb")
        if rope is not None:
            img_freqs, txt_freqs = rope
            q_img = apply_rotary_emb_qwen(q_img, img_freqs, use_real=False)
            k_img = apply_rotary_emb_qwen(k_img, img_freqs, use_real=False)
            k_txt = apply_rotary_emb_qwen(k_txt, txt_freqs, use_real=False)
        key = torch.cat([k_txt, k_img], dim=1).transpose(1, 2)  # (B, H, N_txt + N_img, hd)
        txt_mask = call.get("encoder_hidden_states_mask")
        mask = None
        if txt_mask is not None:
            img_mask = torch.ones(img.shape[:2], dtype=torch.bool, device=img.device)
            mask = torch.cat([txt_mask, img_mask], dim=1)[:, None, None, :]  # (B, 1, 1, S)
        return ImageQueries(q_img.transpose(1, 2), key, slice(0, txt.shape[1]), mask)


# ---- SANA: cross-attention image -> text in attn2 -------------------------------------------
class SanaLocator(AttentionLocator):
    """`SanaAttnProcessor2_0` in each block's `attn2`, a cross-attention: image queries, text
    keys only, so the softmax runs over the text alone (`attn1` is linear self-attention on the
    image, no softmax, no text). qk norms (SANA 1.5: across heads) act before the head split.
    The mask is the transformer's `encoder_attention_mask`, turned into a bias of -10000 on
    padding by the transformer and repeated over heads by the module's `prepare_attention_mask`."""

    processors = ("SanaAttnProcessor2_0",)
    batched = ("hidden_states", "encoder_hidden_states", "attention_mask")

    def attention(self, block: nn.Module) -> AttentionModule | None:
        return getattr(block, "attn2", None)

    def locate(self, attn: AttentionModule, call: Mapping[str, Any], n_txt: int | None) -> ImageQueries:
        img, txt, mask = call["hidden_states"], call["encoder_hidden_states"], call.get("attention_mask")
        if txt is None:
            raise ValueError(
                "SANA's cross-attention was called without encoder_hidden_states: there is no text to score."
            )
        batch, n_txt = txt.shape[:2]
        q, key = attn.to_q(img), attn.to_k(txt)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hd = key.shape[-1] // attn.heads
        q = q.view(batch, -1, attn.heads, hd).transpose(1, 2)  # (B, H, N_img, hd)
        key = key.view(batch, -1, attn.heads, hd).transpose(1, 2)  # (B, H, N_txt, hd)
        if mask is not None:
            mask = attn.prepare_attention_mask(mask, n_txt, batch)  # (B*H, 1, N_txt)
            mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
        return ImageQueries(q, key, slice(0, n_txt), mask)


# ---- SD3 / SD3.5: joint [img, txt], no RoPE ------------------------------------------------
class SD3Locator(AttentionLocator):
    """`JointAttnProcessor2_0` in each block's `attn`: image in `hidden_states`, text in
    `encoder_hidden_states`, keys joined [img, txt] (image first, unlike FLUX). No RoPE
    (positions are added to the patch embeddings); optional qk norms (SD3.5) act per head.
    The processor hands SDPA no mask. The last block (`context_pre_only`) still attends to
    text keys; only its text output is dropped. SD3.5's `attn2` is self-attention on the
    image only and is not read. `FusedJointAttnProcessor2_0` skips the qk norms and is refused."""

    processors = ("JointAttnProcessor2_0",)

    def locate(self, attn: AttentionModule, call: Mapping[str, Any], n_txt: int | None) -> ImageQueries:
        img, txt = call["hidden_states"], call["encoder_hidden_states"]
        if txt is None:
            raise ValueError(
                "SD3's joint attention was called without encoder_hidden_states: there is no text to score."
            )
        batch, n_img = img.shape[:2]
        split = lambda x: x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)  # noqa: E731
        q_img, k_img, k_txt = split(attn.to_q(img)), split(attn.to_k(img)), split(attn.add_k_proj(txt))  # (B, H, N, hd)
        q_img, k_img, k_txt = _joint_norms(attn, q_img, k_img, k_txt)
        key = torch.cat([k_img, k_txt], dim=2)  # (B, H, N_img + N_txt, hd)
        return ImageQueries(q_img, key, slice(n_img, n_img + txt.shape[1]))
