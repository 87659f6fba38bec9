"""Pictures for the page: plots drawn by `ditlens.reporting.plots` and opened in memory, and small
images upscaled so that they stay crisp on a screen."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..generation import to_pil

DISPLAY_PIXELS = 256  # small images are shown upscaled (nearest) to about this size

PLOTTING = threading.Lock()  # pyplot keeps global state: one picture at a time across the worker threads


def upscaled(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL, upscaled with nearest neighbour so small images stay crisp."""
    pil = to_pil(image[None])[0]
    scale = max(1, DISPLAY_PIXELS // max(pil.size))
    return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)


def picture(draw: Callable[[Path], Path]) -> Image.Image:
    """Run a `ditlens.reporting.plots` function into a temporary file and return the picture in memory."""
    with PLOTTING, tempfile.TemporaryDirectory(prefix="ditlens-app-") as tmp:
        return opened(draw(Path(tmp) / "plot.png"))


def opened(path: Path) -> Image.Image:
    """The picture at `path`, read into memory (the file may go)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def as_tensor(image: Image.Image) -> torch.Tensor:
    """PIL -> (3, H, W) float in [0, 1], as the library's images are."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
