"""Finding 2: K = 2 spatial masks from the massive channels, in torch on the model's device.

Image tokens are restricted to the selected channels, each channel is min-max normalised
over tokens, and k-means with K = 2 splits the tokens; the foreground is the cluster whose
mean summed (normalised) value is higher. Batched over samples, deterministic (no random
initialisation: the two seeds are the tokens with the lowest and highest summed value).
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F

from .cuda_graphs import GraphCache, TensorFunction

KMEANS_ITERATIONS = 10  # two well-separated clusters converge in a few steps; fixed: no host sync
CUDA_GRAPHS = True  # on CUDA, replay the clustering as one captured graph (launch-bound work)
COMPILE_ON_CUDA = True  # and fuse its ~220 small kernels with torch.compile first (falls back if it fails)


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


def cluster_foreground(x: torch.Tensor) -> torch.Tensor:
    """(B, N, k) points -> (B, N) bool: normalise, K = 2 k-means, and name the foreground:
    the cluster with the higher mean summed normalised value."""
    z = normalise_per_channel(x.float())
    clusters = kmeans2(z)
    total = z.sum(-1)
    mean_in = (total * clusters).sum(1) / clusters.sum(1).clamp(min=1)
    mean_out = (total * ~clusters).sum(1) / (~clusters).sum(1).clamp(min=1)
    flip = (mean_out > mean_in).unsqueeze(1)
    return torch.where(flip, ~clusters, clusters)


def foreground_tokens(img: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
    """K = 2 foreground per sample.

    img: (B, N, D) image tokens. channels: which channels to use, as a (B, D) bool mask with
    the same count in every row, or as (B, k) channel indices (e.g. `TopK.channel_indices`: no host
    synchronisation), or None for all channels. Returns (B, N) bool."""
    x = img
    if channels is not None:
        if channels.dtype == torch.bool:
            k = int(channels[0].sum())
            if not bool((channels.sum(-1) == k).all()) or k == 0:
                raise ValueError("Every row must select the same, non-zero number of channels.")
            channels = channels.float().topk(k, dim=-1).indices  # (B, k): positions of the True entries
        x = img.gather(2, channels.unsqueeze(1).expand(-1, img.shape[1], -1))  # (B, N, k), still img's dtype
    if CUDA_GRAPHS and x.is_cuda and not torch.compiler.is_compiling():
        return _graphed_cluster_foreground(x)
    return cluster_foreground(x)


_CLUSTER_GRAPHS = GraphCache()  # one per shape, kept for the session: shapes repeat across generations


def _graphed_cluster_foreground(x: torch.Tensor) -> torch.Tensor:
    """`cluster_foreground` captured once per shape as a CUDA graph and replayed: its ~220
    tiny kernels cost launch time, not arithmetic (measured in bench/mask_cost.py). With
    COMPILE_ON_CUDA, inductor fuses them first (compiled once per shape, in seconds). Inside
    a larger capture (a graphed transport edit) it joins that graph."""
    key = (tuple(x.shape), x.dtype, x.device, COMPILE_ON_CUDA)
    return _CLUSTER_GRAPHS.run(key, _cluster_on_cuda, x)


def _cluster_on_cuda(x: torch.Tensor) -> torch.Tensor:
    """The clustering to capture: compiled if it compiles, else eager."""
    if COMPILE_ON_CUDA and not _COMPILE_FAILED:
        try:
            return _compiled_cluster_foreground()(x)
        except Exception as error:  # no Triton or no C compiler: the eager kernels still work
            _COMPILE_FAILED.append(error)
            warnings.warn(f"ditlens: compiling the K=2 clustering failed ({error!r}); using eager kernels.")
    return cluster_foreground(x)


_COMPILE_FAILED: list[Exception] = []


@functools.cache
def _compiled_cluster_foreground() -> TensorFunction:
    return torch.compile(cluster_foreground, dynamic=False, fullgraph=True)


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
