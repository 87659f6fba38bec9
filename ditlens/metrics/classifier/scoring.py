"""Prompt fidelity: how well images show their prompts, from the scenes a classifier reads
in them. The same matching serves both worlds: objects are matched to the prompt by
position, each named attribute is scored on the object found there, and image attributes
(the background) once per image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ATTRIBUTES = ("position", "shape", "colour", "size", "full_object", "background")
# World v2: objects also have a texture (full_object needs it right too), the background a colour and a texture
ATTRIBUTES_V2 = ("position", "shape", "colour", "texture", "size", "full_object", "background", "background_texture")
IMAGE_ATTRIBUTES = ("background", "background_texture")  # counted per image; the rest per named object


@dataclass(frozen=True)
class FidelityScores:
    """How well images show their prompts. Objects are matched to the prompt by position
    slot: `position` = an object is predicted at the slot the prompt names; `shape`, `colour`,
    `size` = an object is there *and* has that attribute; `full_object` = all four right.
    `background` is per image (both halves right). World v2 (`score_fidelity_v2`) adds
    `texture` (part of `full_object` there) and `background_texture`, per image."""

    n_images: int
    n_objects: int  # objects named in the prompts
    correct: dict[str, int]  # attribute -> count; background counts images, the rest objects
    extra_objects: int  # objects predicted at slots no prompt names
    # the same scores for the prompts that name k objects, per k
    by_n_objects: dict[int, FidelityScores] = field(default_factory=dict)
    attributes: tuple[str, ...] = ATTRIBUTES  # the world's: ATTRIBUTES (v1) or ATTRIBUTES_V2

    def accuracy(self, attribute: str) -> float:
        if attribute not in self.attributes:
            raise ValueError(f"Unknown attribute {attribute!r}; allowed: {', '.join(self.attributes)}")
        total = self.n_images if attribute in IMAGE_ATTRIBUTES else self.n_objects
        return self.correct[attribute] / total if total else math.nan

    def to_dict(self) -> dict:
        out = {
            "n_images": self.n_images,
            "n_objects": self.n_objects,
            "extra_objects": self.extra_objects,
            "accuracy": {a: self.accuracy(a) for a in self.attributes},
            "correct": dict(self.correct),
        }
        if self.by_n_objects:
            out["by_n_objects"] = {str(k): v.to_dict() for k, v in self.by_n_objects.items()}
        return out


@dataclass(frozen=True)
class _Row:
    """One image's tally."""

    n_named: int  # objects its prompt names
    correct: dict[str, int]
    extra: int  # objects found at positions its prompt does not name


def _tally(wanted: Any, predicted: Any, object_attributes: Sequence[str], image_attributes: Sequence[str]) -> _Row:
    found = {o.position: o for o in predicted.objects}
    correct = dict.fromkeys(("position", *object_attributes, "full_object", *image_attributes), 0)
    for obj in wanted.objects:
        here = found.get(obj.position)
        ok = {"position": here is not None}
        for a in object_attributes:
            ok[a] = here is not None and getattr(here, a) == getattr(obj, a)
        ok["full_object"] = all(ok.values())
        for a, v in ok.items():
            correct[a] += v
    for a in image_attributes:
        correct[a] = int(getattr(predicted, a) == getattr(wanted, a))
    named = {o.position for o in wanted.objects}
    return _Row(len(wanted.objects), correct, sum(1 for p in found if p not in named))


def _total(rows: list[_Row], attributes: tuple[str, ...]) -> FidelityScores:
    return FidelityScores(
        n_images=len(rows),
        n_objects=sum(r.n_named for r in rows),
        correct={a: sum(r.correct[a] for r in rows) for a in attributes},
        extra_objects=sum(r.extra for r in rows),
        attributes=attributes,
    )


def score_scenes(
    wanted: Sequence[Any],
    predicted: Sequence[Any],
    object_attributes: tuple[str, ...],
    image_attributes: tuple[str, ...],
) -> FidelityScores:
    """FidelityScores of the scenes read from images (`predicted`) against the scenes their
    prompts name (`wanted`), overall and per number of named objects. Scenes of either world:
    objects with a `position` and the `object_attributes`, the scene with the `image_attributes`."""
    attributes = ("position", *object_attributes, "full_object", *image_attributes)
    rows = [_tally(w, p, object_attributes, image_attributes) for w, p in zip(wanted, predicted)]
    groups = {k: _total([r for r in rows if r.n_named == k], attributes) for k in sorted({r.n_named for r in rows})}
    overall = _total(rows, attributes)
    return FidelityScores(
        overall.n_images,
        overall.n_objects,
        overall.correct,
        overall.extra_objects,
        by_n_objects=groups,
        attributes=attributes,
    )
