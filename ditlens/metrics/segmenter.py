"""Foreground masks of generated images from a semantic segmenter the user points to: the
ground truth of Finding 2 on real models, where no exact masks exist.

    segmenter = Segmenter.from_pretrained("/models/segformer-b5-ade", background=("wall", "floor", "sky"))
    truth = segmenter.foreground(images)   # (n, H, W) bool: pixels of any class not named background

Any `transformers` AutoModelForSemanticSegmentation folder works (SegFormer, UperNet, ...).
A pixel is foreground when its arg-max class is not one of the background labels; the
labels are matched case-insensitively against the model's `id2label`. A two-class salient
object model ({0: background, 1: object}) needs nothing more; a scene parser (ADE20K) needs
its stuff classes named. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .folders import SEGMENTER_FILES, check_segmenter_folder, load_local

DEFAULT_BACKGROUND = ("background",)  # the class a salient-object segmenter names so


class Segmenter:
    """A semantic-segmentation model and its processor, giving foreground masks."""

    def __init__(self, model, processor, background_ids: set[int]):
        self.model = model.eval()
        self.processor = processor
        self.background_ids = background_ids

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", background: Sequence[str] = DEFAULT_BACKGROUND
    ) -> Segmenter:
        """Load from a local folder only; a bad folder or an unknown background label is a ValueError."""
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        path = Path(path)
        check_segmenter_folder(path)
        model, processor = load_local(
            path, "a segmenter", SEGMENTER_FILES, AutoModelForSemanticSegmentation, AutoImageProcessor
        )
        labels = {int(i): str(name) for i, name in model.config.id2label.items()}
        wanted = {b.strip().lower() for b in background if b.strip()}
        ids = {i for i, name in labels.items() if name.lower() in wanted}
        unknown = sorted(wanted - {labels[i].lower() for i in ids})
        if unknown or not ids:
            raise ValueError(
                f"Background label(s) {unknown or sorted(wanted)} are not classes of {str(path)!r}; its classes: "
                f"{', '.join(labels[i] for i in sorted(labels))}."
            )
        if len(ids) == len(labels):
            raise ValueError(f"Every class of {str(path)!r} is named background; nothing would be foreground.")
        return cls(model.to(device), processor, ids)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def foreground(self, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """(n, 3, H, W) in [0, 1] -> (n, H, W) bool, at the images' own size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (n, 3, H, W) tensor, got {tuple(images.shape)}.")
        size = images.shape[-2:]
        background = torch.tensor(sorted(self.background_ids))
        out = []
        for chunk in images.split(batch_size):
            pixels = (chunk.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            inputs = self.processor(images=list(np.ascontiguousarray(pixels)), return_tensors="pt")
            logits = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.model.dtype)).logits
            classes = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False).argmax(1).cpu()
            out.append(~torch.isin(classes, background))
        return torch.cat(out)
