"""Attribute classifier for the built-in model's 32x32 scenes.

A small CNN reads, for each of the five position slots, whether an object is there and its
shape, colour and size, plus the background colour of the left and right image halves. It is
trained on renders with light corruption (noise, colour jitter, blur, 1 px shifts) so that it
also reads the imperfect images the built-in model generates. Its penultimate features serve
the Frechet distance between generated images and renders.

    clf = AttributeClassifier.from_pretrained()
    scores = score_fidelity(clf, images, prompts)   # images (n, 3, 32, 32) in [-1, 1]

Train the shipped weights again with `python -m ditlens.metrics.classifier --train`.
World v2 (`scenes_v2.py`, 64x64 textured scenes) has its own classifier, `AttributeClassifierV2`
(below; it also reads texture), trained with
`python -m ditlens.metrics.classifier --train --world v2 --out FOLDER`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ditlens.builtin import scenes
from ditlens.builtin.scenes import (
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "builtin" / "weights" / "classifier"
# the shipped world v2 classifier (docs/world-v2.md): used only when asked for, `--classifier shipped`
SHIPPED_V2 = Path(__file__).resolve().parents[1] / "builtin" / "weights" / "classifier-v2"
TRAIN_COMMAND = "python -m ditlens.metrics.classifier --train"

# ---------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------


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
        for name in ("channels", "shapes", "colours", "sizes", "backgrounds", "positions"):
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


class AttributeClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        layers: list[nn.Module] = []
        c_in = 3
        for c in config.channels:
            # Downsample first: full-resolution convs would cost 4x more on CPU for nothing
            # (a 3x3 stride-2 window still sees every pixel, 2 px cross arms included).
            layers += [
                nn.Conv2d(c_in, c, 3, stride=2, padding=1),
                nn.GroupNorm(config.groups, c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.GroupNorm(config.groups, c),
                nn.SiLU(),
            ]
            c_in = c
        self.trunk = nn.Sequential(*layers)
        side = IMAGE_SIZE // 2 ** len(config.channels)
        # Flatten, not pool: the slots are fixed places, so where a feature is matters.
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, config.feature_dim), nn.SiLU())
        per_slot = sum(config.slot_classes.values())
        n_bg = len(config.backgrounds)
        self.head = nn.Linear(config.feature_dim, len(config.positions) * per_slot + 2 * n_bg)

    def forward(self, images: torch.Tensor) -> AttributeLogits:
        _check_images(images)
        feats = self.proj(self.trunk(images))  # (B, F)
        out = self.head(feats)
        n_slots, n_bg = len(self.config.positions), len(self.config.backgrounds)
        slot_logits = out[:, : -2 * n_bg].reshape(len(out), n_slots, -1)  # (B, slots, per_slot)
        parts = slot_logits.split(list(self.config.slot_classes.values()), dim=-1)
        return AttributeLogits(
            *parts,
            background_left=out[:, -2 * n_bg : -n_bg],
            background_right=out[:, -n_bg:],
            features=feats,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> AttributeClassifier:
        """Load the shipped weights (default) or a folder written by `save_pretrained`."""
        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        config_file, weights_file = path / "config.json", path / "model.safetensors"
        if not (config_file.is_file() and weights_file.is_file()):
            raise FileNotFoundError(
                f"No classifier at {path} (needs config.json and model.safetensors); train one with `{TRAIN_COMMAND}`"
            )
        config = ClassifierConfig(**json.loads(config_file.read_text()))
        expected = ClassifierConfig(channels=config.channels, feature_dim=config.feature_dim, groups=config.groups)
        for name in ("shapes", "colours", "sizes", "backgrounds", "positions"):
            if getattr(config, name) != getattr(expected, name):
                raise ValueError(
                    f"Classifier at {path} was trained for {name} {getattr(config, name)}, but "
                    f"ditlens.builtin.scenes has {getattr(expected, name)}; retrain with "
                    f"`{TRAIN_COMMAND}`"
                )
        model = cls(config)
        model.load_state_dict(load_file(weights_file))
        return model.eval()

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"Expected images of shape (n, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) in [-1, 1], got {tuple(images.shape)}"
        )


@torch.no_grad()
def _logits(classifier: AttributeClassifier, images: torch.Tensor, batch_size: int = 512) -> AttributeLogits:
    """Eval-mode logits in batches, on the classifier's device, restoring its mode after."""
    _check_images(images)
    param = next(classifier.parameters())
    was_training = classifier.training
    classifier.eval()
    try:
        parts = [classifier(chunk.to(param.device, param.dtype)) for chunk in images.split(batch_size)]
    finally:
        classifier.train(was_training)
    return AttributeLogits(*(torch.cat([getattr(p, f.name) for p in parts]).cpu() for f in fields(AttributeLogits)))


@dataclass
class _Predictions:
    """Argmax labels as indices."""

    presence: np.ndarray  # (B, slots) bool
    shape: np.ndarray  # (B, slots)
    colour: np.ndarray  # (B, slots)
    size: np.ndarray  # (B, slots)
    background_left: np.ndarray  # (B,)
    background_right: np.ndarray  # (B,)

    @classmethod
    def from_logits(cls, logits: AttributeLogits) -> _Predictions:
        return cls(
            presence=logits.presence.argmax(-1).numpy() == 1,
            shape=logits.shape.argmax(-1).numpy(),
            colour=logits.colour.argmax(-1).numpy(),
            size=logits.size.argmax(-1).numpy(),
            background_left=logits.background_left.argmax(-1).numpy(),
            background_right=logits.background_right.argmax(-1).numpy(),
        )

    def scene(self, i: int) -> Scene:
        objects = tuple(
            SceneObject(SHAPES[self.shape[i, p]], COLOURS[self.colour[i, p]], SIZES[self.size[i, p]], POSITIONS[p])
            for p in range(len(POSITIONS))
            if self.presence[i, p]
        )
        left, right = BACKGROUNDS[self.background_left[i]], BACKGROUNDS[self.background_right[i]]
        return Scene(objects, (left,) if left == right else (left, right))


def predict_scenes(classifier: AttributeClassifier, images: torch.Tensor) -> list[Scene]:
    """Decoded predictions, objects in POSITIONS order. A scene may have 0 objects (then
    `scenes.caption` refuses it) or more than the sampler's 3."""
    preds = _Predictions.from_logits(_logits(classifier, images))
    return [preds.scene(i) for i in range(len(images))]


def features(classifier: AttributeClassifier, images: torch.Tensor) -> torch.Tensor:
    """(n, feature_dim) penultimate features, for `frechet_distance`."""
    return _logits(classifier, images).features


# ---------------------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------------------


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(m)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), in float64.

    tr((S_a S_b)^1/2) = tr((S_a^1/2 S_b S_a^1/2)^1/2); the inner product is symmetric PSD,
    so both roots come from `eigh` (no scipy, no complex parts to discard)."""
    for name, f in (("feats_a", feats_a), ("feats_b", feats_b)):
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"{name} must be (n >= 2, F), got shape {tuple(f.shape)}")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"Feature sizes differ: {feats_a.shape[1]} vs {feats_b.shape[1]}")
    a, b = feats_a.detach().cpu().double(), feats_b.detach().cpu().double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(cov_a)
    inner = root_a @ cov_b @ root_a
    inner = (inner + inner.T) / 2  # symmetric up to rounding; eigh needs it exactly
    trace_sqrt = torch.linalg.eigvalsh(inner).clamp_min(0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return max(float(fd), 0.0)  # tiny negatives are rounding


# ---------------------------------------------------------------------------------------
# Prompt fidelity
# ---------------------------------------------------------------------------------------

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


def score_fidelity(classifier: AttributeClassifier, images: torch.Tensor, prompts: list[str]) -> FidelityScores:
    """Per-attribute accuracy of the objects each prompt names (see FidelityScores)."""
    if len(images) != len(prompts):
        raise ValueError(f"Got {len(images)} images but {len(prompts)} prompts")
    wanted = [scenes.parse_caption(p) for p in prompts]
    preds = _Predictions.from_logits(_logits(classifier, images))
    rows = []  # per image: (n_named, per-attribute counts, extra)
    for i, scene in enumerate(wanted):
        counts = dict.fromkeys(ATTRIBUTES, 0)
        for obj in scene.objects:
            p = POSITIONS.index(obj.position)
            here = bool(preds.presence[i, p])
            ok = {
                "position": here,
                "shape": here and SHAPES[preds.shape[i, p]] == obj.shape,
                "colour": here and COLOURS[preds.colour[i, p]] == obj.colour,
                "size": here and SIZES[preds.size[i, p]] == obj.size,
            }
            ok["full_object"] = all(ok.values())
            for a, v in ok.items():
                counts[a] += v
        counts["background"] = int(
            BACKGROUNDS[preds.background_left[i]] == scene.background_left
            and BACKGROUNDS[preds.background_right[i]] == scene.background_right
        )
        named = {POSITIONS.index(o.position) for o in scene.objects}
        extra = sum(1 for p in np.flatnonzero(preds.presence[i]) if p not in named)
        rows.append((len(scene.objects), counts, extra))

    def total(subset: list) -> FidelityScores:
        return FidelityScores(
            n_images=len(subset),
            n_objects=sum(r[0] for r in subset),
            correct={a: sum(r[1][a] for r in subset) for a in ATTRIBUTES},
            extra_objects=sum(r[2] for r in subset),
        )

    groups = {k: total([r for r in rows if r[0] == k]) for k in sorted({r[0] for r in rows})}
    overall = total(rows)
    return FidelityScores(
        overall.n_images, overall.n_objects, overall.correct, overall.extra_objects, by_n_objects=groups
    )


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


def scene_targets(batch_scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Class indices per head; -100 (cross-entropy's ignore index) where a slot is empty."""
    n, slots = len(batch_scenes), len(POSITIONS)
    t = {k: torch.full((n, slots), -100, dtype=torch.long) for k in ("shape", "colour", "size")}
    t["presence"] = torch.zeros((n, slots), dtype=torch.long)
    t["background_left"] = torch.empty(n, dtype=torch.long)
    t["background_right"] = torch.empty(n, dtype=torch.long)
    for i, scene in enumerate(batch_scenes):
        for obj in scene.objects:
            p = POSITIONS.index(obj.position)
            t["presence"][i, p] = 1
            t["shape"][i, p] = SHAPES.index(obj.shape)
            t["colour"][i, p] = COLOURS.index(obj.colour)
            t["size"][i, p] = SIZES.index(obj.size)
        t["background_left"][i] = BACKGROUNDS.index(scene.background_left)
        t["background_right"][i] = BACKGROUNDS.index(scene.background_right)
    return t


def _loss(logits: AttributeLogits, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = logits.features.new_zeros(())
    for name in ("presence", "shape", "colour", "size", "background_left", "background_right"):
        x, y = getattr(logits, name), targets[name]
        if (y != -100).any():  # a batch of empty slots would give a NaN mean
            loss = loss + F.cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1))
    return loss


@dataclass(frozen=True)
class AugmentConfig:
    noise: float = 0.08  # max std of gaussian pixel noise, in [-1, 1] units
    gain: float = 0.08  # per-channel contrast jitter, +-
    offset: float = 0.08  # per-channel brightness jitter, +-
    blur_p: float = 0.4  # share of images blurred
    blur_sigma: tuple[float, float] = (0.3, 0.9)  # px: softens edges, keeps 8 vs 12 px apart
    shift_p: float = 0.3  # share of images moved by 1 px (generated layouts are not pixel-exact)


def augment(images: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Corrupt renders the way generated images differ from them; labels stay valid."""
    n = len(images)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    # 1 px shifts, edges replicated
    shift = torch.randint(-1, 2, (n, 2), generator=generator) * (uniform(n, 1) < cfg.shift_p)
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")  # (n, 3, 34, 34)
    x = images.clone()
    for dy, dx in shift.unique(dim=0).tolist():
        if dy or dx:
            sel = (shift == torch.tensor([dy, dx])).all(1)
            side = images.shape[-1]  # IMAGE_SIZE for v1; v2's images are 64 px
            x[sel] = padded[sel, :, 1 - dy : 1 - dy + side, 1 - dx : 1 - dx + side]
    # blur: separable 3-tap gaussian (w, 1 - 2w, w) with a per-image sigma, w = 0 unblurred
    sigma = cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * uniform(n)
    side = torch.exp(-1 / (2 * sigma**2))
    w = (side / (1 + 2 * side) * (uniform(n) < cfg.blur_p)).view(n, 1, 1, 1)
    p = F.pad(x, (1, 1, 0, 0), mode="replicate")
    x = w * (p[..., :-2] + p[..., 2:]) + (1 - 2 * w) * x
    p = F.pad(x, (0, 0, 1, 1), mode="replicate")
    x = w * (p[..., :-2, :] + p[..., 2:, :]) + (1 - 2 * w) * x
    # colour jitter, then noise
    gain = 1 + cfg.gain * (2 * uniform(n, 3, 1, 1) - 1)
    offset = cfg.offset * (2 * uniform(n, 3, 1, 1) - 1)
    x = x * gain + offset
    x = x + cfg.noise * uniform(n, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return x.clamp(-1, 1)


def _seed(*keys: int) -> int:
    """Independent stream per (run seed, purpose, step)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def train_classifier(
    steps: int = 800,
    batch_size: int = 128,
    seed: int = 0,
    lr: float = 2e-3,
    config: ClassifierConfig | None = None,
    augmentation: AugmentConfig | None = AugmentConfig(),
    progress: bool = True,
) -> AttributeClassifier:
    """Train on fresh training-split renders each step (no epochs: data is free)."""
    from tqdm import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    torch.manual_seed(seed)
    model = AttributeClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc="classifier", disable=not progress)
    for step in bar:
        batch = scenes.sample_batch(batch_size, seed=_seed(seed, 0, step), split="train")
        images = batch.images if augmentation is None else augment(batch.images, gen, augmentation)
        loss = _loss(model(images), scene_targets(batch.scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.eval()


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------


def evaluate(classifier: AttributeClassifier, images: torch.Tensor, batch_scenes: list[Scene]) -> dict[str, float]:
    """Accuracy per head against exact labels: presence over all slots, shape / colour / size
    over present objects, background per image half."""
    logits = _logits(classifier, images)
    targets = scene_targets(batch_scenes)
    out = {}
    scene_ok = torch.ones(len(images), dtype=torch.bool)
    for name in ("presence", "shape", "colour", "size", "background_left", "background_right"):
        pred, y = getattr(logits, name).argmax(-1), targets[name]
        valid = y != -100
        out[name] = float((pred[valid] == y[valid]).float().mean())
        right = (pred == y) | ~valid
        scene_ok &= right if right.ndim == 1 else right.all(1)
    out["scene"] = float(scene_ok.float().mean())  # every head right on the image
    return out


def _evaluate_cli(classifier: AttributeClassifier, n: int, seed: int) -> dict[str, dict]:
    batch = scenes.sample_batch(n, seed=_seed(seed, 1), split="heldout")
    gen = torch.Generator().manual_seed(_seed(seed, 2))
    return {
        "clean": evaluate(classifier, batch.images, batch.scenes),
        "augmented": evaluate(classifier, augment(batch.images, gen), batch.scenes),
    }


# ---------------------------------------------------------------------------------------
# World v2: 64x64 textured scenes (ditlens.builtin.scenes_v2)
# ---------------------------------------------------------------------------------------

TRAIN_COMMAND_V2 = "python -m ditlens.metrics.classifier --train --world v2 --out FOLDER"
SLOT_HEADS_V2 = ("presence", "shape", "colour", "texture", "size")  # per position slot
IMAGE_HEADS_V2 = ("background", "background_texture")  # per image
_VOCAB_FIELDS_V2 = ("shapes", "colours", "textures", "sizes", "backgrounds", "positions")


def _scenes_v2():
    from ditlens.builtin import scenes_v2  # here: v1 users never import the v2 world

    return scenes_v2


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
        world = _scenes_v2()
        defaults = {
            "shapes": world.SHAPES,
            "colours": world.COLOURS,
            "textures": world.TEXTURES,
            "sizes": world.SIZES,
            "backgrounds": world.BACKGROUNDS,
            "positions": world.POSITIONS,
        }
        object.__setattr__(self, "channels", tuple(self.channels))
        for name in _VOCAB_FIELDS_V2:
            object.__setattr__(self, name, tuple(getattr(self, name)) or defaults[name])
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
        layers: list[nn.Module] = []
        c_in = 3
        if config.stem:
            layers += [nn.Conv2d(3, config.stem, 3, padding=1), nn.GroupNorm(config.groups, config.stem), nn.SiLU()]
            c_in = config.stem
        for c in config.channels:  # then downsample first in each stage, as v1
            layers += [
                nn.Conv2d(c_in, c, 3, stride=2, padding=1),
                nn.GroupNorm(config.groups, c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.GroupNorm(config.groups, c),
                nn.SiLU(),
            ]
            c_in = c
        self.trunk = nn.Sequential(*layers)
        n_slots = len(config.positions)
        self.cell_side = math.isqrt(n_slots)  # 3: POSITIONS is a row-major 3x3 grid
        self.cell_proj = nn.Linear(4 * c_in, config.feature_dim)  # a cell's 2x2 sub-bins
        self.cell_embedding = nn.Parameter(torch.zeros(n_slots, config.feature_dim))
        self.slot_head = nn.Sequential(
            nn.SiLU(),
            nn.Linear(config.feature_dim, config.feature_dim),
            nn.SiLU(),
            nn.Linear(config.feature_dim, sum(config.slot_classes.values())),
        )
        # The image: mean and max over the map (a background texture is everywhere, an object is somewhere).
        self.proj = nn.Sequential(nn.Linear(2 * c_in, config.feature_dim), nn.SiLU())
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
        slot_parts = slot_logits.split(list(self.config.slot_classes.values()), dim=-1)
        image_parts = self.image_head(feats).split(list(self.config.image_classes.values()), dim=-1)
        return AttributeLogitsV2(*slot_parts, *image_parts, features=feats)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> AttributeClassifierV2:
        """Load a folder written by `save_pretrained` (no v2 weights are shipped)."""
        path = Path(path)
        config_file, weights_file = path / "config.json", path / "model.safetensors"
        if not (config_file.is_file() and weights_file.is_file()):
            raise FileNotFoundError(
                f"No classifier at {path} (needs config.json and model.safetensors); "
                f"train one with `{TRAIN_COMMAND_V2}`"
            )
        values = json.loads(config_file.read_text())
        if values.get("world") != "v2":
            raise ValueError(
                f"Classifier at {path} is for world {values.get('world', 'v1')!r}, not v2; "
                "load it with AttributeClassifier.from_pretrained"
            )
        config = ClassifierV2Config(**values)
        expected = ClassifierV2Config(
            stem=config.stem, channels=config.channels, feature_dim=config.feature_dim, groups=config.groups
        )
        for name in _VOCAB_FIELDS_V2:
            if getattr(config, name) != getattr(expected, name):
                raise ValueError(
                    f"Classifier at {path} was trained for {name} {getattr(config, name)}, but "
                    f"ditlens.builtin.scenes_v2 has {getattr(expected, name)}; retrain with "
                    f"`{TRAIN_COMMAND_V2}`"
                )
        model = cls(config)
        model.load_state_dict(load_file(weights_file))
        return model.eval()

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")


def _check_images_v2(images: torch.Tensor) -> None:
    size = _scenes_v2().IMAGE_SIZE
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        raise ValueError(
            f"Expected world v2 images of shape (n, 3, {size}, {size}) in [-1, 1], got {tuple(images.shape)}"
        )


@torch.no_grad()
def _logits_v2(classifier: AttributeClassifierV2, images: torch.Tensor, batch_size: int = 256) -> AttributeLogitsV2:
    """Eval-mode logits in batches, on the classifier's device, restoring its mode after."""
    _check_images_v2(images)
    param = next(classifier.parameters())
    was_training = classifier.training
    classifier.eval()
    try:
        parts = [classifier(chunk.to(param.device, param.dtype)) for chunk in images.split(batch_size)]
    finally:
        classifier.train(was_training)
    return AttributeLogitsV2(*(torch.cat([getattr(p, f.name) for p in parts]).cpu() for f in fields(AttributeLogitsV2)))


def predict_scenes_v2(classifier: AttributeClassifierV2, images: torch.Tensor) -> list:
    """Decoded predictions (scenes_v2.Scene), objects in POSITIONS order; 0 objects or more
    than the grammar's 3 are possible (then `scenes_v2.caption` refuses the scene)."""
    world, cfg = _scenes_v2(), classifier.config
    logits = _logits_v2(classifier, images)
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
        out.append((objects, cfg.backgrounds[pred["background"][i]], cfg.textures[pred["background_texture"][i]]))
    return [world.Scene(objects, bg, tex) for objects, bg, tex in out]


def features_v2(classifier: AttributeClassifierV2, images: torch.Tensor) -> torch.Tensor:
    """(n, feature_dim) penultimate features, for `frechet_distance`."""
    return _logits_v2(classifier, images).features


def scene_targets_v2(batch_scenes: list) -> dict[str, torch.Tensor]:
    """Class indices per head; -100 (cross-entropy's ignore index) where a slot is empty."""
    world = _scenes_v2()
    n, slots = len(batch_scenes), len(world.POSITIONS)
    t = {k: torch.full((n, slots), -100, dtype=torch.long) for k in SLOT_HEADS_V2 if k != "presence"}
    t["presence"] = torch.zeros((n, slots), dtype=torch.long)
    vocab = {"shape": world.SHAPES, "colour": world.COLOURS, "texture": world.TEXTURES, "size": world.SIZES}
    t["background"] = torch.tensor([world.BACKGROUNDS.index(s.background) for s in batch_scenes], dtype=torch.long)
    t["background_texture"] = torch.tensor(
        [world.TEXTURES.index(s.background_texture) for s in batch_scenes], dtype=torch.long
    )
    for i, scene in enumerate(batch_scenes):
        for obj in scene.objects:
            p = world.POSITIONS.index(obj.position)
            t["presence"][i, p] = 1
            for head, words in vocab.items():
                t[head][i, p] = words.index(getattr(obj, head))
    return t


def _loss_v2(logits: AttributeLogitsV2, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = logits.features.new_zeros(())
    for name in SLOT_HEADS_V2 + IMAGE_HEADS_V2:
        x = getattr(logits, name)
        y = targets[name].to(x.device)
        if (y != -100).any():  # a batch of empty slots would give a NaN mean
            loss = loss + F.cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1))
    return loss


def train_classifier_v2(
    steps: int = 1500,
    batch_size: int = 128,
    seed: int = 0,
    lr: float = 2e-3,
    config: ClassifierV2Config | None = None,
    augmentation: AugmentConfig | None = AugmentConfig(),
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> AttributeClassifierV2:
    """Train on fresh training-split v2 renders each step (every image a new seed), with v1's
    corruptions; returns the model on the CPU."""
    from tqdm import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    world = _scenes_v2()
    torch.manual_seed(seed)
    model = AttributeClassifierV2(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc="classifier v2", disable=not progress)
    for step in bar:
        batch = world.sample_batch(batch_size, seed=_seed(seed, 0, step), split="train")
        images = batch.images if augmentation is None else augment(batch.images, gen, augmentation)
        loss = _loss_v2(model(images.to(device)), scene_targets_v2(batch.scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.cpu().eval()


def evaluate_v2(classifier: AttributeClassifierV2, images: torch.Tensor, batch_scenes: list) -> dict[str, float]:
    """Accuracy per head against exact labels: presence over all slots, shape / colour /
    texture / size over present objects, background colour and texture per image; `scene` =
    every head right on the image."""
    logits = _logits_v2(classifier, images)
    targets = scene_targets_v2(batch_scenes)
    out = {}
    scene_ok = torch.ones(len(images), dtype=torch.bool)
    for name in SLOT_HEADS_V2 + IMAGE_HEADS_V2:
        pred, y = getattr(logits, name).argmax(-1), targets[name]
        valid = y != -100
        out[name] = float((pred[valid] == y[valid]).float().mean())
        right = (pred == y) | ~valid
        scene_ok &= right if right.ndim == 1 else right.all(1)
    out["scene"] = float(scene_ok.float().mean())
    return out


def score_fidelity_v2(classifier: AttributeClassifierV2, images: torch.Tensor, prompts: list[str]) -> FidelityScores:
    """v1's `score_fidelity` for world v2 prompts: objects matched to the prompt by position
    cell, `texture` scored like shape and colour (and part of `full_object`), the background's
    colour and texture per image. images: (n, 3, 64, 64) in [-1, 1]."""
    if len(images) != len(prompts):
        raise ValueError(f"Got {len(images)} images but {len(prompts)} prompts")
    world = _scenes_v2()
    wanted = [world.parse_caption(p) for p in prompts]
    rows = []  # per image: (n_named, per-attribute counts, extra)
    for scene, pred in zip(wanted, predict_scenes_v2(classifier, images)):
        found = {o.position: o for o in pred.objects}
        counts = dict.fromkeys(ATTRIBUTES_V2, 0)
        for obj in scene.objects:
            here = found.get(obj.position)
            ok = {"position": here is not None}
            for a in ("shape", "colour", "texture", "size"):
                ok[a] = here is not None and getattr(here, a) == getattr(obj, a)
            ok["full_object"] = all(ok.values())
            for a, v in ok.items():
                counts[a] += v
        counts["background"] = int(pred.background == scene.background)
        counts["background_texture"] = int(pred.background_texture == scene.background_texture)
        extra = sum(1 for p in found if p not in {o.position for o in scene.objects})
        rows.append((len(scene.objects), counts, extra))

    def total(subset: list) -> FidelityScores:
        return FidelityScores(
            n_images=len(subset),
            n_objects=sum(r[0] for r in subset),
            correct={a: sum(r[1][a] for r in subset) for a in ATTRIBUTES_V2},
            extra_objects=sum(r[2] for r in subset),
            attributes=ATTRIBUTES_V2,
        )

    groups = {k: total([r for r in rows if r[0] == k]) for k in sorted({r[0] for r in rows})}
    overall = total(rows)
    return FidelityScores(
        overall.n_images,
        overall.n_objects,
        overall.correct,
        overall.extra_objects,
        by_n_objects=groups,
        attributes=ATTRIBUTES_V2,
    )


def classifier_world(path: str | Path) -> str:
    """The world ("v1" or "v2") of the classifier folder at `path`, read from its config.json
    without loading weights (the shipped v1 config names no world)."""
    config_file = Path(path) / "config.json"
    if not (config_file.is_file() and (Path(path) / "model.safetensors").is_file()):
        raise FileNotFoundError(
            f"No classifier at {path} (needs config.json and model.safetensors); train one with "
            f"`{TRAIN_COMMAND}` (world v1) or `{TRAIN_COMMAND_V2}`"
        )
    try:
        values = json.loads(config_file.read_text())
    except ValueError as err:
        raise ValueError(f"Cannot read {str(config_file)!r} ({err}); is {str(path)!r} a classifier folder?") from None
    world = values.get("world", "v1") if isinstance(values, dict) else None
    if world not in ("v1", "v2"):
        raise ValueError(f"{str(config_file)!r} names world {world!r}; a classifier is for world v1 or v2")
    return world


def load_classifier(path: str | Path | None, world: str) -> AttributeClassifier | AttributeClassifierV2 | None:
    """The attribute classifier that scores a world's images: the folder at `path` (its world
    must be `world`; "shipped": the package's classifier of that world), else the shipped one
    for v1 and None for v2 (a v2 classifier is always asked for: its texture head is weak)."""
    if path is None:
        return AttributeClassifier.from_pretrained() if world == "v1" else None
    if str(path) == "shipped":  # the package's own classifier of the world
        path = DEFAULT_WEIGHTS if world == "v1" else SHIPPED_V2
    found = classifier_world(path)
    if found != world:
        raise ValueError(
            f"The classifier at {str(path)!r} is for world {found}, but the model is of world {world}; give a "
            f"world {world} classifier"
            + (f" (`{TRAIN_COMMAND_V2}`)" if world == "v2" else " (or leave it out for the shipped one)")
        )
    return AttributeClassifier.from_pretrained(path) if world == "v1" else AttributeClassifierV2.from_pretrained(path)


def _evaluate_cli_v2(classifier: AttributeClassifierV2, n: int, seed: int) -> dict[str, dict]:
    batch = _scenes_v2().sample_batch(n, seed=_seed(seed, 1), split="heldout")
    gen = torch.Generator().manual_seed(_seed(seed, 2))
    return {
        "clean": evaluate_v2(classifier, batch.images, batch.scenes),
        "augmented": evaluate_v2(classifier, augment(batch.images, gen), batch.scenes),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ditlens.metrics.classifier", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--train", action="store_true", help="train, evaluate and save")
    action.add_argument("--eval", action="store_true", help="evaluate saved weights")
    parser.add_argument(
        "--world",
        choices=("v1", "v2"),
        default="v1",
        help="v1: the shipped classifier (scenes.py); v2: scenes_v2.py, needs --out",
    )
    parser.add_argument("--steps", type=int, default=None, help="default: 800 (v1), 1500 (v2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"weights folder (v1 default: the shipped {DEFAULT_WEIGHTS}; v2: required)",
    )
    parser.add_argument("--eval-size", type=int, default=4096, help="held-out renders to score")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="world v2: where to train (cpu, cuda)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.world == "v2":
        _main_v2(parser, args)
        return
    args.out = args.out if args.out is not None else DEFAULT_WEIGHTS
    args.steps = args.steps if args.steps is not None else 800

    if args.train:
        start = time.perf_counter()
        model = train_classifier(steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr)
        print(f"trained in {time.perf_counter() - start:.0f} s")
        model.save_pretrained(args.out)
        print(f"saved to {args.out}")
    else:
        model = AttributeClassifier.from_pretrained(args.out)
    n_params = sum(p.numel() for p in model.parameters())
    report = {"params": n_params, "eval_size": args.eval_size, **_evaluate_cli(model, args.eval_size, args.seed)}
    print(json.dumps(report, indent=2))


def _main_v2(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.out is None or Path(args.out).resolve() == DEFAULT_WEIGHTS.resolve():
        parser.error("--world v2 needs --out FOLDER (and never the shipped v1 classifier's folder)")
    if args.train:
        start = time.perf_counter()
        model = train_classifier_v2(
            steps=args.steps if args.steps is not None else 1500,
            batch_size=args.batch_size,
            seed=args.seed,
            lr=args.lr,
            device=args.device,
        )
        print(f"trained in {time.perf_counter() - start:.0f} s")
        model.save_pretrained(args.out)
        print(f"saved to {args.out}")
    else:
        model = AttributeClassifierV2.from_pretrained(args.out)
    n_params = sum(p.numel() for p in model.parameters())
    report = {
        "world": "v2",
        "params": n_params,
        "eval_size": args.eval_size,
        **_evaluate_cli_v2(model, args.eval_size, args.seed),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
