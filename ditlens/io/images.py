"""Reading user images and masks with clear errors (missing, corrupt, wrong size)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .text import check_user_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


#: the largest image ditlens reads (pixels): 8192 x 8192, far above any supported model's
#: size, and far below what would exhaust memory once decoded (PIL's own bomb check warns
#: at 89 million pixels and refuses at 179 million only)
MAX_IMAGE_PIXELS = 8192 * 8192


_OPEN_LOCK = threading.Lock()


def _open(path: str | Path, what: str) -> Image.Image:
    """The image at `path`, decoded, of any mode: checked for size before it is decoded."""
    path = Path(path)
    check_user_file(path, what, "an image file")
    try:
        with _OPEN_LOCK:  # PIL refuses a "bomb" at open, before it names the size: ditlens checks it itself
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{what} {str(path)!r} is {image.height}x{image.width} pixels; ditlens reads images of at most "
                f"{MAX_IMAGE_PIXELS:,} pixels (8192 x 8192). Resize it first."
            )
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{what} {str(path)!r} is not a readable image ({type(err).__name__}: {err}).") from None
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """Any mode PIL decodes -> 8 bits per channel, without clipping: 16- and 32-bit
    integer images ("I;16", "I") are scaled by their range, float ones ("F") taken as
    [0, 1]. PIL's own `convert` clips them to 255 (a 16-bit image turns white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            array = array / 65535.0
        elif image.mode == "I":  # 32-bit: PNG stores 16-bit grey as "I" in some PIL versions
            array = array / (65535.0 if array.max(initial=0) > 255 else 255.0)
        return Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8), mode="L")
    return image


def _rgb(image: Image.Image) -> Image.Image:
    """RGB of any mode: palette and CMYK converted, alpha composited over white (what a
    viewer shows), 16-bit scaled to 8 bits."""
    image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _grey(image: Image.Image) -> Image.Image:
    """Luminance of any mode, 16-bit scaled to 8 bits; alpha ignored (a mask is its values)."""
    image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA", "P"):
        image = image.convert("RGBA").convert("RGB")
    return image.convert("L")


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, str | None]:
    """(3, H, W) float in [0, 1], resized (bicubic) to `size` (H, W) if given.

    Returns the image and a note when it was resized, so callers can tell the user."""
    image = _rgb(_open(path, "Image"))
    note = None
    if size is not None and (image.height, image.width) != tuple(size):
        note = f"resized {path} from {image.height}x{image.width} to {size[0]}x{size[1]} (H x W)"
        image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), note


def load_mask(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: pixels brighter than half; the mask must already have the image size."""
    image = _grey(_open(path, "Mask"))
    if (image.height, image.width) != tuple(size):
        raise ValueError(
            f"Mask {str(path)!r} is {image.height}x{image.width} (H x W) but the images are {size[0]}x{size[1]}."
        )
    return torch.from_numpy(np.asarray(image) > 127)


def check_image_file(path: str | Path, what: str = "Image") -> tuple[int, int]:
    """(H, W) of a readable image: a missing, corrupt or oversized file is refused before
    any model loads."""
    image = _open(path, what)
    return image.height, image.width


def check_mask_folder(folder: str | Path, count: int) -> None:
    """A folder of `count` readable mask images, checked before any model runs (their size
    is checked against the images once those exist)."""
    for path in _mask_files(folder, count):
        check_image_file(path, "Mask")


def load_mask_folder(folder: str | Path, count: int, size: tuple[int, int]) -> torch.Tensor:
    """(count, H, W) bool from a folder of mask images, matched to images in sorted name order."""
    return torch.stack([load_mask(f, size) for f in _mask_files(folder, count)])


def _mask_files(folder: str | Path, count: int) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Mask folder {str(folder)!r} does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) != count:
        raise ValueError(
            f"Mask folder {str(folder)!r} holds {len(files)} mask images but there are {count} generated images "
            "(one mask per prompt and seed, seed-major, in sorted file-name order)."
        )
    return files
