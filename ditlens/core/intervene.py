"""Composable edits of the image stream, scoped by site, step, rows, tokens and channels.

An edit is a small object with `applies(ctx)` and `__call__(img, ctx) -> img`; the hooks
run the edits of a site in order, so edits compose. All edits share one rule:

    img <- img + alpha * M * (target_value - img),   M = p m^T  (tokens x channels)

computed with `torch.lerp`, which is exact where the weight is 0 or 1, with
`target_value` = 0 (zero), `factor * img` (scale), or another batch row (replace).

Edits are plain rules: whether one runs from a captured CUDA graph is the hooks' choice
(ditlens.core.cuda_graphs, by the hooks' PerformanceConfig); an edit only says when it may be
(`ReplaceFromRows.graph_safe_for`) and which edits act alike (`value_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .channels import ChannelSelector
from .sites import check_sites

if TYPE_CHECKING:
    from .hooks import HookContext

#: a token mask: None (all tokens), a (N,) or (B, N) tensor of {0,1} or [0,1] weights, or a
#: function of the current image tokens and the hook context returning one of those.
TokenMask = torch.Tensor | Callable[[torch.Tensor, "HookContext"], torch.Tensor] | None


@dataclass(frozen=True)
class Scope:
    """Where and when an edit acts. None means everywhere."""

    sites: tuple[str, ...] | None = None  # site names, as `print(transformer)` shows them
    step_window: tuple[int, int] | None = None  # [start, stop) denoising steps
    rows: tuple[int, ...] | None = None  # batch rows within each transformer call

    def contains(self, ctx: HookContext) -> bool:
        if self.sites is not None and ctx.site not in self.sites:
            return False
        if self.step_window is not None and not self.step_window[0] <= ctx.step < self.step_window[1]:
            return False
        return True

    def validate(self, site_names: Sequence[str], num_steps: int | None = None) -> None:
        if self.sites is not None:
            check_sites(self.sites, site_names)
        if self.step_window is not None:
            start, stop = self.step_window
            limit = num_steps if num_steps is not None else float("inf")
            if not (0 <= start < stop <= limit):
                allowed = f"0 <= start < stop <= {num_steps}" if num_steps is not None else "0 <= start < stop"
                raise ValueError(f"Step window {list(self.step_window)} is outside the schedule; allowed: {allowed}.")


def resolve_tokens(tokens: TokenMask, img: torch.Tensor, ctx: HookContext) -> torch.Tensor | None:
    """Token mask as a (B, N, 1) float tensor on img's device, or None for all tokens."""
    if tokens is None:
        return None
    p = tokens(img, ctx) if callable(tokens) else tokens
    B, N, _ = img.shape
    if p.shape[-1] != N:
        raise ValueError(f"Token mask covers {p.shape[-1]} tokens but the image stream has {N}.")
    p = p.to(device=img.device, dtype=img.dtype)
    return p.expand(B, N).unsqueeze(-1) if p.dim() == 1 else p.unsqueeze(-1)


def _edit_mask(img: torch.Tensor, channels: ChannelSelector, tokens: TokenMask, ctx: HookContext) -> torch.Tensor:
    """M = p m^T, broadcastable to img: (B, N or 1, D)."""
    m = channels.mask(img).to(img.dtype).unsqueeze(1)  # (B, 1, D)
    p = resolve_tokens(tokens, img, ctx)  # (B, N, 1) or None
    return m if p is None else p * m


def _only_rows(new: torch.Tensor, old: torch.Tensor, rows: tuple[int, ...] | None) -> torch.Tensor:
    if rows is None:
        return new
    keep = torch.zeros(old.shape[0], 1, 1, dtype=torch.bool, device=old.device)
    keep[list(rows)] = True
    return torch.where(keep, new, old)


@dataclass(frozen=True)
class ScaleChannels:
    """Multiply the selected channels by `factor` (0 = zero them, the disruption probe)."""

    channels: ChannelSelector
    factor: float = 0.0
    tokens: TokenMask = None
    scope: Scope = field(default_factory=Scope)

    def applies(self, ctx: HookContext) -> bool:
        return self.scope.contains(ctx)

    def __call__(self, img: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        M = _edit_mask(img, self.channels, self.tokens, ctx)
        new = torch.lerp(img, self.factor * img, M.expand_as(img))  # lerp is exact at M = 0 and M = 1
        return _only_rows(new, img, self.scope.rows)


def ZeroChannels(channels: ChannelSelector, tokens: TokenMask = None, scope: Scope | None = None) -> ScaleChannels:
    return ScaleChannels(channels, 0.0, tokens, scope or Scope())


def source_rows(batch_size: int, group_size: int, source_of: dict[int, int]) -> torch.Tensor:
    """(B,) index of each row's source row; rows that are no target point to themselves."""
    if batch_size % group_size:
        raise ValueError(f"Batch of {batch_size} rows is not a multiple of {group_size} prompts per call.")
    src = torch.arange(batch_size)
    for r in range(batch_size):
        b = r % group_size
        if b in source_of:
            src[r] = r - b + source_of[b]
    return src


@dataclass(frozen=True)
class ReplaceFromRows:
    """Copy channels from source rows into target rows of the same call: transport.

    `source_of` maps a target prompt index to a source prompt index. Rows come in groups of
    `group_size` prompts (a CFG batch `[uncond..., cond...]` is two such groups), so row r
    with r % group_size == b takes from row r - b + source_of[b]. Channels are selected on
    the source row (`channels_from="source"`) or on both rows (`"union"`)."""

    source_of: dict[int, int]
    group_size: int
    channels: ChannelSelector
    tokens: TokenMask = None
    alpha: float = 1.0  # 1 = the paper's rule (full replacement); 0 = no edit
    channels_from: str = "source"
    scope: Scope = field(default_factory=Scope)
    alphas: dict[int, float] | None = None  # per target prompt, overriding alpha (one-batch strips)
    stream: str = "img"  # which stream's tokens it edits: "img", or "txt" (its own top-k channels)
    # a memo of what the fields say per batch (see _plan), never part of the edit's value; a
    # captured graph reads these very tensors, so they live as long as the edit
    _plans: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for a in [self.alpha, *(self.alphas or {}).values()]:
            if not 0.0 <= a <= 1.0:
                raise ValueError(f"alpha must be within [0, 1]; got {a!r}.")
        if self.stream not in ("img", "txt"):
            raise ValueError(f"stream must be 'img' or 'txt'; got {self.stream!r}.")
        if self.channels_from not in ("source", "union", "target"):
            raise ValueError(f"channels_from must be 'source', 'union' or 'target'; got {self.channels_from!r}.")
        bad = [i for pair in self.source_of.items() for i in pair if not 0 <= i < self.group_size]
        if bad:
            raise ValueError(f"Prompt index {bad[0]} is outside 0..{self.group_size - 1} (the prompts per call).")

    def applies(self, ctx: HookContext) -> bool:
        strengths = self.alphas.values() if self.alphas else [self.alpha]
        return self.scope.contains(ctx) and max(strengths) > 0

    def row_alphas(self, batch_size: int) -> torch.Tensor:
        """(B, 1, 1) strength per row."""
        a = torch.full((batch_size,), float(self.alpha))
        for b, value in (self.alphas or {}).items():
            a[b :: self.group_size] = value
        return a.view(-1, 1, 1)

    def source_rows(self, batch_size: int) -> torch.Tensor:
        return source_rows(batch_size, self.group_size, self.source_of)

    def value_key(self) -> Hashable | None:
        """What makes two edits act alike (hashable), or None where it cannot be told (a
        token mask without a `graph_key`, e.g. a tensor or a user's function)."""
        tokens = None if self.tokens is None else getattr(self.tokens, "graph_key", None)
        if self.tokens is not None and tokens is None:
            return None
        key = (
            tuple(sorted(self.source_of.items())),
            self.group_size,
            self.channels,
            tokens,
            self.alpha,
            tuple(sorted((self.alphas or {}).items())),
            self.channels_from,
            self.scope,
            self.stream,
        )
        try:
            hash(key)
        except TypeError:  # an unhashable channel selector
            return None
        return key

    def graph_safe_for(self, img: torch.Tensor) -> bool:
        """Whether this edit of img is a function of img alone, with no host sync (so that it
        may be captured, ditlens.core.cuda_graphs): its channel selector and token mask say so
        (`graph_safe`), or the mask is a tensor already on img's device."""
        tokens = self.tokens
        tokens_safe = (
            tokens is None
            or (isinstance(tokens, torch.Tensor) and tokens.device == img.device)
            or getattr(tokens, "graph_safe", False)
        )
        return getattr(self.channels, "graph_safe", False) and tokens_safe

    def __call__(self, img: torch.Tensor, ctx: HookContext, *, in_place: bool = False) -> torch.Tensor:
        """Every row lerps towards its source row at once, with weight alpha * M on the target
        rows and 0 elsewhere (other rows, unselected channels and tokens: exact there for
        finite values, as lerp is at 0). A few kernels over the whole batch: faster than
        gathering only the selected values, on the CPU and the GPU (docs/performance.md).
        in_place: write into img (only for the caller's own copy: a CUDA graph's static input)."""
        rows, strength = self._plan(img)  # (B,) source row per row, (B, 1) its alpha
        if self.channels_from == "source" and hasattr(self.channels, "channel_indices"):
            # selectors act per row: select on every row, then take each row's source's pick
            chosen = self.channels.channel_indices(img, ordered=False)[rows]  # (B, k)
            weight = img.new_zeros(img.shape[0], img.shape[2]).scatter_(1, chosen, strength.expand_as(chosen))
        else:
            picked = self.channels.mask(img)  # (B, D) bool, each row's own pick
            m = picked if self.channels_from == "target" else picked[rows]
            if self.channels_from == "union":
                m = m | picked
            weight = strength * m.to(img.dtype)
        weight = weight.unsqueeze(1)  # (B, 1, D)
        p = resolve_tokens(self.tokens, img, ctx)  # (B, N, 1) or None
        # gathered after the selection (whose float32 statistic may copy img), and the result
        # written into the gathered copy: one block-sized buffer at a time
        src = img.index_select(0, rows)
        return torch.lerp(img, src, weight if p is None else weight * p, out=img if in_place else src)

    def _plan(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) each row's source row (itself where the row does not change) and (B, 1) its
        strength (0 there) on img's device, made once per batch size: a host-to-device copy at
        every site would stall the GPU queue."""
        key = (img.shape[0], img.device, img.dtype)
        if key not in self._plans:
            batch_size = img.shape[0]
            rows, itself = self.source_rows(batch_size), torch.arange(batch_size)
            in_scope = torch.tensor([self.scope.rows is None or r in self.scope.rows for r in range(batch_size)])
            changes = (rows != itself) & in_scope
            strength = torch.where(changes, self.row_alphas(batch_size).view(-1), 0.0).view(-1, 1)
            self._plans[key] = (torch.where(changes, rows, itself).to(img.device), strength.to(img.device, img.dtype))
        return self._plans[key]
