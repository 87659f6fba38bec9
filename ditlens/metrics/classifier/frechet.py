"""The Frechet distance between two sets of features (the classifiers' penultimate
features for the built-in model, CLIP image features for real ones)."""

from __future__ import annotations

import torch


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(m)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), in float64.

    tr((S_a S_b)^1/2) = tr((S_a^1/2 S_b S_a^1/2)^1/2); the inner product is symmetric PSD,
    so both roots come from `eigh` (no scipy, no complex parts to discard)."""
    for name, f in (("feats_a", feats_a), ("feats_b", feats_b)):
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"{name} must be (n >= 2, F), got shape {tuple(f.shape)}")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"Feature sizes differ: {feats_a.shape[1]} vs {feats_b.shape[1]}")
    a, b = feats_a.detach().cpu().double(), feats_b.detach().cpu().double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(cov_a)
    inner = root_a @ cov_b @ root_a
    inner = (inner + inner.T) / 2  # symmetric up to rounding; eigh needs it exactly
    trace_sqrt = torch.linalg.eigvalsh(inner).clamp_min(0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return max(float(fd), 0.0)  # tiny negatives are rounding
