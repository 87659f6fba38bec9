"""The sample grids a training run writes to `OUT/samples`: the EMA model's images of 16
held-out captions beside their renders, every `sample_every` steps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .pipeline import BuiltinPipeline, BuiltinPipelineOutput
from .train_config import TrainConfig


def _grid(images: np.ndarray, columns: int, scale: int = 4) -> Image.Image:
    """(N, H, W, 3) floats in [0, 1] -> one PNG-ready image, each tile upscaled `scale`x."""
    n, h, w, _ = images.shape
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, 3), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    pil = Image.fromarray((canvas * 255).round().astype(np.uint8))
    return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)


class SampleGrids:
    """Sample grids of the EMA model on 16 held-out captions: a row of their renders, then
    two seeds of generated images; the captions go to `samples/captions.txt`."""

    def __init__(self, config: TrainConfig, pipe: BuiltinPipeline, folder: Path, device: torch.device):
        self.config, self.pipe, self.folder, self.device = config, pipe, folder, device
        self.batch = config.scenes.sample_batch(16, seed=12345, split="heldout")
        (folder / "captions.txt").write_text(
            "rows: ground-truth renders, then 2 seeds of generated images (EMA, "
            f"{config.sample_steps} steps, guidance {config.sample_guidance}); held-out captions by column:\n"
            + "\n".join(f"{i}: {c}" for i, c in enumerate(self.batch.captions))
            + "\n"
        )

    def save(self, step: int) -> None:
        g = torch.Generator(self.device).manual_seed(0)
        output = self.pipe(
            self.batch.captions * 2,
            num_inference_steps=self.config.sample_steps,
            guidance_scale=self.config.sample_guidance,
            generator=g,
            output_type="np",
        )
        assert isinstance(output, BuiltinPipelineOutput)  # return_dict: an output, not a tuple
        truth = (self.batch.images.permute(0, 2, 3, 1).numpy() + 1) / 2
        side = self.config.scenes.IMAGE_SIZE
        scale = max(1, 128 // side)  # 4x for v1's 32 px tiles, 2x for 64 px
        grid = _grid(np.concatenate([truth, np.asarray(output.images)]), columns=16, scale=scale)
        grid.save(self.folder / f"step_{step:06d}.png")
