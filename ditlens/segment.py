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
from .choices import DEFAULT_STATISTIC
from .config import MASK_RULES, SegmentConfig
from .core.channels import TopK, selector_from_name
from .core.hooks import HookContext, hooks
from .core.masks import (
    DEFAULT_FOREGROUND,
    adjusted_rand_index,
    foreground_tokens,
    miou,
    oracle_miou,
    token_grid,
    upsample,
)
from .core.rows import conditional_slice
from .core.sites import check_site
from .generation import generate, image_size
from .io.outputs import write_atomic

RULES = MASK_RULES  # the rules' name here, as the app and sweep read it


class MaskObserver:
    """K = 2 foreground masks of the samples' conditional rows, per rule, site and step,
    each split named by every rule in `foregrounds`; and the top-1 channel's value per token
    (`heat`), the continuous map behind the masks.

    prompts: prompts per pipeline call. `ditlens.core.rows` says which rows of which call are the
    conditional ones, for both guidance layouts; unconditional and guidance calls are not
    looked at, so there is one mask per prompt and run. With `prompts=None` every row of
    every call is a sample (a bare transformer called by hand).
    The token grid is the call's own (`HookContext.grid`, read from the latents the pipeline
    made); image_size (H, W) lays it out only where the inputs do not tell (default: square)."""

    def __init__(
        self,
        rules: list[str],
        k: int,
        statistic: str = DEFAULT_STATISTIC,
        random_seed: int = 0,
        prompts: int | None = None,
        foregrounds: tuple[str, ...] = (DEFAULT_FOREGROUND,),
        image_size: tuple[int, int] | None = None,
    ):
        self.rules = rules
        self.selectors = {r: None if r == "all" else selector_from_name(r, k, statistic, random_seed) for r in rules}
        self.top1 = TopK(1, statistic)
        self.prompts = prompts
        self.foregrounds = tuple(foregrounds)
        self.image_size = image_size
        self._parts: dict[tuple[str, int, str], list[torch.Tensor]] = defaultdict(list)  # (R, B, N) per call
        self._heat: dict[tuple[int, str], list[torch.Tensor]] = defaultdict(list)  # (B, N) per call
        self.sites: list[str] = []
        self.grid: tuple[int, int] | None = None  # the token grid of the calls seen (rows, cols)

    @torch.no_grad()
    def __call__(self, img: torch.Tensor, txt: torch.Tensor | None, ctx: HookContext) -> None:
        if ctx.site not in self.sites:
            self.sites.append(ctx.site)
        rows = (
            slice(None) if self.prompts is None else conditional_slice(ctx.step_calls or (img.shape[0],), self.prompts)
        )
        if rows is None:  # an unconditional or guidance call
            return
        x = img[rows]
        grid = self.grid = ctx.grid or token_grid(x.shape[1], *(self.image_size or (None, None)))
        for rule, selector in self.selectors.items():
            channels = None if selector is None else selector.mask(x)
            self._parts[(rule, ctx.step, ctx.site)].append(foreground_tokens(x, channels, self.foregrounds, grid))
        top = self.top1.channel_indices(x)  # (B, 1)
        self._heat[(ctx.step, ctx.site)].append(
            x.gather(2, top.unsqueeze(1).expand(-1, x.shape[1], -1))[..., 0].float()
        )

    def _steps(self) -> list[int]:
        return sorted({key[1] for key in self._parts})

    def result(self) -> dict[str, dict[str, torch.Tensor]]:
        """foreground rule -> channel rule -> (steps, sites, samples, N) bool on the CPU."""
        stacked = {
            rule: torch.stack(
                [
                    torch.stack([torch.cat(self._parts[(rule, t, s)], dim=1) for s in self.sites], dim=1)
                    for t in self._steps()
                ],
                dim=1,
            ).cpu()  # (R, steps, sites, samples, N)
            for rule in self.rules
        }
        return {fg: {rule: m[i] for rule, m in stacked.items()} for i, fg in enumerate(self.foregrounds)}

    def heat(self) -> torch.Tensor:
        """(steps, sites, samples, N) float32: the top-1 channel's value per token (the
        channel chosen per sample, site and step by the statistic)."""
        return torch.stack(
            [torch.stack([torch.cat(self._heat[(t, s)]) for s in self.sites]) for t in self._steps()]
        ).cpu()


@dataclass
class MaskScores:
    """One channel rule's masks against ground truth, per step, site and sample. The rule's
    labelling is scored beside two scores of the split alone, so that a labelling error can
    neither hide a good split nor pass for one."""

    miou: torch.Tensor  # (steps, sites, samples): two-class mIoU of the foreground rule's labelling
    oracle: torch.Tensor  # the better of the two labellings per image: an upper bound (it reads the truth)
    ari: torch.Tensor  # adjusted Rand index of the split against the truth (no labelling at all)

    @property
    def agrees(self) -> torch.Tensor:
        """(steps, sites, samples) bool: the rule named the oracle's cluster (ties count)."""
        return self.miou >= self.oracle

    def samples(self, index: list[int] | torch.Tensor) -> MaskScores:
        index = torch.as_tensor(index, dtype=torch.long)
        return MaskScores(self.miou[..., index], self.oracle[..., index], self.ari[..., index])

    def per_site(self) -> dict[str, torch.Tensor]:
        """name -> (sites,) means over steps and samples (agreement as a share)."""
        return {
            "miou": self.miou.mean((0, 2)),
            "oracle": self.oracle.mean((0, 2)),
            "agreement": self.agrees.float().mean((0, 2)),
            "ari": self.ari.mean((0, 2)),
        }


def score_masks(token_masks: torch.Tensor, truth: torch.Tensor, grid: tuple[int, int]) -> MaskScores:
    """(steps, sites, samples, N) bool token masks against (samples, H, W) bool truth."""
    steps, n_sites, samples, _ = token_masks.shape
    if truth.shape[0] != samples:
        raise ValueError(f"Ground truth has {truth.shape[0]} masks but there are {samples} samples.")
    pred = upsample(token_masks.reshape(-1, token_masks.shape[-1]), grid, (truth.shape[1], truth.shape[2]))
    full = truth.bool().repeat(steps * n_sites, 1, 1)
    shape = (steps, n_sites, samples)
    return MaskScores(
        miou(pred, full).view(shape), oracle_miou(pred, full).view(shape), adjusted_rand_index(pred, full).view(shape)
    )


@dataclass
class SegmentResult:
    sites: list[str]
    masks: dict[str, torch.Tensor]  # rule -> (steps, sites, samples, N) bool token masks, named by `foreground`
    image_size: tuple[int, int]  # (H, W) of the images
    images: torch.Tensor | None = None  # (samples, 3, H, W) in [0, 1]
    meta: dict[str, Any] = field(default_factory=dict)
    foreground: str = DEFAULT_FOREGROUND  # the naming rule of `masks`
    other_foregrounds: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # other naming -> rule -> masks
    heat: torch.Tensor | None = None  # (steps, sites, samples, N) float: the top-1 channel per token
    token_rows_cols: tuple[int, int] | None = None  # the grid the masks were made on; None: from image_size

    @property
    def grid(self) -> tuple[int, int]:
        if self.token_rows_cols is not None:
            return self.token_rows_cols
        n_tokens = next(iter(self.masks.values())).shape[-1]
        return token_grid(n_tokens, *self.image_size)

    @property
    def steps(self) -> int:
        return next(iter(self.masks.values())).shape[0]

    @classmethod
    def concatenate(cls, parts: list[SegmentResult]) -> SegmentResult:
        """Batches of one measurement (same sites, steps, rules and grid) as one result, their
        samples concatenated in order; the first part's meta."""
        first = parts[0]

        def cat_optional(tensors: list[torch.Tensor | None], dim: int = 0) -> torch.Tensor | None:
            return None if tensors[0] is None else torch.cat([t for t in tensors if t is not None], dim=dim)

        def cat(masks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
            return {rule: torch.cat([m[rule] for m in masks], dim=2) for rule in masks[0]}

        return cls(
            sites=first.sites,
            masks=cat([p.masks for p in parts]),
            image_size=first.image_size,
            images=cat_optional([p.images for p in parts]),
            meta=first.meta,
            foreground=first.foreground,
            other_foregrounds={fg: cat([p.other_foregrounds[fg] for p in parts]) for fg in first.other_foregrounds},
            heat=cat_optional([p.heat for p in parts], dim=2),
            token_rows_cols=first.token_rows_cols,
        )

    def named(self, foreground: str) -> dict[str, torch.Tensor]:
        """rule -> masks under another foreground rule (computed in the same pass)."""
        if foreground == self.foreground:
            return self.masks
        if foreground not in self.other_foregrounds:
            raise ValueError(
                f"Masks were named by {', '.join([self.foreground, *self.other_foregrounds])} only; not {foreground!r}."
            )
        return self.other_foregrounds[foreground]

    def pixel_masks(self, rule: str, step: int, site: str) -> torch.Tensor:
        """(samples, H, W) bool: one site and step, upsampled to the image."""
        tokens = self.masks[rule][step, self.sites.index(site)]
        return upsample(tokens, self.grid, self.image_size)

    def heat_map(self, step: int, site: str) -> torch.Tensor:
        """(samples, h, w) float: the top-1 massive channel over the token grid."""
        if self.heat is None:
            raise ValueError("This result holds no heat maps.")
        return self.heat[step, self.sites.index(site)].view(-1, *self.grid)

    def scores(self, truth: torch.Tensor, foreground: str | None = None) -> dict[str, MaskScores]:
        """rule -> MaskScores against (samples, H, W) ground truth (the image size)."""
        if tuple(truth.shape[1:]) != tuple(self.image_size):
            raise ValueError(f"Ground-truth masks are {tuple(truth.shape[1:])}, images are {self.image_size}.")
        return {rule: score_masks(m, truth, self.grid) for rule, m in self.named(foreground or self.foreground).items()}

    def miou_table(self, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        """rule -> (steps, sites) mean two-class mIoU of the foreground rule's labelling."""
        return {rule: s.miou.mean(-1) for rule, s in self.scores(truth).items()}

    def summary(self, truth: torch.Tensor) -> dict[str, Any]:
        """Per rule: the per-site curves (mean over steps and samples) and the best site, for
        the labelling (`miou`), the oracle labelling, the agreement share and the ARI."""
        out: dict[str, Any] = {}
        for rule, scores in self.scores(truth).items():
            curves = scores.per_site()
            best = int(curves["miou"].argmax())
            out[rule] = {name: c.tolist() for name, c in curves.items()} | {
                "best": {"site": self.sites[best], **{name: float(c[best]) for name, c in curves.items()}},
                "best_oracle": {
                    "site": self.sites[int(curves["oracle"].argmax())],
                    "oracle": float(curves["oracle"].max()),
                },
            }
        return out

    def save(self, out_dir: str | Path, truth: torch.Tensor | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        from .core.record import write_safetensors

        tensors = {r: m.to(torch.uint8).contiguous() for r, m in self.masks.items()}
        tensors |= {
            f"{r}@{fg}": m.to(torch.uint8).contiguous()
            for fg, masks in self.other_foregrounds.items()
            for r, m in masks.items()
        }
        if self.heat is not None:
            tensors["heat_top1"] = self.heat.contiguous()
        # one metadata entry: safetensors writes several in an order that varies by process, and the
        # file must be the same bytes for the same result (a resumed sweep is compared byte for byte)
        header = {"segment": json.dumps({"sites": self.sites, "foreground": self.foreground})}
        write_atomic(out / "masks.safetensors", lambda tmp: write_safetensors(tensors, tmp, header))
        summary: dict[str, Any] = {
            "sites": self.sites,
            "image_size": self.image_size,
            "grid": self.grid,
            "foreground": self.foreground,
            "meta": self.meta,
        }
        if truth is not None:
            summary["scores"] = self.summary(truth)
            # kept for readers of earlier files: the labelling's curve and best site
            summary["miou_per_site_mean_over_steps"] = {r: v["miou"] for r, v in summary["scores"].items()}
            summary["miou_best"] = {
                r: {"value": v["best"]["miou"], "site": v["best"]["site"]} for r, v in summary["scores"].items()
            }
        write_atomic(out / "segment.json", json.dumps(summary, indent=1))
        return out

    def view(self, site: str | None = None, step: int | None = None) -> tuple[str, int]:
        """(site, step) to show: the given ones, checked, or the middle site and step."""
        site = self.sites[len(self.sites) // 2] if site is None else site
        check_site(site, self.sites)
        step = self.steps // 2 if step is None else step
        if not 0 <= step < self.steps:
            raise ValueError(f"Step {step} is outside the schedule: 0..{self.steps - 1}.")
        return site, step

    def plot_overlays(
        self,
        path: str | Path,
        site: str | None = None,
        step: int | None = None,
        truth: torch.Tensor | None = None,
        max_rows: int = 8,
        rules: list[str] | None = None,
    ) -> Path:
        """Per image (at most `max_rows`): the image, the truth, the top-1 channel's heat map
        and each rule's mask outline, at `site` and `step` (default: the middle ones)."""
        from .reporting.plots import plot_segment_overlays

        site, step = self.view(site, step)
        return plot_segment_overlays(self, path, site, step, truth, max_rows=max_rows, rules=rules)

    def plot_scores(self, scores: dict[str, MaskScores], path: str | Path, title: str = "") -> Path:
        """mIoU per site (mean over steps and images) of each rule, its oracle labelling dotted
        beside it: `scores` is `self.scores(truth)`."""
        from .reporting.plots import plot_miou_curves

        return plot_miou_curves(
            {rule: sc.miou.mean(-1) for rule, sc in scores.items()},
            self.sites,
            path,
            title,
            oracle={rule: sc.oracle.mean(-1) for rule, sc in scores.items()},
        )


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
    try:
        size = image_size(pipe, config.generation)
    except ValueError:
        size = None  # square token grids only
    by_foreground: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
    images, heat = [], []
    for seed in config.seeds:  # one observer pass per seed keeps rows = prompts
        observer = MaskObserver(
            config.rules,
            config.k,
            config.statistic,
            config.random_seed,
            prompts=len(config.prompts),
            foregrounds=config.foregrounds,
            image_size=size,
        )
        with hooks(pipe, observers=[observer]) as run:
            maps: Any = nullcontext()
            if attention_positions is not None:
                from .attention import AttentionMaps

                maps = AttentionMaps(
                    pipe, attention_positions, prompts=len(config.prompts), step_fn=lambda: run.clock.step
                )
            with maps:
                images.append(generate(pipe, config.prompts, [seed], config.generation, prompt_kwargs))
        for fg, masks in observer.result().items():
            for rule, m in masks.items():
                by_foreground[fg][rule].append(m)
        heat.append(observer.heat())
        if attention_positions is not None:
            from .attention import attention_masks

            for fg in config.foregrounds:  # attention's own polarity: high attention to the subject's words
                by_foreground[fg]["attention"].append(attention_masks(maps.result()))
    stacked = {
        fg: {rule: torch.cat(parts, dim=2) for rule, parts in masks.items()} for fg, masks in by_foreground.items()
    }
    all_images = torch.cat(images)
    return SegmentResult(
        sites=observer.sites,
        masks=stacked.pop(config.foreground),
        image_size=(all_images.shape[-2], all_images.shape[-1]),
        images=all_images,
        meta={
            "prompts": config.prompts,
            "seeds": config.seeds,
            "k": config.k,
            "statistic": config.statistic,
            "foreground": config.foreground,
            # what the samples axis holds: one mask per seed x prompt, from its conditional rows
            "samples": [{"seed": seed, "prompt": prompt} for seed in config.seeds for prompt in config.prompts],
            "rows": "each sample's conditional rows (ditlens.core.rows); "
            "unconditional and guidance calls are not masked",
        },
        foreground=config.foreground,
        other_foregrounds=stacked,
        heat=torch.cat(heat, dim=2),
        token_rows_cols=observer.grid,
    )
