"""Finding 1, functional: zero (or scale) the top-k channels against bottom-k and random-k.

Channels are re-selected per site, step and sample on the current activations (the paper's
protocol); random-k uses seeded draws, each the same set at every site and step.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .adapters import adapter_for
from .choices import DEFAULT_STATISTIC
from .core.channels import check_statistic, selector_from_name
from .core.hooks import hooks
from .core.intervene import ScaleChannels, Scope
from .generation import GenerationSettings, check_prompts_and_seeds, generate, pixel_distances, to_pil
from .io.outputs import write_atomic

RULES = ("top", "bottom", "random")


@dataclass
class DisruptConfig:
    prompts: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # the paper's massive sets are this small
    rules: list[str] = field(default_factory=lambda: list(RULES))  # top = massive; bottom, random = controls
    factor: float = 0.0  # 0 zeroes the channels (the paper); other values scale them
    random_draws: int = 3  # random-k is a distribution: mean and spread over this many draws
    statistic: str = DEFAULT_STATISTIC
    sites: list[str] | None = None  # None: every image-stream site
    steps: tuple[int, int] | None = None  # [start, stop) window; None: every step
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self, hidden_size: int, site_names: list[str]) -> None:
        check_prompts_and_seeds(self.prompts, self.seeds)
        for rule in self.rules:
            if rule not in RULES:
                raise ValueError(f"Unknown channel rule {rule!r}. Allowed: {', '.join(RULES)}.")
        for k in self.ks:
            if not isinstance(k, int) or not 0 <= k <= hidden_size:
                raise ValueError(f"k must be an integer in 0..{hidden_size} (0 = no edit); got {k!r}.")
        check_statistic(self.statistic)
        if not math.isfinite(self.factor):
            raise ValueError(f"factor must be a finite number; got {self.factor!r}.")
        if self.random_draws < 1:
            raise ValueError(f"random_draws must be >= 1; got {self.random_draws}.")
        Scope(sites=tuple(self.sites) if self.sites else None, steps=self.steps).validate(site_names)
        self.generation.validate()


@dataclass(frozen=True)
class Condition:
    rule: str  # "none", "top", "bottom" or "random"
    k: int
    draw: int = 0  # which random draw (random rule only)

    @property
    def label(self) -> str:
        if self.rule == "none":
            return "none"
        return f"{self.rule}-{self.k}" + (f"#{self.draw}" if self.rule == "random" else "")


@dataclass
class DisruptResult:
    config: DisruptConfig
    images: dict[Condition, torch.Tensor]  # condition -> (n, 3, H, W) in [0, 1], seed-major

    @property
    def baseline(self) -> torch.Tensor:
        return self.images[Condition("none", 0)]

    def distances(self) -> dict[str, dict[str, float]]:
        """Pixel distance of each condition's images to the unedited ones."""
        return {c.label: pixel_distances(imgs, self.baseline) for c, imgs in self.images.items()}

    def summary(self) -> dict[str, Any]:
        config = asdict(self.config)
        return {
            "config": config,
            "conditions": [asdict(c) | {"label": c.label} for c in self.images],
            "distances": self.distances(),
        }

    def grid_rows(self, index: int = 0) -> tuple[list[str], list[str], list[list[torch.Tensor | None]]]:
        """Rows = rule, columns = k, for one image index; random shows its first draw."""
        ks = sorted({c.k for c in self.images if c.rule != "none"})
        rules = [r for r in RULES if any(c.rule == r for c in self.images)]
        cells = [
            [self.images[Condition(r, k)][index] if Condition(r, k) in self.images else None for k in ks] for r in rules
        ]
        return rules, [str(k) for k in ks], cells

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for condition, imgs in self.images.items():
            for i, image in enumerate(to_pil(imgs)):
                image.save(out / f"{condition.label.replace('#', '_draw')}_{i:03d}.png")
        write_atomic(out / "disrupt.json", json.dumps(self.summary(), indent=1, default=str))
        return out

    def plot_grid(self, path: str | Path, index: int = 0) -> Path:
        """Image `index` under every condition: rows are the rules (random: its first draw),
        columns k, the unedited image first; titled with the edit and the prompt."""
        from .reporting.plots import plot_image_table

        rules, ks, cells = self.grid_rows(index)
        prompt = self.config.prompts[index % len(self.config.prompts)]
        edit = "zeroing channels" if self.config.factor == 0 else f"channels x {self.config.factor:g}"
        return plot_image_table(
            [[self.baseline[index]] + row for row in cells],
            path,
            [f"{r}-k" for r in rules],
            ["none"] + [f"k={k}" for k in ks],
            title=f"{edit}: {prompt}" if len(prompt) < 90 else edit,
        )

    def plot_curves(self, scores: dict[str, dict[str, Any]], out: str | Path) -> list[Path]:
        """One score-over-k plot per score that `scores` (`Scorers.score` of this result) holds:
        KEY_over_k.png in `out`, one line per rule."""
        from .metrics.scores import DISRUPT_CURVES, score_curves
        from .reporting.plots import plot_metric_over_k

        paths = []
        for key, (label, title) in DISRUPT_CURVES.items():
            curves = score_curves(scores, key, self.config.rules)
            if curves:
                paths.append(plot_metric_over_k(curves, Path(out) / f"{key}_over_k.png", label, title))
        return paths


def conditions(config: DisruptConfig) -> list[Condition]:
    out = [Condition("none", 0)]
    for rule in config.rules:
        for k in config.ks:
            if k == 0:
                continue  # k = 0 is the unedited run
            draws = config.random_draws if rule == "random" else 1
            out += [Condition(rule, k, d) for d in range(draws)]
    return out


def edit_for(condition: Condition, config: DisruptConfig) -> list[ScaleChannels]:
    if condition.rule == "none":
        return []
    selector = selector_from_name(condition.rule, condition.k, config.statistic, seed=condition.draw)
    scope = Scope(sites=tuple(config.sites) if config.sites else None, steps=config.steps)
    return [ScaleChannels(selector, config.factor, scope=scope)]


def disrupt(pipe: Any, config: DisruptConfig, *, prompt_kwargs: dict | None = None, progress=None) -> DisruptResult:
    """Generate every condition with identical noise; `progress(i, n, label)` is called per condition."""
    adapter = adapter_for(pipe)
    config.validate(adapter.hidden_size, [s.name for s in adapter.sites()])
    todo = conditions(config)
    images: dict[Condition, torch.Tensor] = {}
    for i, condition in enumerate(todo):
        if progress:
            progress(i, len(todo), condition.label)
        # every condition runs hooked, the unedited one too: k = 0 must equal plain generation
        with hooks(pipe, edits=edit_for(condition, config)):
            images[condition] = generate(pipe, config.prompts, config.seeds, config.generation, prompt_kwargs)
    return DisruptResult(config, images)
