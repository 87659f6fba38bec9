"""The attention-map baseline of Finding 2: where the image looks at the subject's words.

For each image token (query), the softmax attention weight it puts on chosen text tokens
(keys), summed over those tokens and averaged over heads, per site and step. K = 2 masks come
from clustering that 1-D map, so it sits in the same mIoU tables as the channel rules
(`SegmentResult.masks["attention"] = attention_masks(maps)`).

    with ditlens.hooks(pipe) as run, AttentionMaps(pipe, [2, 3], prompts=1, step_fn=lambda: run.clock.step) as maps:
        pipe("a red cube on the left", generator=torch.Generator().manual_seed(0))
    fg = attention_masks(maps.result())  # (steps, sites, samples, N_img) bool

How: in every chosen block, the attention module that holds image queries and text keys
(a joint attention over text and image, or a cross-attention from image to text) has its
processor wrapped. The wrapper calls the original processor unchanged (so outputs stay
bit-identical) and, beside it, hands the call's arguments to the family's locator
(`ditlens.adapters.attention`), which rebuilds the image queries and all keys from the
module's own sub-modules as that family's processor forms them. Only image-query rows are
scored, in chunks: logits against ALL keys give the softmax denominator (log-sum-exp), then
only the text columns are exponentiated. The scores are computed in float32 whatever the
model's dtype: they are the exact softmax of the model's q and k, not of its low-precision
attention kernel.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .adapters import ADAPTERS, adapter_for
from .adapters.attention import AttentionLocator, ImageQueries
from .adapters.base import Site, UnsupportedModelError

# where a word of a prompt sits in the text stream: the positions AttentionMaps scores (public here too)
from .adapters.text_positions import TruncatedWordError as TruncatedWordError
from .adapters.text_positions import template_positions as template_positions
from .adapters.text_positions import word_positions as word_positions
from .core.masks import foreground_tokens
from .core.rows import conditional_slice


def _supported() -> list[str]:
    return sorted(name for a in ADAPTERS if a.attention_locator is not None for name in a.transformer_classes)


#: diffusers transformer classes whose attention this module knows how to read (their adapter has a locator)
SUPPORTED_CLASSES = tuple(_supported())
#: logits held at once per chunk of image queries (float32): 2^24 = 64 MiB, small next to
#: a FLUX.1 step at 1024 px and enough that small models need a single chunk
CHUNK_ELEMENTS = 2**24


# ---- the scores ---------------------------------------------------------------------------
def image_to_text_attention(
    queries: ImageQueries, text_weights: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS
) -> torch.Tensor:
    """(B, N_img) float32: per image query, the attention on the weighted text keys, mean over heads.

    text_weights: (B, N_txt), 1 at the chosen text tokens (0 elsewhere), N_txt the keys in
    `queries.txt`. The softmax runs over all keys of `queries.key`, as in the model;
    `queries.mask` follows SDPA's rules (bool: True = attend; float: added to the logits)."""
    q_img = queries.q.float()  # (B, H, N_img, hd)
    key = queries.key.float()  # (B, H, S, hd)
    B, H, n_img, hd = q_img.shape
    S = key.shape[2]
    txt = queries.txt
    n_txt = queries.n_txt
    if tuple(text_weights.shape) != (B, n_txt):
        raise ValueError(
            f"text_weights has shape {tuple(text_weights.shape)}; the keys hold {B} rows of {n_txt} text tokens."
        )
    mask = queries.mask
    scale = 1.0 / math.sqrt(hd)  # SDPA's default (scale=None), as every wired processor calls it
    weights = text_weights.float()[:, None, None, :]  # (B, 1, 1, N_txt)
    chunk = max(1, chunk_elements // max(1, B * H * S))
    maps = []
    for start in range(0, n_img, chunk):
        stop = min(start + chunk, n_img)
        logits = (q_img[:, :, start:stop] @ key.transpose(-1, -2)) * scale  # (B, H, c, S)
        if mask is not None:
            m = mask if mask.shape[-2] == 1 else mask[..., start:stop, :]
            logits = logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.float()
        lse = logits.logsumexp(-1, keepdim=True)  # (B, H, c, 1): the full softmax denominator
        probs_txt = (logits[..., txt] - lse).exp()  # (B, H, c, N_txt): only the text columns
        maps.append((probs_txt * weights).sum(-1).mean(1))  # (B, c)
    return torch.cat(maps, dim=1)


# ---- the processor wrapper ----------------------------------------------------------------
class AttentionMapProcessor:
    """Wraps one attention module's processor: returns the original's output unchanged and
    hands the call's arguments, by name, to an `AttentionMaps` to score. Not an `nn.Module`;
    owns no weights. Built by `_wrap`, as a subclass that shows the original's signature."""

    def __init__(self, original: Any, site: str, maps: AttentionMaps):
        self.original = original
        self.site = site
        self.maps = maps
        self._signature = inspect.signature(original.__call__)

    def __call__(self, attn: nn.Module, *args: Any, **kwargs: Any) -> Any:
        out = self.original(attn, *args, **kwargs)
        call = self._signature.bind(attn, *args, **kwargs)
        call.apply_defaults()
        self.maps._observe(self.site, attn, call.arguments)
        return out


@functools.cache
def _wrapper_class(processor_cls: type) -> type[AttentionMapProcessor]:
    """An `AttentionMapProcessor` whose `__call__` shows `processor_cls.__call__`'s signature:
    attention modules read it to choose which keyword arguments to pass (diffusers' `Attention`
    drops the others), so the original must keep receiving exactly what it received."""

    def __call__(self: AttentionMapProcessor, attn: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return AttentionMapProcessor.__call__(self, attn, *args, **kwargs)

    __call__.__signature__ = inspect.signature(processor_cls.__call__)  # type: ignore[attr-defined]
    return type("AttentionMapProcessor", (AttentionMapProcessor,), {"__call__": __call__, "__module__": __name__})


def _wrap(original: Any, site: str, maps: AttentionMaps) -> AttentionMapProcessor:
    processor_cls: type = type(original)
    return _wrapper_class(processor_cls)(original, site, maps)


def _params(cls: type) -> tuple[str, ...]:
    return tuple(inspect.signature(cls.__call__).parameters)[1:]  # without self


def _check_wrappable(processor: Any, site: str, locator: AttentionLocator) -> None:
    if isinstance(processor, AttentionMapProcessor):
        raise RuntimeError(
            f"Already hooked: {site}'s attention is inside another AttentionMaps context. Close that one first; "
            "nested maps would score twice."
        )
    known = [c for c in type(processor).__mro__ if c.__name__ in locator.processors]
    if not known:
        raise ValueError(
            f"{site}'s attention uses {type(processor).__name__}; AttentionMaps reproduces the softmax of "
            f"{', '.join(locator.processors)} only (another processor may attend to other keys)."
        )
    if _params(type(processor)) != _params(known[0]):
        raise ValueError(
            f"{site}'s attention uses {type(processor).__name__} with arguments {_params(type(processor))}; "
            f"AttentionMaps reads {known[0].__name__}'s {_params(known[0])} only (extra arguments, e.g. IP-Adapter "
            "images, change what the attention attends to)."
        )


def _locator_for(model: Any) -> AttentionLocator:
    adapter = adapter_for(model)  # refuses classes (and pipelines) that have no adapter at all
    if adapter.attention_locator is None:
        raise UnsupportedModelError(
            f"Attention maps are not wired for {type(adapter.transformer).__name__}. Supported: "
            f"{', '.join(_supported())}."
        )
    return adapter.attention_locator


def _check_positions(token_positions: Any) -> list[list[int]] | list[int]:
    """Positions as given (a list, a list per sample, or a tensor), checked and as lists."""
    if isinstance(token_positions, torch.Tensor):
        token_positions = token_positions.tolist()
    if not token_positions:
        raise ValueError("token_positions is empty: give the text positions of the subject's words.")
    per_sample = isinstance(token_positions[0], (list, tuple))
    rows: list[list[int]] = [list(p) for p in token_positions] if per_sample else [list(token_positions)]
    for row in rows:
        if not row or not all(isinstance(i, int) and i >= 0 for i in row):
            raise ValueError(f"token_positions must be non-empty lists of non-negative ints, got {token_positions!r}.")
    return rows if per_sample else rows[0]


# ---- the context manager ------------------------------------------------------------------
class AttentionMaps:
    """Context manager: image-to-text attention maps per site and step during normal runs.

    model: a pipeline (anything with `.transformer`) or its transformer, of a class in
        `SUPPORTED_CLASSES`.
    token_positions: text-sequence positions of the subject's words (see `word_positions`),
        one list for every sample, or one list per sample (as many as the rows kept).
    prompts: prompts per pipeline call. Only each sample's conditional rows are scored
        (`ditlens.core.rows`: the second half of a concatenated [uncond, cond] call, or the first
        of two calls per step); unconditional and guidance calls are skipped. None = every
        row of every call is a sample.
    sites: block names (`transformer_blocks.0`, `single_transformer_blocks.3`); None = every
        block with image-to-text attention (all blocks of the five wired families).
    step_fn: returns the current denoising step, e.g. `lambda: run.clock.step` inside
        `ditlens.hooks(pipe) as run`, which counts scheduler steps. Without it, each
        transformer call is one step (right for pipelines that call the transformer once per
        step; a second context over the same object keeps counting).

    With `prompts=None`, every call made within one step appends its rows to the samples
    axis, in call order (FluxPipeline with true_cfg_scale > 1: [cond rows, negative rows]).
    """

    def __init__(
        self,
        model: Any,
        token_positions: Sequence[int] | Sequence[Sequence[int]],
        *,
        prompts: int | None = None,
        sites: Sequence[str] | None = None,
        step_fn: Callable[[], int] | None = None,
    ):
        self.transformer = getattr(model, "transformer", model)
        self.locator = _locator_for(model)
        if prompts is not None and (not isinstance(prompts, int) or prompts < 1):
            raise ValueError(f"prompts must be a positive int or None, got {prompts!r}.")
        self.token_positions = _check_positions(token_positions)
        self.prompts = prompts
        self.step_fn = step_fn
        self._sites = self._pick_sites(sites)
        self._parts: dict[tuple[int, str], list[torch.Tensor]] = defaultdict(list)
        self._calls = 0  # transformer forward calls seen: the step when there is no step_fn
        self._step_calls: list[int] = []  # rows of this step's calls so far
        self._call_step: int | None = None
        self._keep: slice | None = slice(None)  # the rows of the call in progress to score; None: none
        self._n_txt: int | None = None  # text length of the current call (joint single-stream blocks need it)
        self._wrapped: list[tuple[nn.Module, Any]] = []  # (attention module, original processor)
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _pick_sites(self, names: Sequence[str] | None) -> list[tuple[Site, Any]]:
        """(site, its attention module holding image queries and text keys), in forward order."""
        all_sites = adapter_for(self.transformer).sites()
        with_text = [(s, self.locator.attention(s.module)) for s in all_sites]
        if names is None:
            return [(s, attn) for s, attn in with_text if attn is not None]
        known = {s.name: attn for s, attn in with_text}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"Unknown site {unknown[0]!r}. Sites of this model: {', '.join(known)}.")
        without = [n for n in names if known[n] is None]
        if without:
            raise ValueError(f"Site {without[0]!r} has no attention from image to text tokens.")
        return [(s, attn) for s, attn in with_text if s.name in set(names) and attn is not None]

    # ---- attach / detach ----
    def __enter__(self) -> AttentionMaps:
        try:
            for site, attn in self._sites:
                _check_wrappable(attn.processor, site.name, self.locator)
            for site, attn in self._sites:
                self._wrapped.append((attn, attn.processor))
                attn.set_processor(_wrap(attn.processor, site.name, self))
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
            raise ValueError(
                "AttentionMaps needs the transformer's encoder_hidden_states (the text) to find the image tokens."
            )
        self._n_txt = int(txt.shape[1])
        self._calls += 1
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        assert hidden is not None, "a transformer call without hidden_states"
        step = self.step_fn() if self.step_fn is not None else self._calls - 1
        if step != self._call_step:
            self._call_step, self._step_calls = step, []
        self._step_calls.append(int(hidden.shape[0]))
        self._keep = slice(None) if self.prompts is None else conditional_slice(tuple(self._step_calls), self.prompts)

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

    def _kept_rows(self, call: Mapping[str, Any], keep: slice) -> dict[str, Any]:
        """The processor's arguments cut to the rows `keep` (those the locator names batched)."""
        batch = call["hidden_states"].shape[0]
        if keep == slice(None) or keep == slice(0, batch):
            return dict(call)
        cut = lambda v: isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch  # noqa: E731  (1 = broadcast)
        return {k: v[keep] if k in self.locator.batched and cut(v) else v for k, v in call.items()}

    @torch.no_grad()
    def _observe(self, site: str, attn: nn.Module, call: Mapping[str, Any]) -> None:
        if self._keep is None:  # an unconditional or guidance call: no sample of its own
            return
        queries = self.locator.locate(attn, self._kept_rows(call, self._keep), self._n_txt)
        weights = self._text_weights(queries.q.shape[0], queries.n_txt, queries.q.device)
        maps = image_to_text_attention(queries, weights)
        step = self.step_fn() if self.step_fn is not None else self._calls - 1
        self._parts[(int(step), site)].append(maps.cpu())

    # ---- results ----
    @property
    def sites(self) -> list[str]:
        """Names of the sites scored, in forward order."""
        seen = {site for _, site in self._parts}
        return [s.name for s, _ in self._sites if s.name in seen]

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
