"""The parts both attribute classifiers' networks are built from: a convolutional trunk and
eval-mode logits in batches."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

import torch
from torch import nn

Logits = TypeVar("Logits")


def conv_trunk(channels: tuple[int, ...], groups: int, stem: int = 0) -> tuple[nn.Sequential, int]:
    """(trunk, output channels): an optional full-resolution 3x3 conv of `stem` channels, then
    one stage per entry of `channels`, each a stride-2 conv and a conv, with GroupNorm (batch
    independent, so eval behaves as training) and SiLU."""
    layers: list[nn.Module] = []
    c_in = 3
    if stem:
        layers += [nn.Conv2d(3, stem, 3, padding=1), nn.GroupNorm(groups, stem), nn.SiLU()]
        c_in = stem
    for c in channels:
        # Downsample first: full-resolution convs would cost 4x more on CPU for nothing
        # (a 3x3 stride-2 window still sees every pixel, v1's 2 px cross arms included).
        layers += [
            nn.Conv2d(c_in, c, 3, stride=2, padding=1),
            nn.GroupNorm(groups, c),
            nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.GroupNorm(groups, c),
            nn.SiLU(),
        ]
        c_in = c
    return nn.Sequential(*layers), c_in


def check_image_size(images: torch.Tensor, size: int, what: str = "images") -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        raise ValueError(f"Expected {what} of shape (n, 3, {size}, {size}) in [-1, 1], got {tuple(images.shape)}")


@torch.no_grad()
def eval_logits(classifier: nn.Module, images: torch.Tensor, batch_size: int, logits_type: type[Logits]) -> Logits:
    """The classifier's logits (a dataclass of tensors, `logits_type`) on the CPU, computed in
    eval mode in batches on the classifier's device; its mode is restored after."""
    param = next(classifier.parameters())
    was_training = classifier.training
    classifier.eval()
    try:
        parts: list[Any] = [classifier(chunk.to(param.device, param.dtype)) for chunk in images.split(batch_size)]
    finally:
        classifier.train(was_training)
    columns = fields(logits_type)  # type: ignore[arg-type]  # logits types are dataclasses
    return logits_type(*(torch.cat([getattr(p, f.name) for p in parts]).cpu() for f in columns))
