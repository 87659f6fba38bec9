"""Running a pipeline the same way for every condition of an experiment.

One call per seed over all prompts (a batch), images back as float tensors in [0, 1], so
conditions that differ only by their edits see identical noise and compare pixel for pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

# the settings live with the other configs (torch-free); read here too by older imports
from .config import GenerationSettings as GenerationSettings
from .config import check_prompts_and_seeds as check_prompts_and_seeds


def image_size(pipe: Any, settings: GenerationSettings) -> tuple[int, int]:
    """(H, W) the pipeline will generate with these settings."""
    if settings.height and settings.width:
        return (settings.height, settings.width)
    config_size = getattr(getattr(pipe, "config", None), "image_size", None)  # the built-in pipeline
    if config_size:
        return (settings.height or config_size, settings.width or config_size)
    sample, scale = getattr(pipe, "default_sample_size", None), getattr(pipe, "vae_scale_factor", None)
    if sample and scale:  # diffusers' latent pipelines (FLUX, SD3, ...)
        return (settings.height or sample * scale, settings.width or sample * scale)
    import inspect

    parameters = inspect.signature(pipe.__call__).parameters  # SANA: height=1024, width=1024 in its signature
    height, width = (getattr(parameters.get(n), "default", None) for n in ("height", "width"))
    if isinstance(height, int) and isinstance(width, int):
        return (settings.height or height, settings.width or width)
    raise ValueError(f"Cannot tell the image size {type(pipe).__name__} generates; give height and width.")


def generate(
    pipe: Any,
    prompts: list[str],
    seeds: list[int],
    settings: GenerationSettings,
    prompt_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """(len(seeds) * len(prompts), 3, H, W) float images in [0, 1], seed-major."""
    out = []
    for seed in seeds:
        call = dict(prompt_kwargs) if prompt_kwargs else {"prompt": prompts}
        result = pipe(
            **call,
            **settings.kwargs(pipe, len(prompts), call),
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        )
        images = result.images
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images).permute(0, 3, 1, 2)
        out.append(images.detach().float().cpu())
    images = torch.cat(out)
    from .core.checks import check_finite

    check_finite(images, "the generated images")
    return images


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(n, 3, H, W) in [0, 1] -> PIL images."""
    array = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in array]


def pixel_distances(images: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Mean squared error and PSNR (dB) of images against references, both in [0, 1]."""
    mse = ((images - reference) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1.0 / mse.clamp(min=1e-10))
    return {"mse": float(mse.mean()), "psnr_db": float(psnr.mean())}


def default_steps(pipe: Any) -> int | None:
    """The pipeline's default `num_inference_steps` (from its signature), None if it has none."""
    import inspect

    parameter = inspect.signature(pipe.__call__).parameters.get("num_inference_steps")
    default = None if parameter is None else parameter.default
    return default if isinstance(default, int) else None
