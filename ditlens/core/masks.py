"""Finding 2: K = 2 spatial masks from the massive channels, in torch on the model's device.

Image tokens are restricted to the selected channels, each channel is min-max normalised
over tokens, and k-means with K = 2 splits the tokens. Which of the two clusters is the
subject is a separate choice (`FOREGROUND_RULES`): the paper does not say, and the obvious
guess (the higher values) names the background on the built-in model. Batched over samples,
deterministic (no random initialisation: the two seeds are the tokens with the lowest and
highest summed value).

Scores come in two kinds: `miou` judges a labelling (rule included), `oracle_miou` and
`adjusted_rand_index` judge the split alone, so a labelling error can never hide a good
split (or pass for a bad one).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# which K = 2 cluster is named the subject, and the default chosen by measurement: choices.py
from ..choices import DEFAULT_FOREGROUND, FOREGROUND_RULES, check_foreground  # noqa: F401  (used and re-exported)
from .cuda_graphs import launch_bound
from .performance import DEFAULT_PERFORMANCE, PerformanceConfig

KMEANS_ITERATIONS = 10  # two well-separated clusters converge in a few steps; fixed: no host sync


def kmeans2(x: torch.Tensor, iterations: int = KMEANS_ITERATIONS, stop_when_stable: bool | None = None) -> torch.Tensor:
    """(B, N, k) points -> (B, N) bool: True for the cluster seeded at the highest summed value.

    Lloyd's algorithm with K = 2, written for few kernels: a point's nearer centre follows
    from one product with the centres' difference, and the low centre from the total minus
    the high cluster's sum. stop_when_stable (default: on the CPU, where checking costs no
    device sync): stop once the labels repeat; the centres then repeat too, so the result is
    exactly that of all the iterations."""
    x = x.float()
    B, N, _ = x.shape
    if stop_when_stable is None:
        stop_when_stable = not x.is_cuda and not torch.compiler.is_compiling()
    score = x.sum(-1)  # (B, N)
    low, high = _pick(x, score.argmin(1)), _pick(x, score.argmax(1))  # (B, k) seeds
    total = x.sum(1)  # (B, k)
    previous = None
    for _ in range(iterations):
        near = _nearer_to_high(x, low, high)  # (B, N)
        if stop_when_stable:
            if previous is not None and torch.equal(near, previous):
                return near
            previous = near
        weight = near.to(x.dtype)
        n_high = weight.sum(1, keepdim=True)  # (B, 1)
        sum_high = (weight.unsqueeze(-1) * x).sum(1)  # (B, k); products, not bmm: see _nearer_to_high
        # an empty cluster keeps its centre
        high = torch.where(n_high > 0, sum_high / n_high.clamp(min=1), high)
        low = torch.where(n_high < N, (total - sum_high) / (N - n_high).clamp(min=1), low)
    return _nearer_to_high(x, low, high)


def _nearer_to_high(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """|x - high|^2 < |x - low|^2, as x . (high - low) > (|high|^2 - |low|^2) / 2 (ties: low).
    The dot products as a product and a sum: on the CPU, bmm with one column took 105 us per
    call on (4, 256, 64) points, several times the elementwise form; compiled, both fuse."""
    threshold = (high.square().sum(-1, keepdim=True) - low.square().sum(-1, keepdim=True)) / 2  # (B, 1)
    return (x * (high - low).unsqueeze(1)).sum(-1) > threshold


def _pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, N, k) points, (B,) token index -> (B, k): each row's chosen point."""
    return x.gather(1, index.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)


def normalise_per_channel(x: torch.Tensor) -> torch.Tensor:
    """Min-max over tokens, per sample and channel: (B, N, k) -> [0, 1]."""
    lo = x.amin(dim=1, keepdim=True)
    hi = x.amax(dim=1, keepdim=True)
    return (x - lo) / (hi - lo).clamp(min=1e-12)


def cluster_foreground(
    x: torch.Tensor, rule: str | tuple[str, ...] = DEFAULT_FOREGROUND, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """(B, N, k) points -> (B, N) bool: normalise, K = 2 k-means, and name the foreground by
    `rule` (FOREGROUND_RULES). A tuple of rules names one split several ways: (R, B, N).
    grid: the (h, w) token grid, for `border` (default: square)."""
    z = normalise_per_channel(x.float())
    clusters = kmeans2(z)
    if isinstance(rule, str):
        return name_foreground(clusters, z, rule, grid)
    return torch.stack([name_foreground(clusters, z, r, grid) for r in rule])


def name_foreground(
    clusters: torch.Tensor, z: torch.Tensor, rule: str, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """(B, N) bool split, (B, N, k) normalised points -> (B, N) bool, True on the cluster that
    `rule` names the subject. Device ops only (no host sync): safe inside a CUDA graph."""
    inside, outside = clusters, ~clusters
    if rule in ("high", "low"):
        total = z.sum(-1)
        mean_in = (total * inside).sum(1) / inside.sum(1).clamp(min=1)
        mean_out = (total * outside).sum(1) / outside.sum(1).clamp(min=1)
        flip = mean_out > mean_in if rule == "high" else mean_out < mean_in
    else:
        size_in, size_out = inside.sum(1), outside.sum(1)
        flip = size_out < size_in  # smaller; ties keep the cluster seeded at the highest value
        if rule == "border":
            border = border_tokens(grid or token_grid(clusters.shape[1]), clusters.device)
            border_in, border_out = (inside & border).sum(1), (outside & border).sum(1)
            flip = torch.where(border_in == border_out, flip, border_out < border_in)
        elif rule != "smaller":
            check_foreground(rule)
    return torch.where(flip.unsqueeze(1), outside, inside)


def border_tokens(grid: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(h * w,) bool: True on the tokens of the grid's outer ring. Made on the device (no
    host copy), so it may run inside a capture."""
    h, w = grid
    rows = torch.arange(h, device=device).view(-1, 1)
    cols = torch.arange(w, device=device).view(1, -1)
    return ((rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)).flatten()


def foreground_tokens(
    img: torch.Tensor,
    channels: torch.Tensor | None = None,
    rule: str | tuple[str, ...] = DEFAULT_FOREGROUND,
    grid: tuple[int, int] | None = None,
    *,
    performance: PerformanceConfig = DEFAULT_PERFORMANCE,
) -> torch.Tensor:
    """K = 2 foreground per sample.

    img: (B, N, D) image tokens. channels: which channels to use, as a (B, D) bool mask with
    the same count in every row, or as (B, k) channel indices (e.g. `TopK.channel_indices`: no host
    synchronisation), or None for all channels. rule: which cluster is the subject
    (FOREGROUND_RULES); a tuple of rules gives one split named each way, (R, B, N).
    grid: the (h, w) token grid (default: square). Returns (B, N) bool.
    performance: on CUDA the clustering's ~220 tiny kernels cost launch time, not arithmetic
    (bench/mask_cost.py), so by default they are compiled and replayed as one CUDA graph
    per shape (ditlens.core.cuda_graphs); hooks pass theirs on in `HookContext.performance`."""
    x = img
    if channels is not None:
        if channels.dtype == torch.bool:
            k = int(channels[0].sum())
            if not bool((channels.sum(-1) == k).all()) or k == 0:
                raise ValueError("Every row must select the same, non-zero number of channels.")
            channels = channels.float().topk(k, dim=-1).indices  # (B, k): positions of the True entries
        x = img.gather(2, channels.unsqueeze(1).expand(-1, img.shape[1], -1))  # (B, N, k), still img's dtype
    for r in (rule,) if isinstance(rule, str) else rule:
        check_foreground(r)
    return launch_bound(cluster_foreground, performance, x, rule, grid or token_grid(img.shape[1]))


@functools.lru_cache(maxsize=64)  # asked at every site and step by the hooks: a few distinct sizes per session
def token_grid(n_tokens: int, height: int | None = None, width: int | None = None) -> tuple[int, int]:
    """(h, w) of the token grid: square unless the image aspect says otherwise."""
    if height and width:
        for h in range(1, n_tokens + 1):
            if n_tokens % h == 0 and abs(h / (n_tokens // h) - height / width) < 1e-6:
                return h, n_tokens // h
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"Cannot lay {n_tokens} tokens on a grid; give the image height and width.")
    return side, side


def upsample(mask: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(B, N) token mask -> (B, H, W) pixel mask, nearest neighbour."""
    B = mask.shape[0]
    m = mask.float().view(B, 1, *grid)
    return F.interpolate(m, size=size, mode="nearest")[:, 0] > 0.5


def iou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Foreground IoU per sample, (B, H, W) bool pair -> (B,). Both empty counts as 1."""
    inter = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def miou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Two-class mIoU per sample: the mean of the foreground and background IoU, (B,)."""
    return (iou(pred, truth) + iou(~pred, ~truth)) / 2


def oracle_miou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The better of the two labellings of the split, per sample, (B,): an upper bound on any
    foreground rule, since it reads the ground truth."""
    return torch.maximum(miou(pred, truth), miou(~pred, truth))


def adjusted_rand_index(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Adjusted Rand index of two two-way partitions of the pixels, per sample, (B,): 1 for
    the same split (either labelling), about 0 for chance. Needs no labelling at all. Where
    either partition has a single part, the index is 1 if both do and 0 otherwise."""
    a, b = pred.flatten(1).double(), truth.flatten(1).double()
    n = torch.full_like(a[:, 0], a.shape[1])
    table = torch.stack(
        [(a * b).sum(1), (a * (1 - b)).sum(1), ((1 - a) * b).sum(1), ((1 - a) * (1 - b)).sum(1)], 1
    )  # (B, 4)
    rows = torch.stack([a.sum(1), n - a.sum(1)], 1)  # (B, 2)
    cols = torch.stack([b.sum(1), n - b.sum(1)], 1)

    def pairs(c: torch.Tensor) -> torch.Tensor:
        return (c * (c - 1) / 2).sum(1)

    index, sum_rows, sum_cols = pairs(table), pairs(rows), pairs(cols)
    expected = sum_rows * sum_cols / (n * (n - 1) / 2)
    maximum = (sum_rows + sum_cols) / 2
    denominator = maximum - expected
    single = (rows.min(1).values == 0) | (cols.min(1).values == 0)
    both_single = (rows.min(1).values == 0) & (cols.min(1).values == 0)
    ari = (index - expected) / torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return torch.where(single, both_single.double(), ari).float()
