"""Sampling machinery both procedural worlds share: scenes as rows of integer arrays, the
draws both samplers make alike, the train/held-out split of captions, and the tensors of a
batch.

Both worlds sample in the same way: draw a chunk of candidate scenes as arrays (one row per
image), keep those of the wanted split (and, in each world's own way, those that keep every
object visible enough), repeat until the batch is full, then render the kept rows at once.
"""

from __future__ import annotations

import zlib
from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "heldout")
HELDOUT_MODULUS = 10  # 1 caption in 10 is held out of training (by a stable hash of the caption)
N_OBJECT_WEIGHTS = np.array([0.4, 0.4, 0.2])  # how often the samplers draw 1, 2, 3 objects
_TO_UNIT = (np.arange(256, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)  # uint8 -> [-1, 1]

Rows = TypeVar("Rows", bound="ArrayRows")


class ArrayRows:
    """Base of frozen dataclasses of numpy arrays whose first axis is the image: rows can be
    taken and batches joined, field by field."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # what @dataclass gives each subclass

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))

    def take(self: Rows, index: np.ndarray) -> Rows:
        return type(self)(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def concat(cls: type[Rows], parts: list[Rows]) -> Rows:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def is_heldout_caption(text: str) -> bool:
    """The train/held-out split on the caption: crc32 is stable across runs and machines,
    unlike Python's salted `hash`."""
    return zlib.crc32(text.encode()) % HELDOUT_MODULUS == 0


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def check_batch(n: int, split: str) -> None:
    check_split(split)
    if n < 0:
        raise ValueError(f"Batch size must be >= 0, got {n}")


def draw_counts(rng: np.random.Generator, k: int, n_objects: int | None, max_objects: int) -> np.ndarray:
    """(k,) objects per scene: `n_objects` each, or 1..max_objects by N_OBJECT_WEIGHTS."""
    if n_objects is None:
        return 1 + rng.choice(max_objects, size=k, p=N_OBJECT_WEIGHTS)
    if 1 <= n_objects <= max_objects:
        return np.full(k, n_objects, np.int64)
    raise ValueError(f"n_objects must be None or 1..{max_objects}, got {n_objects}")


def draw_positions(rng: np.random.Generator, k: int, n_positions: int, max_objects: int) -> np.ndarray:
    """(k, max_objects) distinct position indices per scene."""
    return np.argsort(rng.random((k, n_positions)), axis=1)[:, :max_objects]


def object_masks(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, H, W) bool from (H, W) labels (the top-most object's slot per pixel, -1 =
    background): the visible pixels of objects 0..n-1."""
    return labels[None] == np.arange(n, dtype=np.int8)[:, None, None]


def batch_tensors(
    pixels: np.ndarray, labels: np.ndarray, counts: np.ndarray
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """A batch's tensors from its renders: images (k, 3, H, W) float32 in [-1, 1] (exactly
    uint8 / 127.5 - 1), masks per image (n_obj, H, W) bool in the scene's object order, and
    background masks (k, H, W) bool. pixels: (k, H, W, 3) uint8; labels: (k, H, W) int8
    (slot per pixel, -1 = background); counts: (k,) objects per image."""
    import torch  # here only: checking prompts against a vocabulary needs no torch

    slots = np.arange(int(counts.max(initial=0)), dtype=np.int8)
    masks = labels[:, None] == slots[None, :, None, None]  # (k, MAX, H, W)
    return (
        torch.from_numpy(np.ascontiguousarray(_TO_UNIT[pixels.transpose(0, 3, 1, 2)])),
        [torch.from_numpy(masks[i, : counts[i]]) for i in range(len(counts))],
        torch.from_numpy(labels < 0),
    )


def caption_split(texts: list[str], split: str) -> np.ndarray:
    """Indices of the captions of `split`."""
    want_heldout = split == "heldout"
    return np.flatnonzero([is_heldout_caption(t) == want_heldout for t in texts])
