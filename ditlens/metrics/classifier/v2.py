"""The attribute classifier of world v2 (`ditlens.builtin.scenes_v2`, 64x64 textured scenes).

It reads, for each of the 9 position cells, whether an object is there and its shape,
colour, texture and size, plus the background's colour and texture. Trained with
`python -m ditlens.metrics.classifier --train --world v2 --out FOLDER`; the package ships
one (`SHIPPED_V2`, docs/world-v2.md), used only when asked for: its texture head is weak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ditlens.builtin import scenes_v2 as world

from .network import check_image_size, conv_trunk, eval_logits
from .scoring import FidelityScores, score_scenes
from .training import DEFAULT_AUGMENTATION, AugmentConfig, FitSettings, Recipe, fit, head_accuracies, slot_targets
from .weights import TRAIN_COMMAND_V2, check_vocabulary, load_model, read_config, save_folder

SLOT_HEADS_V2 = ("presence", "shape", "colour", "texture", "size")  # per position slot
IMAGE_HEADS_V2 = ("background", "background_texture")  # per image
_VOCAB_FIELDS_V2 = ("shapes", "colours", "textures", "sizes", "backgrounds", "positions")
_WORLD_VOCAB = {  # the config's vocabulary fields' defaults
    "shapes": world.SHAPES,
    "colours": world.COLOURS,
    "textures": world.TEXTURES,
    "sizes": world.SIZES,
    "backgrounds": world.BACKGROUNDS,
    "positions": world.POSITIONS,
}


@dataclass(frozen=True)
class ClassifierV2Config:
    """The v2 classifier: as v1's, one stage more for 64 px images, and texture heads. The
    vocabulary fields default to scenes_v2's and are checked against it on load."""

    stem: int = 16  # a full-resolution 3x3 conv first: textures live at the pixel scale (0 = none)
    channels: tuple[int, ...] = (32, 64, 128)  # a stride-2 stage each: 64 -> 32 -> 16 -> 8 px, pooled per cell
    feature_dim: int = 256  # width of the cell and image heads; the image's is the Frechet features
    groups: int = 8  # GroupNorm groups: batch-independent, so eval = train behaviour
    world: str = "v2"
    shapes: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()
    textures: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    positions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        for name in _VOCAB_FIELDS_V2:
            object.__setattr__(self, name, tuple(getattr(self, name)) or _WORLD_VOCAB[name])
        if self.world != "v2":
            raise ValueError(f"ClassifierV2Config is for world v2, got world {self.world!r}")
        for c in self.channels + ((self.stem,) if self.stem else ()):
            if c % self.groups:
                raise ValueError(
                    f"Channels {self.channels} and stem {self.stem} must be divisible by groups {self.groups}"
                )
        if math.isqrt(len(self.positions)) ** 2 != len(self.positions):
            raise ValueError(f"positions must form a square grid, got {len(self.positions)}")

    @property
    def slot_classes(self) -> dict[str, int]:
        return {
            "presence": 2,
            "shape": len(self.shapes),
            "colour": len(self.colours),
            "texture": len(self.textures),
            "size": len(self.sizes),
        }

    @property
    def image_classes(self) -> dict[str, int]:
        return {"background": len(self.backgrounds), "background_texture": len(self.textures)}


@dataclass
class AttributeLogitsV2:
    presence: torch.Tensor  # (B, slots, 2)
    shape: torch.Tensor  # (B, slots, shapes)
    colour: torch.Tensor  # (B, slots, colours)
    texture: torch.Tensor  # (B, slots, textures)
    size: torch.Tensor  # (B, slots, sizes)
    background: torch.Tensor  # (B, backgrounds)
    background_texture: torch.Tensor  # (B, textures)
    features: torch.Tensor  # (B, feature_dim)


def _check_images_v2(images: torch.Tensor) -> None:
    check_image_size(images, world.IMAGE_SIZE, "world v2 images")


class AttributeClassifierV2(nn.Module):
    """Reads, for each of the 9 position cells of a v2 image, whether an object is there and
    its shape, colour, texture and size, plus the background's colour and texture.

    Unlike v1's flatten-and-classify, every cell is read by ONE shared head: the trunk's 8x8
    map is pooled to 6x6, each cell keeps its 2x2 sub-bins (where in the cell, as the exact
    position varies), and a learned cell embedding lets the head tell cells apart. Sharing
    gives each head 9x the examples per batch, which textures and shapes need at 64 px."""

    def __init__(self, config: ClassifierV2Config | None = None):
        super().__init__()
        self.config = config = config or ClassifierV2Config()
        self.trunk, c_out = conv_trunk(config.channels, config.groups, stem=config.stem)
        n_slots = len(config.positions)
        self.cell_side = math.isqrt(n_slots)  # 3: POSITIONS is a row-major 3x3 grid
        self.cell_proj = nn.Linear(4 * c_out, config.feature_dim)  # a cell's 2x2 sub-bins
        self.cell_embedding = nn.Parameter(torch.zeros(n_slots, config.feature_dim))
        self.slot_head = nn.Sequential(
            nn.SiLU(),
            nn.Linear(config.feature_dim, config.feature_dim),
            nn.SiLU(),
            nn.Linear(config.feature_dim, sum(config.slot_classes.values())),
        )
        # The image: mean and max over the map (a background texture is everywhere, an object is somewhere).
        self.proj = nn.Sequential(nn.Linear(2 * c_out, config.feature_dim), nn.SiLU())
        self.image_head = nn.Linear(config.feature_dim, sum(config.image_classes.values()))
        nn.init.normal_(self.cell_embedding, std=0.02)

    def forward(self, images: torch.Tensor) -> AttributeLogitsV2:
        _check_images_v2(images)
        fmap = self.trunk(images)  # (B, C, h, w)
        b, c = fmap.shape[:2]
        k = self.cell_side
        cells = F.adaptive_avg_pool2d(fmap, 2 * k).reshape(b, c, k, 2, k, 2)
        cells = cells.permute(0, 2, 4, 1, 3, 5).reshape(b, k * k, 4 * c)  # (B, slots, 4C), row-major cells
        slot_logits = self.slot_head(self.cell_proj(cells) + self.cell_embedding)  # (B, slots, per_slot)
        feats = self.proj(torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], dim=1))  # (B, F)
        presence, shape, colour, texture, size = slot_logits.split(list(self.config.slot_classes.values()), dim=-1)
        background, background_texture = self.image_head(feats).split(list(self.config.image_classes.values()), -1)
        return AttributeLogitsV2(presence, shape, colour, texture, size, background, background_texture, feats)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> AttributeClassifierV2:
        """Load a folder written by `save_pretrained`."""
        path = Path(path)
        values = read_config(path, TRAIN_COMMAND_V2)
        if values.get("world") != "v2":
            raise ValueError(
                f"Classifier at {path} is for world {values.get('world', 'v1')!r}, not v2; "
                "load it with AttributeClassifier.from_pretrained"
            )
        config = ClassifierV2Config(**values)
        expected = ClassifierV2Config(
            stem=config.stem, channels=config.channels, feature_dim=config.feature_dim, groups=config.groups
        )
        check_vocabulary(path, config, expected, _VOCAB_FIELDS_V2, "ditlens.builtin.scenes_v2", TRAIN_COMMAND_V2)
        return load_model(cls, config, path)

    def save_pretrained(self, path: str | Path) -> None:
        save_folder(self, self.config, path)


def logits_v2(classifier: nn.Module, images: torch.Tensor, batch_size: int = 256) -> AttributeLogitsV2:
    """Eval-mode logits in batches, on the classifier's device, restoring its mode after."""
    _check_images_v2(images)
    return eval_logits(classifier, images, batch_size, AttributeLogitsV2)


def predict_scenes_v2(classifier: AttributeClassifierV2, images: torch.Tensor) -> list[world.Scene]:
    """Decoded predictions (scenes_v2.Scene), objects in POSITIONS order; 0 objects or more
    than the grammar's 3 are possible (then `scenes_v2.caption` refuses the scene)."""
    cfg = classifier.config
    logits = logits_v2(classifier, images)
    pred = {
        f.name: getattr(logits, f.name).argmax(-1).numpy() for f in fields(AttributeLogitsV2) if f.name != "features"
    }
    out = []
    for i in range(len(images)):
        objects = tuple(
            world.SceneObject(
                cfg.shapes[pred["shape"][i, p]],
                cfg.colours[pred["colour"][i, p]],
                cfg.textures[pred["texture"][i, p]],
                cfg.sizes[pred["size"][i, p]],
                cfg.positions[p],
            )
            for p in range(len(cfg.positions))
            if pred["presence"][i, p] == 1
        )
        background, texture = cfg.backgrounds[pred["background"][i]], cfg.textures[pred["background_texture"][i]]
        out.append(world.Scene(objects, background, texture))
    return out


def features_v2(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(n, feature_dim) penultimate features, for `frechet_distance`."""
    return logits_v2(classifier, images).features


def scene_targets_v2(batch_scenes: list) -> dict[str, torch.Tensor]:
    """Class indices per head; -100 (cross-entropy's ignore index) where a slot is empty."""
    vocab = {"shape": world.SHAPES, "colour": world.COLOURS, "texture": world.TEXTURES, "size": world.SIZES}
    t = slot_targets(batch_scenes, world.POSITIONS, vocab)
    t["background"] = torch.tensor([world.BACKGROUNDS.index(s.background) for s in batch_scenes], dtype=torch.long)
    t["background_texture"] = torch.tensor(
        [world.TEXTURES.index(s.background_texture) for s in batch_scenes], dtype=torch.long
    )
    return t


RECIPE_V2 = Recipe(world, scene_targets_v2, SLOT_HEADS_V2 + IMAGE_HEADS_V2, "classifier v2")


def train_classifier_v2(
    steps: int = 1500,
    batch_size: int = 128,
    seed: int = 0,
    lr: float = 2e-3,
    config: ClassifierV2Config | None = None,
    augmentation: AugmentConfig | None = DEFAULT_AUGMENTATION,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> AttributeClassifierV2:
    """Train on fresh training-split v2 renders each step (every image a new seed), with v1's
    corruptions; returns the model on the CPU."""
    settings = FitSettings(steps, batch_size, seed, lr, augmentation, device, progress=progress)
    return fit(lambda: AttributeClassifierV2(config), RECIPE_V2, settings)


def evaluate_v2(classifier: nn.Module, images: torch.Tensor, batch_scenes: list) -> dict[str, float]:
    """Accuracy per head against exact labels: presence over all slots, shape / colour /
    texture / size over present objects, background colour and texture per image; `scene` =
    every head right on the image."""
    return head_accuracies(logits_v2(classifier, images), scene_targets_v2(batch_scenes), RECIPE_V2.heads)


def score_fidelity_v2(classifier: AttributeClassifierV2, images: torch.Tensor, prompts: list[str]) -> FidelityScores:
    """v1's `score_fidelity` for world v2 prompts: objects matched to the prompt by position
    cell, `texture` scored like shape and colour (and part of `full_object`), the background's
    colour and texture per image. images: (n, 3, 64, 64) in [-1, 1]."""
    if len(images) != len(prompts):
        raise ValueError(f"Got {len(images)} images but {len(prompts)} prompts")
    wanted = [world.parse_caption(p) for p in prompts]
    predicted = predict_scenes_v2(classifier, images)
    return score_scenes(wanted, predicted, ("shape", "colour", "texture", "size"), IMAGE_HEADS_V2)
