"""CLIP-based scores for real models, with a CLIP the user points to (a local folder).

    scorer = ClipScorer.from_pretrained("/models/clip-vit-large-patch14")
    scores = scorer.clip_score(images, prompts)                # (n,) 100 * max(cos, 0)
    drift = scorer.cosine_distance(edited, unedited)           # (n,) 1 - cos
    fd = scorer.frechet_distance(edited, unedited)             # float, in CLIP image features

Nothing is downloaded: the folder must hold what `CLIPModel.save_pretrained` and the
tokenizer's and image processor's `save_pretrained` write (a Hugging Face snapshot of e.g.
openai/clip-vit-large-patch14 does). Images are preprocessed in torch, as CLIP's image
processor does (shortest edge resized bicubic with antialiasing, centre crop, mean/std from
the folder's preprocessor_config.json), so no torchvision or PIL round trip is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .classifier.frechet import frechet_distance as _frechet_distance
from .folders import CLIP_FILES as EXPECTED_FILES
from .folders import check_clip_folder, load_local

BATCH_SIZE = 32  # images or prompts per forward: bounds memory for ViT-L/14 at 224 px on a laptop


@dataclass(frozen=True)
class ClipPreprocess:
    """CLIP's image preprocessing, in torch: (n, 3, H, W) in [0, 1] -> normalised pixels."""

    shortest_edge: int  # resize so the shorter side has this many pixels (aspect kept)
    crop: tuple[int, int]  # (height, width) of the centre crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, config: dict, image_size: int) -> ClipPreprocess:
        """From a preprocessor_config.json dict; sizes may be ints or dicts (old and new formats)."""
        size = config.get("size", image_size)
        if isinstance(size, dict):
            size = size.get("shortest_edge", min(size.get("height", image_size), size.get("width", image_size)))
        crop = config.get("crop_size", image_size) if config.get("do_center_crop", True) else size
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        try:
            mean, std = tuple(config["image_mean"]), tuple(config["image_std"])
        except KeyError as missing:
            raise ValueError(
                f"preprocessor_config.json has no {missing}: CLIP's image normalisation is needed."
            ) from None
        return cls(int(size), crop, mean, std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        # as transformers' get_resize_output_image_size: short side exact, long side truncated
        short, long = self.shortest_edge, int(self.shortest_edge * max(h, w) / min(h, w))
        size = (short, long) if h <= w else (long, short)
        size = (max(self.crop[0], size[0]), max(self.crop[1], size[1]))  # never crop beyond the image
        x = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp(0, 1)  # bicubic overshoots; the PIL path clamps to uint8 too
        top, left = (size[0] - self.crop[0]) // 2, (size[1] - self.crop[1]) // 2
        x = x[..., top : top + self.crop[0], left : left + self.crop[1]]
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std  # (n, 3, crop_h, crop_w)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (n, 3, H, W) tensor, got {shape}.")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got [{float(images.min()):.3g}, {float(images.max()):.3g}].")


def _pooled(out: Any) -> torch.Tensor:
    """get_*_features return a tensor (transformers 4) or an output whose pooler_output it is (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    """A CLIP model, its tokenizer and its image preprocessing, for scoring images."""

    def __init__(self, model, tokenizer, preprocess: ClipPreprocess, batch_size: int = BATCH_SIZE):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        torch_dtype: torch.dtype | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> ClipScorer:
        """Load from a local folder only; a missing or incomplete folder is a ValueError."""
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        check_clip_folder(path)
        # dtype is set below with .to(): the keyword's name changed in transformers 5
        model, tokenizer = load_local(path, "CLIP", EXPECTED_FILES, CLIPModel, AutoTokenizer)
        config = json.loads((path / "preprocessor_config.json").read_text())
        preprocess = ClipPreprocess.from_config(config, int(model.config.vision_config.image_size))
        return cls(model.to(device=device, dtype=torch_dtype), tokenizer, preprocess, batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [0, 1] -> the model's normalised input, on its device and dtype."""
        _check_images(images)
        return self.preprocess(images.to(self.device)).to(self.model.dtype)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(n, F) L2-normalised CLIP image embeddings, float32 on the CPU."""
        _check_images(images)
        parts = [
            _pooled(self.model.get_image_features(pixel_values=self.pixel_values(chunk)))
            for chunk in images.split(self.batch_size)
        ]
        return F.normalize(torch.cat(parts).float(), dim=-1).cpu()

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """(n, F) L2-normalised CLIP text embeddings, float32 on the CPU; long prompts are truncated."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a list of str, got {prompts!r}.")
        parts = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(
                prompts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            parts.append(_pooled(out))
        return F.normalize(torch.cat(parts).float(), dim=-1).cpu()

    def clip_score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(n,) CLIPScore of each image with its prompt: 100 * max(cos, 0), in [0, 100]."""
        if len(prompts) != len(images):
            raise ValueError(f"Got {len(images)} images but {len(prompts)} prompts; give one prompt per image.")
        cos = (self.image_features(images) * self.text_features(prompts)).sum(-1)
        return 100 * cos.clamp(min=0)

    def cosine_distance(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """(n,) 1 - cos between each image and its reference (e.g. the unedited image), in [0, 2]."""
        if len(images) != len(references):
            raise ValueError(f"Got {len(images)} images but {len(references)} references; pair them one to one.")
        return 1 - (self.image_features(images) * self.image_features(references)).sum(-1)

    def frechet_distance(self, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
        """Frechet distance between two image sets in (normalised) CLIP image features, float64."""
        return _frechet_distance(self.image_features(images_a), self.image_features(images_b))
