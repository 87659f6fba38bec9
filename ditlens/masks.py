"""Finding 2: K = 2 spatial masks from the massive channels, in torch on the model's device.

Image tokens are restricted to the selected channels, each channel is min-max normalised
over tokens, and k-means with K = 2 splits the tokens; the foreground is the cluster whose
mean summed (normalised) value is higher. Batched over samples, deterministic (no random
initialisation: the two seeds are the tokens with the lowest and highest summed value).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KMEANS_ITERATIONS = 10  # two well-separated clusters converge in a few steps; fixed for speed


def kmeans2(x: torch.Tensor, iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """(B, N, k) points -> (B, N) bool: True for the cluster seeded at the highest summed value."""
    x = x.float()
    B = x.shape[0]
    score = x.sum(-1)  # (B, N)
    rows = torch.arange(B, device=x.device)
    centres = torch.stack([x[rows, score.argmin(1)], x[rows, score.argmax(1)]], dim=1)  # (B, 2, k)
    for _ in range(iterations):
        label = torch.cdist(x, centres).argmin(-1)  # (B, N) in {0, 1}
        one_hot = F.one_hot(label, 2).float()  # (B, N, 2)
        counts = one_hot.sum(1).unsqueeze(-1)  # (B, 2, 1)
        new = one_hot.transpose(1, 2) @ x / counts.clamp(min=1)
        centres = torch.where(counts > 0, new, centres)  # an empty cluster keeps its centre
    return torch.cdist(x, centres).argmin(-1) == 1


def normalise_per_channel(x: torch.Tensor) -> torch.Tensor:
    """Min-max over tokens, per sample and channel: (B, N, k) -> [0, 1]."""
    lo = x.amin(dim=1, keepdim=True)
    hi = x.amax(dim=1, keepdim=True)
    return (x - lo) / (hi - lo).clamp(min=1e-12)


def foreground_tokens(img: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
    """K = 2 foreground per sample.

    img: (B, N, D) image tokens; channels: (B, D) bool mask of the channels to use (the same
    count in every row), or None for all channels. Returns (B, N) bool."""
    x = img.float()
    if channels is not None:
        k = int(channels[0].sum())
        if not bool((channels.sum(-1) == k).all()) or k == 0:
            raise ValueError("Every row must select the same, non-zero number of channels.")
        index = channels.float().topk(k, dim=-1).indices  # (B, k): positions of the True entries
        x = x.gather(2, index.unsqueeze(1).expand(-1, x.shape[1], -1))  # (B, N, k)
    z = normalise_per_channel(x)
    clusters = kmeans2(z)
    # foreground = the cluster with the higher mean summed normalised value
    total = z.sum(-1)
    mean_in = (total * clusters).sum(1) / clusters.sum(1).clamp(min=1)
    mean_out = (total * ~clusters).sum(1) / (~clusters).sum(1).clamp(min=1)
    flip = (mean_out > mean_in).unsqueeze(1)
    return torch.where(flip, ~clusters, clusters)


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
