"""The attention-map baseline of Finding 2: where the image looks at the subject's words.

For each image token (query), the softmax attention weight it puts on chosen text tokens
(keys) of the joint [txt, img] attention, summed over those tokens and averaged over heads,
per site and step. K = 2 masks come from clustering that 1-D map, so it sits in the same
mIoU tables as the channel rules (`SegmentResult.masks["attention"] = attention_masks(maps)`).

    with ditlens.hooks(pipe) as run, AttentionMaps(pipe, [2, 3], rows=1, step_fn=lambda: run.clock.step) as maps:
        pipe("a red cube on the left", generator=torch.Generator().manual_seed(0))
    fg = attention_masks(maps.result())  # (steps, sites, samples, N_img) bool

How: every chosen block's attention processor is wrapped. The wrapper calls the original
processor unchanged (so outputs stay bit-identical) and, beside it, rebuilds the image
queries and all keys from the attention module's own sub-modules exactly as diffusers'
`FluxAttnProcessor` forms them (projections, per-head RMS norms, RoPE over [txt, img]).
Only image-query rows are scored, in chunks: logits against ALL keys give the softmax
denominator (log-sum-exp), then only the text columns are exponentiated. The scores are
computed in float32 whatever the model's dtype: they are the exact softmax of the model's
q and k, not of its low-precision attention kernel.
"""

from __future__ import annotations

import inspect
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn

from .adapters import adapter_for
from .adapters.base import Site, UnsupportedModelError
from .masks import foreground_tokens

#: diffusers transformer classes whose attention this module knows how to read
SUPPORTED_CLASSES = ("FluxTransformer2DModel",)
#: the arguments FluxAttention passes to its processor; a processor that takes more (e.g. the
#: IP-Adapter one) would lose them behind a wrapper, so it is refused rather than altered
_PROCESSOR_ARGS = ("attn", "hidden_states", "encoder_hidden_states", "attention_mask", "image_rotary_emb")
#: logits held at once per chunk of image queries (float32): 2^24 = 64 MiB, small next to
#: a FLUX.1 step at 1024 px and enough that small models need a single chunk
CHUNK_ELEMENTS = 2**24


# ---- the scores ---------------------------------------------------------------------------
def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.unflatten(-1, (-1, head_dim))  # (B, S, H*hd) -> (B, S, H, hd), as FluxAttnProcessor


def _image_queries_and_keys(
    attn: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
    n_txt: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image queries (B, N_img, H, hd) and joint [txt, img] keys (B, N_txt + N_img, H, hd),
    formed as diffusers 0.42's `FluxAttnProcessor` forms them.

    Dual-stream block: `hidden_states` is the image, `encoder_hidden_states` the text (its own
    projections add_*_proj and norms norm_added_*). Single-stream block: `hidden_states` is
    the joint sequence, text first; `n_txt` says where the image starts."""
    hd = attn.head_dim
    fused = getattr(attn, "fused_projections", False)
    if encoder_hidden_states is not None:  # dual stream: separate img/txt projections
        img, txt = hidden_states, encoder_hidden_states
        if fused:
            q_img, k_img, _ = attn.to_qkv(img).chunk(3, dim=-1)
            _, k_txt, _ = attn.to_added_qkv(txt).chunk(3, dim=-1)
        else:
            q_img, k_img, k_txt = attn.to_q(img), attn.to_k(img), attn.add_k_proj(txt)
        q_img = attn.norm_q(_heads(q_img, hd))
        key = torch.cat([attn.norm_added_k(_heads(k_txt, hd)), attn.norm_k(_heads(k_img, hd))], dim=1)
    else:  # single stream: one joint sequence [txt, img]
        if fused:
            q, key, _ = attn.to_qkv(hidden_states).chunk(3, dim=-1)
            q_img = q[:, n_txt:]
        else:
            q_img, key = attn.to_q(hidden_states[:, n_txt:]), attn.to_k(hidden_states)
        q_img, key = attn.norm_q(_heads(q_img, hd)), attn.norm_k(_heads(key, hd))
    if image_rotary_emb is not None:  # RoPE is per position: the image rows take the image slice
        cos, sin = image_rotary_emb  # (N_txt + N_img, hd) each
        key = apply_rotary_emb(key, (cos, sin), sequence_dim=1)
        q_img = apply_rotary_emb(q_img, (cos[n_txt:], sin[n_txt:]), sequence_dim=1)
    return q_img, key


def _as_4d_mask(mask: torch.Tensor) -> torch.Tensor:
    while mask.ndim < 4:  # SDPA broadcasts masks against (B, H, L, S) from the right
        mask = mask.unsqueeze(0)
    return mask


def image_to_text_attention(
    attn: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
    text_weights: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """(B, N_img) float32: per image query, the attention on the weighted text keys, mean over heads.

    text_weights: (B, N_txt), 1 at the chosen text tokens (0 elsewhere). The softmax runs over
    all N_txt + N_img keys, as in the model; `attention_mask` follows SDPA's rules (bool: True
    = attend; float: added to the logits)."""
    n_txt = text_weights.shape[1]
    q_img, key = _image_queries_and_keys(attn, hidden_states, encoder_hidden_states, image_rotary_emb, n_txt)
    q_img = q_img.float().transpose(1, 2)  # (B, H, N_img, hd)
    key = key.float().transpose(1, 2)  # (B, H, S, hd)
    B, H, n_img, hd = q_img.shape
    S = key.shape[2]
    if S != n_txt + n_img:
        raise ValueError(f"Joint sequence has {S} tokens but text ({n_txt}) + image ({n_img}) make {n_txt + n_img}.")
    mask = None if attention_mask is None else _as_4d_mask(attention_mask)
    scale = 1.0 / math.sqrt(hd)  # dispatch_attention_fn's default (scale=None), as FluxAttnProcessor calls it
    weights = text_weights.float()[:, None, None, :]  # (B, 1, 1, N_txt)
    chunk = max(1, chunk_elements // max(1, B * H * S))
    maps = []
    for start in range(0, n_img, chunk):
        stop = min(start + chunk, n_img)
        logits = (q_img[:, :, start:stop] @ key.transpose(-1, -2)) * scale  # (B, H, c, S)
        if mask is not None:
            m = mask if mask.shape[-2] == 1 else mask[..., n_txt + start : n_txt + stop, :]
            logits = logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.float()
        lse = logits.logsumexp(-1, keepdim=True)  # (B, H, c, 1): the full softmax denominator
        probs_txt = (logits[..., :n_txt] - lse).exp()  # (B, H, c, N_txt): only the text columns
        maps.append((probs_txt * weights).sum(-1).mean(1))  # (B, c)
    return torch.cat(maps, dim=1)


# ---- the processor wrapper ----------------------------------------------------------------
class AttentionMapProcessor:
    """Wraps one attention module's processor: returns the original's output unchanged and
    hands the inputs to an `AttentionMaps` to score. Not an `nn.Module`; owns no weights."""

    def __init__(self, original: Any, site: str, maps: AttentionMaps):
        self.original = original
        self.site = site
        self.maps = maps

    # FluxAttention reads this signature to filter kwargs: it must match the original's (checked on wrap)
    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Any:
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        self.maps._observe(self.site, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        return out


def _check_wrappable(processor: Any, site: str) -> None:
    if isinstance(processor, AttentionMapProcessor):
        raise RuntimeError(
            f"Already hooked: {site}.attn is inside another AttentionMaps context. Close that one first; "
            "nested maps would score twice."
        )
    params = tuple(inspect.signature(processor.__call__).parameters)
    if params != _PROCESSOR_ARGS:
        raise ValueError(
            f"{site}.attn uses {type(processor).__name__} with arguments {params}; AttentionMaps wraps "
            f"processors with FluxAttnProcessor's arguments {_PROCESSOR_ARGS} only (extra arguments, "
            "e.g. IP-Adapter images, would not reach it through the wrapper)."
        )


def _check_supported(transformer: nn.Module) -> None:
    names = {cls.__name__ for cls in type(transformer).__mro__}
    if not names & set(SUPPORTED_CLASSES):
        raise UnsupportedModelError(
            f"Attention maps are not wired for {type(transformer).__name__}. Supported: {', '.join(SUPPORTED_CLASSES)}."
        )


def _check_positions(token_positions: Sequence[int] | Sequence[Sequence[int]]) -> list[list[int]] | list[int]:
    if isinstance(token_positions, torch.Tensor):
        token_positions = token_positions.tolist()
    if not token_positions:
        raise ValueError("token_positions is empty: give the text positions of the subject's words.")
    per_sample = isinstance(token_positions[0], (list, tuple))
    rows = [list(p) for p in token_positions] if per_sample else [list(token_positions)]
    for row in rows:
        if not row or not all(isinstance(i, int) and i >= 0 for i in row):
            raise ValueError(f"token_positions must be non-empty lists of non-negative ints, got {token_positions!r}.")
    return rows if per_sample else rows[0]


# ---- the context manager ------------------------------------------------------------------
class AttentionMaps:
    """Context manager: image-to-text attention maps per site and step during normal runs.

    model: a pipeline (anything with `.transformer`) or a `FluxTransformer2DModel`.
    token_positions: text-sequence positions of the subject's words (see `word_positions`),
        one list for every sample, or one list per sample (as many as the rows kept).
    rows: keep only the last `rows` rows of every call (the conditional half when guidance
        is batched as [uncond..., cond...], as in the built-in pipeline); None = all rows.
    sites: block names (`transformer_blocks.0`, `single_transformer_blocks.3`); None = all.
    step_fn: returns the current denoising step, e.g. `lambda: run.clock.step` inside
        `ditlens.hooks(pipe) as run`, which counts scheduler steps. Without it, each
        transformer call is one step (right for pipelines that call the transformer once per
        step; a second context over the same object keeps counting).

    Every call made within one step appends its rows to the samples axis, in call order
    (FluxPipeline with true_cfg_scale > 1: [cond rows, negative rows]).
    """

    def __init__(
        self,
        model: Any,
        token_positions: Sequence[int] | Sequence[Sequence[int]],
        *,
        rows: int | None = None,
        sites: Sequence[str] | None = None,
        step_fn: Callable[[], int] | None = None,
    ):
        self.transformer = getattr(model, "transformer", model)
        _check_supported(self.transformer)
        if rows is not None and (not isinstance(rows, int) or rows < 1):
            raise ValueError(f"rows must be a positive int or None, got {rows!r}.")
        self.token_positions = _check_positions(token_positions)
        self.rows = rows
        self.step_fn = step_fn
        self._sites = self._pick_sites(sites)
        self._parts: dict[tuple[int, str], list[torch.Tensor]] = defaultdict(list)
        self._calls = 0  # transformer forward calls seen: the step when there is no step_fn
        self._n_txt: int | None = None  # text length of the current call (single-stream blocks need it)
        self._wrapped: list[tuple[nn.Module, Any]] = []  # (attention module, original processor)
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _pick_sites(self, names: Sequence[str] | None) -> list[Site]:
        all_sites = adapter_for(self.transformer).sites()
        if names is None:
            return all_sites
        known = {s.name: s for s in all_sites}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"Unknown site {unknown[0]!r}. Sites of this model: {', '.join(known)}.")
        return [s for s in all_sites if s.name in set(names)]  # forward order

    # ---- attach / detach ----
    def __enter__(self) -> AttentionMaps:
        try:
            for site in self._sites:
                _check_wrappable(site.module.attn.processor, site.name)
            for site in self._sites:
                attn = site.module.attn
                self._wrapped.append((attn, attn.processor))
                attn.set_processor(AttentionMapProcessor(attn.processor, site.name, self))
            self._handle = self.transformer.register_forward_pre_hook(self._on_transformer_call, with_kwargs=True)
        except BaseException:
            self._detach()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._detach()

    def _detach(self) -> None:
        for attn, original in reversed(self._wrapped):
            attn.set_processor(original)
        self._wrapped.clear()
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_transformer_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        txt = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        if txt is None:
            raise ValueError("AttentionMaps needs the transformer's encoder_hidden_states (the text) to find the image tokens.")
        self._n_txt = int(txt.shape[1])
        self._calls += 1

    # ---- scoring ----
    def _text_weights(self, batch: int, n_txt: int, device: torch.device) -> torch.Tensor:
        rows = self.token_positions if isinstance(self.token_positions[0], list) else [self.token_positions] * batch
        if len(rows) != batch:
            raise ValueError(f"token_positions has {len(rows)} per-sample lists but {batch} rows are scored.")
        weights = torch.zeros(batch, n_txt, device=device)
        for b, positions in enumerate(rows):
            if max(positions) >= n_txt:
                raise ValueError(f"Token position {max(positions)} is out of range: the text has {n_txt} tokens.")
            weights[b, positions] = 1.0  # a position named twice still counts once
        return weights

    @torch.no_grad()
    def _observe(
        self,
        site: str,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        n_txt = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else self._n_txt
        if n_txt is None:
            raise RuntimeError("Text length unknown: the attention ran outside a transformer call.")
        if self.rows and self.rows > hidden_states.shape[0]:
            raise ValueError(f"rows={self.rows} but the transformer was called with {hidden_states.shape[0]} rows.")
        keep = slice(-self.rows, None) if self.rows else slice(None)
        hidden_states = hidden_states[keep]
        if encoder_hidden_states is not None:
            encoder_hidden_states = encoder_hidden_states[keep]
        if attention_mask is not None:
            attention_mask = _as_4d_mask(attention_mask)
            if attention_mask.shape[0] > 1:
                attention_mask = attention_mask[keep]
        weights = self._text_weights(hidden_states.shape[0], n_txt, hidden_states.device)
        maps = image_to_text_attention(attn, hidden_states, encoder_hidden_states, image_rotary_emb, weights, attention_mask)
        step = self.step_fn() if self.step_fn is not None else self._calls - 1
        self._parts[(int(step), site)].append(maps.cpu())

    # ---- results ----
    @property
    def sites(self) -> list[str]:
        """Names of the sites scored, in forward order."""
        seen = {site for _, site in self._parts}
        return [s.name for s in self._sites if s.name in seen]

    @property
    def steps(self) -> list[int]:
        return sorted({step for step, _ in self._parts})

    def result(self) -> torch.Tensor:
        """(steps, sites, samples, N_img) float32 maps on the CPU, in `steps` x `sites` order."""
        if not self._parts:
            raise RuntimeError("No attention was scored: run the pipeline inside the AttentionMaps context.")
        missing = [(t, s) for t in self.steps for s in self.sites if (t, s) not in self._parts]
        if missing:
            raise RuntimeError(f"Step {missing[0][0]} has no map for site {missing[0][1]}; cannot stack steps x sites.")
        grid = [[torch.cat(self._parts[(t, s)]) for s in self.sites] for t in self.steps]
        shapes = {tuple(m.shape) for row in grid for m in row}
        if len(shapes) != 1:
            raise RuntimeError(f"Steps and sites hold different numbers of samples or tokens ({sorted(shapes)}).")
        return torch.stack([torch.stack(row) for row in grid])  # (steps, sites, samples, N_img)


def attention_masks(maps: torch.Tensor) -> torch.Tensor:
    """K = 2 foreground from attention maps: (..., N_img) float -> same shape bool.

    Each map is min-max normalised and split by `masks.kmeans2`, exactly the channel rules'
    clustering on a 1-channel input; foreground = the cluster with the higher attention
    (rule `high`): here the polarity is known, since the map measures attention to the
    subject's own words."""
    flat = maps.reshape(-1, maps.shape[-1], 1)  # (M, N, 1)
    return foreground_tokens(flat, rule="high").reshape(maps.shape)


# ---- word -> text positions ---------------------------------------------------------------
def word_positions(prompt: str, words: Sequence[str], tokenizer: Any = None) -> list[int]:
    """Text-sequence positions of `words` (each a word or phrase) in `prompt`, sorted.

    tokenizer None: the built-in text encoder's layout `[CLS] w_1 ... w_n [PAD]...`, so word i
    (0-based, whitespace split) sits at i + 1; phrases match consecutive words exactly.
    A Hugging Face fast tokenizer (e.g. FLUX.1's T5): every token whose characters overlap a
    whole-word, case-insensitive occurrence; positions count from the start of the sequence
    the pipeline encodes (padding comes after, so it does not move them).
    """
    if isinstance(words, str):
        words = [words]
    positions: set[int] = set()
    if tokenizer is None:
        tokens = prompt.split()
        for word in words:
            phrase = word.split()
            starts = [i for i in range(len(tokens) - len(phrase) + 1) if tokens[i : i + len(phrase)] == phrase]
            if not phrase or not starts:
                raise ValueError(f"Word {word!r} does not occur in prompt {prompt!r}.")
            positions.update(1 + i + j for i in starts for j in range(len(phrase)))  # +1: the CLS token
        return sorted(positions)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"word_positions needs a fast (Rust) tokenizer for character offsets; got {type(tokenizer).__name__}.")
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    for word in words:
        spans = [m.span() for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", prompt, flags=re.IGNORECASE)]
        hits = {i for i, (s, e) in enumerate(offsets) if e > s for ws, we in spans if s < we and e > ws}
        if not word.strip() or not hits:
            raise ValueError(f"Word {word!r} does not occur in prompt {prompt!r}.")
        positions.update(hits)
    return sorted(positions)
