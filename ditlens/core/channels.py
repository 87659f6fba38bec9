"""Which channels are massive: statistics and selection rules.

All rules act per sample (batch row): a selector turns image tokens `(B, N, D)` into a
boolean channel mask `(B, D)`. The same rules run offline on recorded `ChannelStats`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..choices import DEFAULT_STATISTIC

#: statistic name -> what it measures over the image tokens of one sample
STATISTICS: dict[str, str] = {
    "abs_mean": "|mean over tokens of x_d| (the paper's statistic)",
    "mean_abs": "mean over tokens of |x_d|",
    "max_abs": "max over tokens of |x_d|",
}


def check_statistic(name: str) -> None:
    if name not in STATISTICS:
        raise ValueError(f"Unknown channel statistic {name!r}. Allowed: {', '.join(STATISTICS)}.")


def check_k(k: int, num_channels: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= num_channels:
        raise ValueError(f"k must be an integer in 1..{num_channels} (the hidden size); got {k!r}.")


def channel_reduction(img: torch.Tensor, statistic: str) -> torch.Tensor:
    """The one pass over the tokens behind a statistic: (B, N, D) -> (B, D), accumulated in
    float32 without a float32 copy of the tokens; `finish_statistic` makes the statistic.
    Split so that recording launches one kernel per statistic and site, and finishes its
    whole table at once. On CUDA the |x| passes are `vector_norm` (no |x| copy); on the CPU,
    where `vector_norm` is 7-14x slower than `abs()` plus a reduction (measured on
    (4, 256, 256) float32, one thread), they take the copy."""
    if statistic == "abs_mean":
        return img.mean(dim=1, dtype=torch.float32)
    if statistic == "mean_abs":
        if img.is_cuda:
            return torch.linalg.vector_norm(img, 1, dim=1, dtype=torch.float32)
        return img.abs().sum(dim=1, dtype=torch.float32)
    if statistic == "max_abs":  # in img's dtype: the largest |x| is one of its values, exactly
        if img.is_cuda:
            return torch.linalg.vector_norm(img, float("inf"), dim=1)
        return img.abs().amax(dim=1)
    check_statistic(statistic)
    raise AssertionError("unreachable")


def finish_statistic(reduced: torch.Tensor, statistic: str, n_tokens: int) -> torch.Tensor:
    """`channel_reduction`'s output (any leading shape) -> the float32 statistic."""
    if statistic == "abs_mean":
        return reduced.abs()
    if statistic == "mean_abs":
        return reduced / n_tokens
    return reduced.float()


def channel_statistic(img: torch.Tensor, statistic: str = DEFAULT_STATISTIC) -> torch.Tensor:
    """(B, N, D) tokens -> (B, D) float32 statistic (see `STATISTICS`)."""
    return finish_statistic(channel_reduction(img, statistic), statistic, img.shape[1])


def top_k_mask(values: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """(..., D) values -> (..., D) bool mask of the k largest (or smallest) entries."""
    idx = values.topk(k, dim=-1, largest=largest).indices
    return torch.zeros_like(values, dtype=torch.bool).scatter_(-1, idx, True)


class ChannelSelector(Protocol):
    """A rule that picks channels per sample from the current activations."""

    def mask(self, img: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, D) bool
        ...

    def validate(self, num_channels: int) -> None: ...


@dataclass(frozen=True)
class TopK:
    """The k channels with the largest statistic: the massive activations."""

    graph_safe = True  # a function of img alone, no host sync: may be captured (ditlens.core.cuda_graphs)
    k: int
    statistic: str = DEFAULT_STATISTIC  # the paper's |mean over tokens|

    def mask(self, img: torch.Tensor) -> torch.Tensor:
        return top_k_mask(channel_statistic(img, self.statistic), self.k, largest=True)

    def channel_indices(self, img: torch.Tensor, ordered: bool = True) -> torch.Tensor:
        """(B, N, D) -> (B, k), largest first; `ordered=False`: the same channels in any order
        (on CUDA one kernel less: no sort after the selection)."""
        return channel_statistic(img, self.statistic).topk(self.k, dim=-1, sorted=ordered).indices

    def validate(self, num_channels: int) -> None:
        check_k(self.k, num_channels)
        check_statistic(self.statistic)


@dataclass(frozen=True)
class BottomK:
    """Control: the k channels with the smallest statistic."""

    graph_safe = True  # a function of img alone, no host sync: may be captured (ditlens.core.cuda_graphs)
    k: int
    statistic: str = DEFAULT_STATISTIC

    def mask(self, img: torch.Tensor) -> torch.Tensor:
        return top_k_mask(channel_statistic(img, self.statistic), self.k, largest=False)

    def validate(self, num_channels: int) -> None:
        check_k(self.k, num_channels)
        check_statistic(self.statistic)


@dataclass(frozen=True)
class RandomK:
    """Control: k channels drawn uniformly with a seed; the same set at every site and step."""

    k: int
    seed: int = 0

    def channels(self, num_channels: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randperm(num_channels, generator=gen)[: self.k]

    def mask(self, img: torch.Tensor) -> torch.Tensor:
        B, _, D = img.shape
        m = torch.zeros(D, dtype=torch.bool)
        m[self.channels(D)] = True
        return m.to(img.device).expand(B, D)

    def validate(self, num_channels: int) -> None:
        check_k(self.k, num_channels)


@dataclass(frozen=True)
class Fixed:
    """Explicit channel indices, e.g. read off a `find` run."""

    indices: tuple[int, ...]

    def mask(self, img: torch.Tensor) -> torch.Tensor:
        B, _, D = img.shape
        m = torch.zeros(D, dtype=torch.bool, device=img.device)
        m[list(self.indices)] = True
        return m.expand(B, D)

    def validate(self, num_channels: int) -> None:
        bad = [i for i in self.indices if not 0 <= i < num_channels]
        if not self.indices or bad:
            raise ValueError(
                f"Channel indices must be a non-empty list within 0..{num_channels - 1}; got {list(self.indices)!r}."
            )


@dataclass(frozen=True)
class Threshold:
    """The LLM literature's rule: max |x_d| > `absolute` and > `ratio` x the sample's median channel.

    The median is taken over channels of the `mean_abs` statistic (a typical magnitude)."""

    absolute: float = 100.0  # Sun et al. 2024, "Massive activations in LLMs"
    ratio: float = 1000.0  # same source; DiTs often need lower values: see `ditlens find`

    def mask(self, img: torch.Tensor) -> torch.Tensor:
        peak = channel_statistic(img, "max_abs")
        median = channel_statistic(img, "mean_abs").median(dim=-1, keepdim=True).values
        return (peak > self.absolute) & (peak > self.ratio * median)

    def validate(self, num_channels: int) -> None:
        if self.absolute < 0 or self.ratio <= 0:
            raise ValueError(f"Threshold needs absolute >= 0 and ratio > 0; got {self.absolute!r}, {self.ratio!r}.")


def selector_from_name(rule: str, k: int, statistic: str = DEFAULT_STATISTIC, seed: int = 0) -> ChannelSelector:
    """CLI names -> selectors: top, bottom, random."""
    rules: dict[str, Callable[[], ChannelSelector]] = {
        "top": lambda: TopK(k, statistic),
        "bottom": lambda: BottomK(k, statistic),
        "random": lambda: RandomK(k, seed),
    }
    if rule not in rules:
        raise ValueError(f"Unknown channel rule {rule!r}. Allowed: {', '.join(rules)}.")
    return rules[rule]()


def stable_seed(*parts: object) -> int:
    """A seed from names, stable across Python processes (unlike hash())."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


# ---- stability of selected sets ---------------------------------------------------------


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Jaccard index of boolean masks along the last axis: (..., D), (..., D) -> (...)."""
    inter = (a & b).sum(-1).float()
    union = (a | b).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def mean_pairwise_jaccard(masks: torch.Tensor) -> torch.Tensor:
    """(M, ..., D) bool masks of M items -> (...) mean Jaccard over all pairs of items."""
    M = masks.shape[0]
    if M < 2:
        return torch.ones(masks.shape[1:-1])
    total = torch.zeros(masks.shape[1:-1])
    for i in range(M):
        for j in range(i + 1, M):
            total += jaccard(masks[i], masks[j])
    return total / (M * (M - 1) / 2)
