"""Finding 2, as a capability: K = 2 masks per site and step, for several channel rules at once.

Masks are computed on the fly inside the hooks (no hidden states kept): memory is
O(rules x steps x sites x samples x tokens) booleans. Baselines run in the same pass:
bottom-k, seeded random-k and all channels.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .adapters import adapter_for
from .channels import check_k, check_statistic, selector_from_name
from .generation import GenerationSettings, check_prompts_and_seeds, generate
from .hooks import HookContext, hooks
from .masks import foreground_tokens, miou, token_grid, upsample

RULES = ("top", "bottom", "random", "all")


@dataclass
class SegmentConfig:
    prompts: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    k: int = 4  # massive channels used for clustering
    rules: list[str] = field(default_factory=lambda: list(RULES))  # top + the baselines, in one pass
    statistic: str = "abs_mean"
    random_seed: int = 0
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self, hidden_size: int) -> None:
        check_prompts_and_seeds(self.prompts, self.seeds)
        for rule in self.rules:
            if rule not in RULES:
                raise ValueError(f"Unknown mask rule {rule!r}. Allowed: {', '.join(RULES)}.")
        check_k(self.k, hidden_size)
        check_statistic(self.statistic)
        self.generation.validate()


class MaskObserver:
    """K = 2 foreground masks for the last `rows` rows of every call, per rule, site and step.

    With classifier-free guidance concatenated as [uncond..., cond...] (diffusers' SD3, SANA
    and the built-in pipeline), the last rows are the conditional samples."""

    def __init__(self, rules: list[str], k: int, statistic: str = "abs_mean", random_seed: int = 0, rows: int | None = None):
        self.rules = rules
        self.selectors = {r: None if r == "all" else selector_from_name(r, k, statistic, random_seed) for r in rules}
        self.rows = rows
        self._parts: dict[tuple[str, int, str], list[torch.Tensor]] = defaultdict(list)
        self.sites: list[str] = []

    @torch.no_grad()
    def __call__(self, img: torch.Tensor, txt: torch.Tensor | None, ctx: HookContext) -> None:
        if ctx.site not in self.sites:
            self.sites.append(ctx.site)
        x = img[-self.rows :] if self.rows else img
        for rule, selector in self.selectors.items():
            channels = None if selector is None else selector.mask(x)
            self._parts[(rule, ctx.step, ctx.site)].append(foreground_tokens(x, channels))

    def result(self) -> dict[str, torch.Tensor]:
        """rule -> (steps, sites, samples, N) bool on the CPU."""
        steps = sorted({key[1] for key in self._parts})
        return {
            rule: torch.stack(
                [torch.stack([torch.cat(self._parts[(rule, t, s)]) for s in self.sites]) for t in steps]
            ).cpu()
            for rule in self.rules
        }


@dataclass
class SegmentResult:
    sites: list[str]
    masks: dict[str, torch.Tensor]  # rule -> (steps, sites, samples, N) bool token masks
    image_size: tuple[int, int]  # (H, W) of the images
    images: torch.Tensor | None = None  # (samples, 3, H, W) in [0, 1]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        n_tokens = next(iter(self.masks.values())).shape[-1]
        return token_grid(n_tokens, *self.image_size)

    def pixel_masks(self, rule: str, step: int, site: str) -> torch.Tensor:
        """(samples, H, W) bool: one site and step, upsampled to the image."""
        tokens = self.masks[rule][step, self.sites.index(site)]
        return upsample(tokens, self.grid, self.image_size)

    def miou_table(self, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        """rule -> (steps, sites) mean two-class mIoU against (samples, H, W) ground truth."""
        table = {}
        for rule, masks in self.masks.items():
            steps, n_sites, samples, _ = masks.shape
            if truth.shape[0] != samples:
                raise ValueError(f"Ground truth has {truth.shape[0]} masks but there are {samples} samples.")
            if tuple(truth.shape[1:]) != tuple(self.image_size):
                raise ValueError(f"Ground-truth masks are {tuple(truth.shape[1:])}, images are {self.image_size}.")
            flat = upsample(masks.reshape(-1, masks.shape[-1]), self.grid, self.image_size)
            scores = miou(flat, truth.repeat(steps * n_sites, 1, 1))
            table[rule] = scores.view(steps, n_sites, samples).mean(-1)
        return table

    def save(self, out_dir: str | Path, truth: torch.Tensor | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        tmp = out / "masks.safetensors.tmp"
        save_file({r: m.to(torch.uint8).contiguous() for r, m in self.masks.items()}, str(tmp), metadata={"sites": json.dumps(self.sites)})
        tmp.replace(out / "masks.safetensors")
        summary: dict[str, Any] = {"sites": self.sites, "image_size": self.image_size, "grid": self.grid, "meta": self.meta}
        if truth is not None:
            table = self.miou_table(truth)
            summary["miou_per_site_mean_over_steps"] = {r: t.mean(0).tolist() for r, t in table.items()}
            summary["miou_best"] = {r: {"value": float(t.mean(0).max()), "site": self.sites[int(t.mean(0).argmax())]} for r, t in table.items()}
        tmp = out / "segment.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(out / "segment.json")
        return out


def segment_generated(
    pipe: Any,
    config: SegmentConfig,
    *,
    prompt_kwargs: dict | None = None,
    attention_positions: list[list[int]] | None = None,
) -> SegmentResult:
    """Generate the prompts and cluster every site and step of the conditional rows.

    attention_positions: per prompt, the text-token positions of its subject words; adds
    the "attention" baseline (K = 2 on the image-to-subject-words attention map, read
    through the attention processors) to the same pass."""
    from contextlib import nullcontext

    adapter = adapter_for(pipe)
    config.validate(adapter.hidden_size)
    masks: dict[str, list[torch.Tensor]] = defaultdict(list)
    images = []
    for seed in config.seeds:  # one observer pass per seed keeps rows = prompts
        observer = MaskObserver(config.rules, config.k, config.statistic, config.random_seed, rows=len(config.prompts))
        with hooks(pipe, observers=[observer]) as run:
            maps = nullcontext()
            if attention_positions is not None:
                from .attention import AttentionMaps

                maps = AttentionMaps(pipe, attention_positions, rows=len(config.prompts), step_fn=lambda: run.clock.step)
            with maps:
                images.append(generate(pipe, config.prompts, [seed], config.generation, prompt_kwargs))
        for rule, m in observer.result().items():
            masks[rule].append(m)
        if attention_positions is not None:
            from .attention import attention_masks

            masks["attention"].append(attention_masks(maps.result()))
    stacked = {rule: torch.cat(parts, dim=2) for rule, parts in masks.items()}
    all_images = torch.cat(images)
    return SegmentResult(
        sites=observer.sites,
        masks=stacked,
        image_size=(all_images.shape[-2], all_images.shape[-1]),
        images=all_images,
        meta={"prompts": config.prompts, "seeds": config.seeds, "k": config.k, "statistic": config.statistic},
    )
