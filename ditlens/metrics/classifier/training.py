"""Training and evaluating an attribute classifier, for either world: fresh renders every
step (no epochs: data is free), corrupted the way generated images differ from renders,
cross-entropy summed over the heads, accuracy per head against the exact labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # cross-entropy's ignore index: the target of an empty slot's attribute heads


@dataclass(frozen=True)
class AugmentConfig:
    noise: float = 0.08  # max std of gaussian pixel noise, in [-1, 1] units
    gain: float = 0.08  # per-channel contrast jitter, +-
    offset: float = 0.08  # per-channel brightness jitter, +-
    blur_p: float = 0.4  # share of images blurred
    blur_sigma: tuple[float, float] = (0.3, 0.9)  # px: softens edges, keeps 8 vs 12 px apart
    shift_p: float = 0.3  # share of images moved by 1 px (generated layouts are not pixel-exact)


DEFAULT_AUGMENTATION = AugmentConfig()  # what the shipped classifiers were trained with


def augment(
    images: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig = DEFAULT_AUGMENTATION
) -> torch.Tensor:
    """Corrupt renders the way generated images differ from them; labels stay valid."""
    n = len(images)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    # 1 px shifts, edges replicated
    shift = torch.randint(-1, 2, (n, 2), generator=generator) * (uniform(n, 1) < cfg.shift_p)
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")  # (n, 3, S + 2, S + 2)
    x = images.clone()
    for dy, dx in shift.unique(dim=0).tolist():
        if dy or dx:
            sel = (shift == torch.tensor([dy, dx])).all(1)
            side = images.shape[-1]  # 32 px in world v1, 64 px in v2
            x[sel] = padded[sel, :, 1 - dy : 1 - dy + side, 1 - dx : 1 - dx + side]
    # blur: separable 3-tap gaussian (w, 1 - 2w, w) with a per-image sigma, w = 0 unblurred
    sigma = cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * uniform(n)
    side_weight = torch.exp(-1 / (2 * sigma**2))
    w = (side_weight / (1 + 2 * side_weight) * (uniform(n) < cfg.blur_p)).view(n, 1, 1, 1)
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


def stream_seed(*keys: int) -> int:
    """Independent stream per (run seed, purpose, step)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def slot_targets(scenes: Sequence[Any], positions: tuple[str, ...], vocab: dict[str, tuple[str, ...]]) -> dict:
    """Class indices (n, slots) of the per-slot heads: `presence` (0/1) and one head per word
    list in `vocab` (the object field of that name), IGNORE where a slot is empty."""
    n, slots = len(scenes), len(positions)
    t = {head: torch.full((n, slots), IGNORE, dtype=torch.long) for head in vocab}
    t["presence"] = torch.zeros((n, slots), dtype=torch.long)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            p = positions.index(obj.position)
            t["presence"][i, p] = 1
            for head, words in vocab.items():
                t[head][i, p] = words.index(getattr(obj, head))
    return t


def heads_loss(logits: Any, targets: dict[str, torch.Tensor], heads: tuple[str, ...]) -> torch.Tensor:
    """Cross-entropy summed over `heads`, in that order."""
    loss = logits.features.new_zeros(())
    for name in heads:
        x = getattr(logits, name)
        y = targets[name].to(x.device)
        if (y != IGNORE).any():  # a batch of empty slots would give a NaN mean
            loss = loss + F.cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1))
    return loss


def head_accuracies(logits: Any, targets: dict[str, torch.Tensor], heads: tuple[str, ...]) -> dict[str, float]:
    """Accuracy per head over its labelled entries, and `scene`: every head right on the image."""
    out = {}
    scene_ok = torch.ones(len(logits.features), dtype=torch.bool)
    for name in heads:
        pred, y = getattr(logits, name).argmax(-1), targets[name]
        valid = y != IGNORE
        out[name] = float((pred[valid] == y[valid]).float().mean())
        right = (pred == y) | ~valid
        scene_ok &= right if right.ndim == 1 else right.all(1)
    out["scene"] = float(scene_ok.float().mean())
    return out


@dataclass(frozen=True)
class Recipe:
    """What one world's classifier is trained on: its world (renders from `sample_batch`),
    the targets of a batch's scenes and the heads the loss sums over."""

    world: ModuleType
    targets: Callable[[list], dict[str, torch.Tensor]]
    heads: tuple[str, ...]
    desc: str  # the progress bar's


@dataclass(frozen=True)
class FitSettings:
    """How long and how a classifier trains (the defaults are each world's train function's)."""

    steps: int
    batch_size: int
    seed: int  # model init, data order, corruptions
    lr: float  # peak of the one-cycle schedule
    augmentation: AugmentConfig | None  # None: clean renders
    device: str | torch.device = "cpu"
    progress: bool = True


Model = TypeVar("Model", bound=nn.Module)


def fit(build: Callable[[], Model], recipe: Recipe, settings: FitSettings) -> Model:
    """Train the classifier `build()` makes (after seeding torch with the settings' seed) on
    fresh training-split renders each step; returns it on the CPU in eval mode."""
    from tqdm import tqdm

    steps, batch_size, seed, device = settings.steps, settings.batch_size, settings.seed, settings.device
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    torch.manual_seed(seed)
    model = build().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc=recipe.desc, disable=not settings.progress)
    for step in bar:
        batch = recipe.world.sample_batch(batch_size, seed=stream_seed(seed, 0, step), split="train")
        augmentation = settings.augmentation
        images = batch.images if augmentation is None else augment(batch.images, gen, augmentation)
        loss = heads_loss(model(images.to(device)), recipe.targets(batch.scenes), recipe.heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.cpu().eval()


def heldout_report(classifier: nn.Module, world: ModuleType, evaluate: Callable, n: int, seed: int) -> dict:
    """`evaluate` on `n` held-out renders, clean and corrupted by `augment`."""
    batch = world.sample_batch(n, seed=stream_seed(seed, 1), split="heldout")
    gen = torch.Generator().manual_seed(stream_seed(seed, 2))
    return {
        "clean": evaluate(classifier, batch.images, batch.scenes),
        "augmented": evaluate(classifier, augment(batch.images, gen), batch.scenes),
    }
