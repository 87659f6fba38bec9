"""Degenerate results: the images (noise, constant, blank, non-finite) for which a tab's status
line says "Degenerate" instead of "Done", since their scores describe a failed generation
(docs/app.md, "Degenerate results")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Measured on the built-in model: its images have a high-frequency share of 0.06-0.15, images
# with a noisy background but a clear object (bottom-k edits) up to 0.6, and top-64 zeroing,
# which draws pure noise, 0.85-1.0; uniform noise has 1.0.
NOISE_SHARE = 0.75  # high-frequency share at or above this: noise
FLAT_STD = 0.02  # pixel std (values in [0, 1]) below this, about 5 of 255 grey levels: a constant image
BLANK_SHARE = 0.25  # std below this share of the unedited image's: blank (what the unedited image showed is gone)


@dataclass(frozen=True)
class ImageCheck:
    """The numbers the degenerate-result rule reads from one image (3, H, W) in [0, 1]."""

    std: float  # pixel standard deviation within each colour channel (root of their mean variance)
    noise_share: float  # mean squared difference of neighbouring pixels / (2 x variance): 1 for uniform noise
    finite: bool
    reference_std: float | None = None  # the unedited image's std, where there is one

    @property
    def problem(self) -> str | None:
        """Why the image is degenerate, with its numbers, or None."""
        if not self.finite:
            return "non-finite pixels (NaN or infinite)"
        if self.noise_share >= NOISE_SHARE:
            return f"noise (high-frequency share {self.noise_share:.2f} >= {NOISE_SHARE})"
        if self.std < FLAT_STD:
            return f"constant (pixel std {self.std:.3f} < {FLAT_STD})"
        if self.reference_std is not None and self.std < BLANK_SHARE * self.reference_std:
            return f"blank (pixel std {self.std:.3f} < {BLANK_SHARE} x the unedited image's {self.reference_std:.3f})"
        return None


def check_image(image: torch.Tensor, reference: torch.Tensor | None = None) -> ImageCheck:
    """The degenerate-result numbers of `image` (3, H, W), against the unedited `reference`."""
    x = image.detach().float().cpu()
    finite = bool(torch.isfinite(x).all())
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
    variance = float(x.flatten(1).var(1, unbiased=False).mean())  # within each colour channel
    dx = float((x[:, :, 1:] - x[:, :, :-1]).pow(2).mean()) if x.shape[2] > 1 else 0.0
    dy = float((x[:, 1:] - x[:, :-1]).pow(2).mean()) if x.shape[1] > 1 else 0.0
    share = (dx + dy) / 2 / (2 * variance) if variance > 1e-12 else 0.0  # neighbours of uniform noise differ by 2 var
    reference_std = None if reference is None else check_image(reference).std
    return ImageCheck(std=variance**0.5, noise_share=share, finite=finite, reference_std=reference_std)


def degenerate(name: str, images: torch.Tensor, references: torch.Tensor | None = None) -> str | None:
    """One phrase for a group of images (a condition, the target alone, ...) holding a
    degenerate one, e.g. "top-64: 2 of 2 images degenerate, e.g. noise (...)"; None if none is."""
    checks = [check_image(image, None if references is None else references[i]) for i, image in enumerate(images)]
    problems = [c.problem for c in checks if c.problem]
    if not problems:
        return None
    if len(checks) == 1:
        return f"{name}: {problems[0]}"
    return f"{name}: {len(problems)} of {len(checks)} images degenerate, e.g. {problems[0]}"


def degenerate_images(images: torch.Tensor, prompts: list[str], seeds: list[int]) -> list[str]:
    """One phrase per degenerate image of a seed-major batch (images = seeds x prompts)."""
    named = [f"image {i} (seed {seeds[i // len(prompts)]}, prompt {i % len(prompts) + 1})" for i in range(len(images))]
    return [p for name, image in zip(named, images) if (p := degenerate(name, image[None]))]
