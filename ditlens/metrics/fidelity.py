"""Scores of generated images for the built-in model, from the shipped attribute classifier.

Ground truth for a prompt is its exact render: `render(parse_caption(prompt))`. World v2
models have the same functions in `fidelity_v2.py`; the `seeds` arguments here are for
that shared call (a v1 caption has one image, so they are ignored).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..builtin.scenes import COLOUR_RGB, parse_caption, render
from .classifier import AttributeClassifier, features, frechet_distance, predict_scenes, score_fidelity


def renders(prompts: list[str], seeds: list[int] | None = None) -> torch.Tensor:
    """(n, 3, 32, 32) exact renders of the prompts in [0, 1]."""
    images = np.stack([render(parse_caption(p)).image for p in prompts])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def render_masks(prompts: list[str], seeds: list[int] | None = None) -> torch.Tensor:
    """(n, 32, 32) bool: union of the objects' exact masks in each prompt's render."""
    return torch.from_numpy(np.stack([~render(parse_caption(p)).background_mask for p in prompts]))


def off_background_masks(images: torch.Tensor, prompts: list[str], tolerance: float = 0.25) -> torch.Tensor:
    """Ground truth for generated images: pixels farther than `tolerance` (RGB distance in
    [0, 1] units) from the background colour(s) the prompt names. (n, H, W) bool."""
    out = []
    for image, prompt in zip(images, prompts):
        scene = parse_caption(prompt)
        H, W = image.shape[-2:]
        left = torch.tensor(COLOUR_RGB[scene.background[0]], dtype=torch.float32) / 255
        right = torch.tensor(COLOUR_RGB[scene.background[-1]], dtype=torch.float32) / 255
        bg = left.view(3, 1, 1).expand(3, H, W).clone()
        bg[:, :, W // 2 :] = right.view(3, 1, 1)
        out.append((image - bg).norm(dim=0) > tolerance)
    return torch.stack(out)


def foreground_masks(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Ground truth for generated images (n, H, W) bool: `off_background_masks` (the name
    `fidelity_v2` shares)."""
    return off_background_masks(images, prompts)


def builtin_scores(
    images: torch.Tensor,
    prompts: list[str],
    classifier: AttributeClassifier | None = None,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Prompt fidelity (per attribute) and the Frechet distance to the prompts' renders, in
    the classifier's features. images: (n, 3, 32, 32) in [0, 1]."""
    classifier = classifier or AttributeClassifier.from_pretrained()
    x = images * 2 - 1
    fidelity = score_fidelity(classifier, x, prompts)
    with torch.no_grad():
        fd = frechet_distance(features(classifier, x), features(classifier, renders(prompts) * 2 - 1))
    return {
        "fidelity": fidelity.to_dict(),
        "full_object_accuracy": fidelity.accuracy("full_object"),
        "frechet_distance": fd,
    }


def objects_fully_correct(
    images: torch.Tensor, prompts: list[str], classifier: AttributeClassifier | None = None
) -> list[bool]:
    """Per image: does it show every object its prompt names fully right? images in [0, 1]."""
    classifier = classifier or AttributeClassifier.from_pretrained()
    out = []
    for image, prompt in zip(images, prompts):
        scores = score_fidelity(classifier, image[None] * 2 - 1, [prompt])
        out.append(scores.correct["full_object"] == scores.n_objects)
    return out


def transport_scores(
    images: torch.Tensor, source: str, target: str, target_alone: torch.Tensor, classifier: AttributeClassifier
) -> list[dict[str, float]]:
    """Per image: transfer (colour / shape of the source at the target's slot), preservation
    (object-mask IoU with the target alone, background kept, for two-object targets the other
    object's shape and colour kept) and ghosting."""
    s, t = parse_caption(source).objects[0], parse_caption(target)
    slot = t.objects[0].position
    predicted = predict_scenes(classifier, images * 2 - 1)
    target_mask = off_background_masks(target_alone[None], [target])[0]
    masks = off_background_masks(images, [target] * len(images))
    palette = (
        torch.tensor(
            [COLOUR_RGB[c] for c in (s.colour, *(o.colour for o in t.objects), *t.background)], dtype=torch.float32
        )
        / 255
    )
    others = t.objects[1:]  # the target's other objects: transport should leave them alone
    out = []
    for img, pred, mask in zip(images, predicted, masks):
        found = {o.position: o for o in pred.objects}
        here = found.get(slot)
        region = mask | target_mask
        dist = (img.permute(1, 2, 0)[region][:, None, :] - palette[None]).norm(dim=-1)  # (pixels, colours)
        ghost = float((dist.min(-1).values > 0.25).float().mean()) if region.any() else 0.0
        out.append(
            {
                "colour_from_source": float(here is not None and here.colour == s.colour),
                "shape_from_source": float(here is not None and here.shape == s.shape),
                "both_from_source": float(here is not None and here.colour == s.colour and here.shape == s.shape),
                "mask_iou_with_target": mask_iou(mask, target_mask),
                "background_kept": float(pred.background == t.background),
                "ghosting": ghost,
            }
            | (
                {
                    "others_kept": float(
                        all(
                            (
                                o.position in found
                                and found[o.position].shape == o.shape
                                and found[o.position].colour == o.colour
                            )
                            for o in others
                        )
                    )
                }
                if others
                else {}
            )
        )
    return out


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean masks; 1 when both are empty."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0
