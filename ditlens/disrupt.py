"""Finding 1, functional: zero (or scale) the top-k channels against bottom-k and random-k.

Channels are re-selected per site, step and sample on the current activations (the paper's
protocol); random-k uses seeded draws, each the same set at every site and step.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .adapters import adapter_for
from .config import DISRUPT_RULES, DisruptConfig
from .core.channels import selector_from_name
from .core.hooks import hooks
from .core.intervene import ScaleChannels, Scope
from .generation import generate, pixel_distances, to_pil
from .io.outputs import write_atomic

RULES = DISRUPT_RULES  # the rules' name here, as the app and sweep read it


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
            [[self.baseline[index], *row] for row in cells],
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
    scope = Scope(sites=tuple(config.sites) if config.sites else None, step_window=config.step_window)
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
