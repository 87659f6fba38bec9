"""Scores of generated images for built-in-family models of world v2 (`scenes_v2.py`), with
the same functions as `fidelity.py` (world v1) so the bench can run either.

Ground truth for a prompt is its exact render at a seed: `render(parse_caption(prompt), seed)`.
A generated image's foreground is read from its pixels alone: every pixel of a v2 render
lies on its colour word's band (`scenes_v2.colour_band`), and the bands of object colours and
background colours are far apart (`band_gaps()`: at least 50 in RGB), so a pixel is
foreground when its nearest band is an object colour's. Textured backgrounds stay
background under this rule, where v1's "off the background colour" rule would not.
Fidelity and transfer need a v2 attribute classifier (`AttributeClassifierV2`), passed as an
argument; the transport scores that need none (layout IoU, ghosting) are computed without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..builtin import scenes_v2 as world
from .classifier import (
    AttributeClassifierV2,
    features_v2,
    frechet_distance,
    predict_scenes_v2,
    score_fidelity_v2,
)
from .fidelity import mask_iou

BAND_WORDS: tuple[str, ...] = world.COLOURS + world.BACKGROUNDS  # nearest_band's indices: object colours first
GHOST_TOLERANCE = 0.25  # RGB distance in [0, 1] units, as v1's: a pixel this far from every expected band is noise


def _seeds(prompts: list[str], seeds: list[int] | None) -> list[int]:
    if seeds is None:
        return list(range(len(prompts)))
    if len(seeds) != len(prompts):
        raise ValueError(f"Got {len(seeds)} render seeds for {len(prompts)} prompts")
    return list(seeds)


def renders(prompts: list[str], seeds: list[int] | None = None) -> torch.Tensor:
    """(n, 3, 64, 64) exact renders of the prompts in [0, 1], prompt i at seed i (default:
    its index)."""
    images = np.stack([world.render(world.parse_caption(p), s).image for p, s in zip(prompts, _seeds(prompts, seeds))])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def render_masks(prompts: list[str], seeds: list[int] | None = None) -> torch.Tensor:
    """(n, 64, 64) bool: union of the objects' exact masks in the renders `renders` draws."""
    return torch.from_numpy(
        np.stack(
            [~world.render(world.parse_caption(p), s).background_mask for p, s in zip(prompts, _seeds(prompts, seeds))]
        )
    )


def _band(word: str) -> tuple[torch.Tensor, torch.Tensor]:
    dark, light = world.colour_band(word)
    return torch.tensor(dark / 255, dtype=torch.float32), torch.tensor((light - dark) / 255, dtype=torch.float32)


def band_distance(images: torch.Tensor, word: str) -> torch.Tensor:
    """(n, H, W): RGB distance (in [0, 1] units) of every pixel of images (n, 3, H, W) in
    [0, 1] to the band of colour word `word` (the segment from its dark to its light end)."""
    dark, span = _band(word)
    x = images.float() - dark.view(1, 3, 1, 1)
    t = ((x * span.view(1, 3, 1, 1)).sum(1, keepdim=True) / span.square().sum()).clamp(0, 1)  # (n, 1, H, W)
    return (x - t * span.view(1, 3, 1, 1)).norm(dim=1)


def nearest_band(images: torch.Tensor) -> torch.Tensor:
    """(n, H, W) long: index into BAND_WORDS of each pixel's nearest colour band."""
    best = torch.full(images.shape[:1] + images.shape[2:], float("inf"))
    index = torch.zeros(best.shape, dtype=torch.long)
    for i, word in enumerate(BAND_WORDS):
        d = band_distance(images, word)
        closer = d < best
        best, index = torch.where(closer, d, best), torch.where(closer, i, index)
    return index


def foreground_masks(images: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
    """Ground truth for generated images: pixels whose nearest colour band is an object
    colour's (n, H, W) bool. On renders this is exactly the union of the object masks
    (tested). prompts: unused (the rule needs no prompt), for fidelity.py's call."""
    return nearest_band(images) < len(world.COLOURS)


def builtin_scores(
    images: torch.Tensor, prompts: list[str], classifier: AttributeClassifierV2, seeds: list[int] | None = None
) -> dict[str, Any]:
    """Prompt fidelity (per attribute, texture included) and the Frechet distance to the
    prompts' renders at `seeds`, in the v2 classifier's features. images: (n, 3, 64, 64) in [0, 1]."""
    x = images * 2 - 1
    fidelity = score_fidelity_v2(classifier, x, prompts)
    with torch.no_grad():
        fd = frechet_distance(features_v2(classifier, x), features_v2(classifier, renders(prompts, seeds) * 2 - 1))
    return {
        "fidelity": fidelity.to_dict(),
        "full_object_accuracy": fidelity.accuracy("full_object"),
        "frechet_distance": fd,
    }


def transport_scores(
    images: torch.Tensor, source: str, target: str, target_alone: torch.Tensor, classifier: AttributeClassifierV2 | None
) -> list[dict[str, float]]:
    """Per image, as `fidelity.transport_scores`, plus the texture moved: transfer (the
    source's colour, shape, texture at the target's slot; `both` = colour and shape, the
    verdict's measure; `all` = the three), preservation (foreground IoU with the target
    alone; background colour and texture kept; for two-object targets the other objects'
    shape and colour kept, as in v1: their texture is left out, the classifier's weakest head)
    and ghosting (share of the foreground of either image
    whose pixels lie on none of the bands the two prompts name). Without a classifier only
    the foreground IoU and ghosting, which need none."""
    s, t = world.parse_caption(source).objects[0], world.parse_caption(target)
    slot = t.objects[0].position
    target_mask = foreground_masks(target_alone[None])[0]
    masks = foreground_masks(images)
    expected = (s.colour, *(o.colour for o in t.objects), t.background)
    off = torch.stack([band_distance(images, w) for w in expected]).amin(0) > GHOST_TOLERANCE  # (n, H, W)
    predicted = predict_scenes_v2(classifier, images * 2 - 1) if classifier is not None else [None] * len(images)
    others = t.objects[1:]  # the target's other objects: transport should leave them alone
    out = []
    for mask, ghost_px, pred in zip(masks, off, predicted):
        region = mask | target_mask
        row = {
            "mask_iou_with_target": mask_iou(mask, target_mask),
            "ghosting": float(ghost_px[region].float().mean()) if region.any() else 0.0,
        }
        if pred is not None:
            found = {o.position: o for o in pred.objects}
            here = found.get(slot)
            moved = {a: here is not None and getattr(here, a) == getattr(s, a) for a in ("colour", "shape", "texture")}
            row = {
                "colour_from_source": float(moved["colour"]),
                "shape_from_source": float(moved["shape"]),
                "texture_from_source": float(moved["texture"]),
                "both_from_source": float(moved["colour"] and moved["shape"]),
                "all_from_source": float(all(moved.values())),
                **row,
                "background_kept": float(
                    pred.background == t.background and pred.background_texture == t.background_texture
                ),
            } | (
                {
                    "others_kept": float(
                        all(
                            o.position in found
                            and all(getattr(found[o.position], a) == getattr(o, a) for a in ("shape", "colour"))
                            for o in others
                        )
                    )
                }
                if others
                else {}
            )
        out.append(row)
    return out
