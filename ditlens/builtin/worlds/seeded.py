"""Seeded draws for world v2: a counter-based hash (splitmix64's finaliser), so each of an
image's draws depends on its seed and the draw's keys alone, and a whole batch is drawn in
a few array operations (no random generator state to thread through)."""

from __future__ import annotations

import numpy as np

M1, M2, GAMMA = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wraps mod 2**64, as intended)."""
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


def hash_keys(*keys: np.ndarray | int) -> np.ndarray:
    """uint64 hashes, one per broadcast element of the keys, mixed in one key at a time."""
    h = np.atleast_1d(np.asarray(0x243F6A8885A308D3, np.uint64))
    for key in keys:
        key = np.atleast_1d(np.asarray(key))
        h = mix(h + GAMMA + key.astype(np.int64).astype(np.uint64))
    return h


def uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Floats in [0, 1), one per broadcast element of the keys."""
    return (hash_keys(*keys) >> np.uint64(11)).astype(np.float64) * 2.0**-53
