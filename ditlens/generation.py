"""Running a pipeline the same way for every condition of an experiment.

One call per seed over all prompts (a batch), images back as float tensors in [0, 1], so
conditions that differ only by their edits see identical noise and compare pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image


@dataclass
class GenerationSettings:
    num_inference_steps: int | None = None  # None: the pipeline's own default
    guidance_scale: float | None = None  # None: the pipeline's own default
    height: int | None = None
    width: int | None = None
    # FLUX.1 and Qwen-Image: > 1 (with a negative prompt) adds a separate unconditional call
    # per step ("true" CFG); None: the pipeline's own default. Pipelines without it refuse it.
    true_cfg_scale: float | None = None
    negative_prompt: str | None = None  # None: the pipeline's own (mostly empty, or none)

    def kwargs(self, pipe: Any = None, batch: int | None = None, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """The pipeline arguments these settings make, for a call of `batch` prompts; with
        `pipe`, also those its family's adapter always passes (`Adapter.generation_kwargs`:
        SANA's binning off) unless the caller's own arguments `given` set them."""
        names = ("num_inference_steps", "guidance_scale", "height", "width", "true_cfg_scale")
        own = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        if self.negative_prompt is not None:  # one per prompt: FLUX.1 and Qwen-Image want as many as prompts
            own["negative_prompt"] = [self.negative_prompt] * batch if batch else self.negative_prompt
        if pipe is None or not hasattr(pipe, "transformer"):
            return own
        import inspect

        parameters = inspect.signature(pipe.__call__).parameters
        refused = [n for n in own if n not in parameters and n in ("true_cfg_scale", "negative_prompt")]
        if refused:
            raise ValueError(
                f"{type(pipe).__name__} takes no {refused[0]!r} (--{refused[0].replace('_scale', '').replace('_', '-')}); "
                "its --guidance sets its classifier-free guidance."
            )
        from .adapters import adapter_for

        defaults = {k: v for k, v in adapter_for(pipe).generation_kwargs(pipe).items() if k not in (given or {})}
        return defaults | own

    def validate(self) -> None:
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1; got {self.num_inference_steps}.")
        if self.guidance_scale is not None and not self.guidance_scale >= 0:  # NaN fails too
            raise ValueError(f"guidance_scale must be >= 0; got {self.guidance_scale}.")
        if self.true_cfg_scale is not None and not self.true_cfg_scale >= 1:
            raise ValueError(f"true_cfg_scale must be >= 1 (1 = off); got {self.true_cfg_scale}.")


def check_prompts_and_seeds(prompts: list[str], seeds: list[int]) -> None:
    if not prompts:
        raise ValueError("Give at least one prompt.")
    if not seeds:
        raise ValueError("Give at least one seed.")


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
    defaults = [getattr(parameters.get(n), "default", None) for n in ("height", "width")]
    if all(isinstance(d, int) for d in defaults):
        return (settings.height or defaults[0], settings.width or defaults[1])
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
