"""Reading user images and masks with clear errors (missing, corrupt, wrong size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _open(path: str | Path, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{what} {str(path)!r} is not a readable image ({type(err).__name__}: {err}).") from None
    return image


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, str | None]:
    """(3, H, W) float in [0, 1], resized (bicubic) to `size` (H, W) if given.

    Returns the image and a note when it was resized, so callers can tell the user."""
    image = _open(path, "Image").convert("RGB")
    note = None
    if size is not None and (image.height, image.width) != tuple(size):
        note = f"resized {path} from {image.height}x{image.width} to {size[0]}x{size[1]} (H x W)"
        image = image.resize((size[1], size[0]), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), note


def load_mask(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: pixels brighter than half; the mask must already have the image size."""
    image = _open(path, "Mask").convert("L")
    if (image.height, image.width) != tuple(size):
        raise ValueError(
            f"Mask {str(path)!r} is {image.height}x{image.width} (H x W) but the images are {size[0]}x{size[1]}."
        )
    return torch.from_numpy(np.asarray(image) > 127)


def load_mask_folder(folder: str | Path, count: int, size: tuple[int, int]) -> torch.Tensor:
    """(count, H, W) bool from a folder of mask images, matched to images in sorted name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Mask folder {str(folder)!r} does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) != count:
        raise ValueError(
            f"Mask folder {str(folder)!r} holds {len(files)} mask images but there are {count} generated images "
            "(one mask per prompt and seed, seed-major, in sorted file-name order)."
        )
    return torch.stack([load_mask(f, size) for f in files])
