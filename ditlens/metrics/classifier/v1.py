"""The attribute classifier of world v1 (`ditlens.builtin.scenes`, 32x32 flat scenes): the
shipped one.

A small CNN reads, for each of the five position slots, whether an object is there and its
shape, colour and size, plus the background colour of the left and right image halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ditlens.builtin import scenes
from ditlens.builtin.scenes import BACKGROUNDS, COLOURS, IMAGE_SIZE, POSITIONS, SHAPES, SIZES, Scene, SceneObject

from .network import check_image_size, conv_trunk, eval_logits
from .scoring import FidelityScores, score_scenes
from .training import DEFAULT_AUGMENTATION, AugmentConfig, FitSettings, Recipe, fit, head_accuracies, slot_targets
from .weights import DEFAULT_WEIGHTS, TRAIN_COMMAND, check_vocabulary, load_model, read_config, save_folder

HEADS = ("presence", "shape", "colour", "size", "background_left", "background_right")
_VOCAB_FIELDS = ("shapes", "colours", "sizes", "backgrounds", "positions")


@dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, ...] = (32, 64, 128)  # a stride-2 stage each: 32 -> 16 -> 8 -> 4 px
    feature_dim: int = 128  # penultimate width, the Frechet features
    groups: int = 8  # GroupNorm groups: batch-independent, so eval = train behaviour
    # The vocabulary the heads were trained for; loading checks it against scenes.py so
    # weights from another vocabulary fail loudly instead of mislabelling.
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = COLOURS
    sizes: tuple[str, ...] = SIZES
    backgrounds: tuple[str, ...] = BACKGROUNDS
    positions: tuple[str, ...] = POSITIONS

    def __post_init__(self) -> None:
        for name in ("channels", *_VOCAB_FIELDS):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for c in self.channels:
            if c % self.groups:
                raise ValueError(f"Channels {self.channels} must be divisible by groups {self.groups}")

    @property
    def slot_classes(self) -> dict[str, int]:
        """Classes of each per-slot head."""
        return {"presence": 2, "shape": len(self.shapes), "colour": len(self.colours), "size": len(self.sizes)}


@dataclass
class AttributeLogits:
    presence: torch.Tensor  # (B, slots, 2)
    shape: torch.Tensor  # (B, slots, shapes)
    colour: torch.Tensor  # (B, slots, colours)
    size: torch.Tensor  # (B, slots, sizes)
    background_left: torch.Tensor  # (B, backgrounds)
    background_right: torch.Tensor  # (B, backgrounds)
    features: torch.Tensor  # (B, feature_dim)


def _check_images(images: torch.Tensor) -> None:
    check_image_size(images, IMAGE_SIZE)


class AttributeClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        self.trunk, c_out = conv_trunk(config.channels, config.groups)
        side = IMAGE_SIZE // 2 ** len(config.channels)
        # Flatten, not pool: the slots are fixed places, so where a feature is matters.
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(c_out * side * side, config.feature_dim), nn.SiLU())
        per_slot = sum(config.slot_classes.values())
        n_bg = len(config.backgrounds)
        self.head = nn.Linear(config.feature_dim, len(config.positions) * per_slot + 2 * n_bg)

    def forward(self, images: torch.Tensor) -> AttributeLogits:
        _check_images(images)
        feats = self.proj(self.trunk(images))  # (B, F)
        out = self.head(feats)
        n_slots, n_bg = len(self.config.positions), len(self.config.backgrounds)
        slot_logits = out[:, : -2 * n_bg].reshape(len(out), n_slots, -1)  # (B, slots, per_slot)
        presence, shape, colour, size = slot_logits.split(list(self.config.slot_classes.values()), dim=-1)
        return AttributeLogits(presence, shape, colour, size, out[:, -2 * n_bg : -n_bg], out[:, -n_bg:], features=feats)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> AttributeClassifier:
        """Load the shipped weights (default) or a folder written by `save_pretrained`."""
        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        config = ClassifierConfig(**read_config(path, TRAIN_COMMAND))
        expected = ClassifierConfig(channels=config.channels, feature_dim=config.feature_dim, groups=config.groups)
        check_vocabulary(path, config, expected, _VOCAB_FIELDS, "ditlens.builtin.scenes", TRAIN_COMMAND)
        return load_model(cls, config, path)

    def save_pretrained(self, path: str | Path) -> None:
        save_folder(self, self.config, path)


def _logits(classifier: nn.Module, images: torch.Tensor, batch_size: int = 512) -> AttributeLogits:
    """Eval-mode logits in batches, on the classifier's device, restoring its mode after."""
    _check_images(images)
    return eval_logits(classifier, images, batch_size, AttributeLogits)


def predict_scenes(classifier: nn.Module, images: torch.Tensor) -> list[Scene]:
    """Decoded predictions, objects in POSITIONS order. A scene may have 0 objects (then
    `scenes.caption` refuses it) or more than the sampler's 3."""
    logits = _logits(classifier, images)
    presence = logits.presence.argmax(-1).numpy() == 1  # (B, slots)
    shape, colour, size, left, right = (getattr(logits, h).argmax(-1).numpy() for h in HEADS[1:])
    out = []
    for i in range(len(images)):
        objects = tuple(
            SceneObject(SHAPES[shape[i, p]], COLOURS[colour[i, p]], SIZES[size[i, p]], POSITIONS[p])
            for p in np.flatnonzero(presence[i])
        )
        halves = (BACKGROUNDS[left[i]], BACKGROUNDS[right[i]])
        out.append(Scene(objects, halves[:1] if halves[0] == halves[1] else halves))
    return out


def features(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(n, feature_dim) penultimate features, for `frechet_distance`."""
    return _logits(classifier, images).features


def score_fidelity(classifier: nn.Module, images: torch.Tensor, prompts: list[str]) -> FidelityScores:
    """Per-attribute accuracy of the objects each prompt names (see FidelityScores)."""
    if len(images) != len(prompts):
        raise ValueError(f"Got {len(images)} images but {len(prompts)} prompts")
    wanted = [scenes.parse_caption(p) for p in prompts]
    return score_scenes(wanted, predict_scenes(classifier, images), ("shape", "colour", "size"), ("background",))


def scene_targets(batch_scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Class indices per head; -100 (cross-entropy's ignore index) where a slot is empty."""
    t = slot_targets(batch_scenes, POSITIONS, {"shape": SHAPES, "colour": COLOURS, "size": SIZES})
    for half in ("background_left", "background_right"):
        t[half] = torch.tensor([BACKGROUNDS.index(getattr(s, half)) for s in batch_scenes], dtype=torch.long)
    return t


RECIPE = Recipe(scenes, scene_targets, HEADS, "classifier")


def train_classifier(
    steps: int = 800,
    batch_size: int = 128,
    seed: int = 0,
    lr: float = 2e-3,
    config: ClassifierConfig | None = None,
    augmentation: AugmentConfig | None = DEFAULT_AUGMENTATION,
    progress: bool = True,
) -> AttributeClassifier:
    """Train on fresh training-split renders each step (no epochs: data is free)."""
    settings = FitSettings(steps, batch_size, seed, lr, augmentation, progress=progress)
    return fit(lambda: AttributeClassifier(config), RECIPE, settings)


def evaluate(classifier: nn.Module, images: torch.Tensor, batch_scenes: list[Scene]) -> dict[str, float]:
    """Accuracy per head against exact labels: presence over all slots, shape / colour / size
    over present objects, background per image half; `scene` = every head right on the image."""
    return head_accuracies(_logits(classifier, images), scene_targets(batch_scenes), HEADS)
