"""Finding 1, look only: which channels are massive, per site and step, and how stable.

`find_channels` runs the pipeline once per seed over all prompts with recording hooks and
returns a `FindResult`: the recorded `ChannelStats`, the generated images and a summary of
the selected channels (what `ditlens find` writes as JSON).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import FindConfig
from .core.channels import jaccard
from .core.hooks import hooks
from .core.record import ChannelStats, RecordConfig
from .io.outputs import output_folder


@dataclass
class FindResult:
    stats: ChannelStats
    config: FindConfig
    images: list[Any]  # PIL images, seed-major then prompt order

    @property
    def samples(self) -> ChannelStats:
        """The statistics of each sample's conditional row, seed-major then prompt order
        (`ditlens.core.rows`): what the summary, the plots and the surface read."""
        return self.stats.samples(len(self.config.prompts))

    @property
    def surface(self) -> torch.Tensor | None:
        """(N, D) image tokens of the surface site at the surface step, of the first
        sample's conditional row."""
        samples = self.samples
        if not samples.hidden:
            return None
        return next(iter(samples.hidden.values()))[0, 0]  # (kept steps, samples, N, D): the surface step only

    def summary(self) -> dict[str, Any]:
        """Per site: consensus top-k channels, their ratio to the median, stability (Jaccard).

        Only the entries where the site ran count (`stats.ran`): a block skipped in a call
        (SD3's skip-layer guidance) or a call a step did not make leaves NaN rows, which
        `topk` would rank first. Averages and frequencies are over the present rows;
        Jaccard over the pairs whose both entries are present."""
        k, stat = self.config.k, self.config.statistic
        samples = self.samples  # rows: samples, seed-major
        table = samples.img[stat]  # (steps, sites, samples, D)
        present = samples.ran.get("img", torch.ones(table.shape[:-1], dtype=torch.bool))  # (steps, sites, samples)
        ratio = samples.ratio_to_median(stat)
        top = samples.top_k(k, stat)  # (steps, sites, samples, k); garbage where absent
        masks = samples.top_k_mask(k, stat)  # (steps, sites, samples, D); garbage where absent
        n_seeds, rows_per_seed = len(self.config.seeds), len(self.config.prompts)
        per_site = {}
        for s, site in enumerate(self.stats.sites):
            ran = present[:, s]  # (steps, rows)
            counts = Counter(top[:, s][ran].flatten().tolist())
            consensus = [c for c, _ in counts.most_common(k)]
            total = max(1, int(ran.sum()))
            site_masks = masks[:, s]  # (steps, rows, D)
            seed_blocks = site_masks.reshape(site_masks.shape[0], n_seeds, rows_per_seed, -1)
            seed_ran = ran.reshape(ran.shape[0], n_seeds, rows_per_seed)
            per_site[site] = {
                "top_channels": consensus,
                "frequency_in_top_k": [round(counts[c] / total, 4) for c in consensus],
                "ratio_to_median": [round(float(ratio[:, s, :, c][ran].mean()), 3) for c in consensus],
                "top_value_mean": [round(float(table[:, s, :, c][ran].mean()), 5) for c in consensus],
                "median_mean": round(float(table[:, s].median(dim=-1).values[ran].mean()), 6)
                if bool(ran.any())
                else None,
                "jaccard_across_prompts": _jaccard(seed_blocks.permute(2, 0, 1, 3), seed_ran.permute(2, 0, 1)),
                "jaccard_across_seeds": _jaccard(seed_blocks.permute(1, 0, 2, 3), seed_ran.permute(1, 0, 2)),
                "jaccard_across_steps": _jaccard(site_masks, ran),
                "top_k_per_step_first_sample": [
                    channels.tolist() if bool(row_ran) else None for channels, row_ran in zip(top[:, s, 0], ran[:, 0])
                ],
            }
        return {
            "k": k,
            "statistic": stat,
            "prompts": self.config.prompts,
            "seeds": self.config.seeds,
            "layout": self.layout(),
            "sites": per_site,
        }

    def plot(self, out: str | Path) -> list[Path]:
        """The figures of `ditlens find` in `out`: top_vs_median.png, channel_atlas.png,
        surface.png (where a surface was kept) and images.png (where images were kept)."""
        from .reporting.plots import image_grid, plot_channel_atlas, plot_magnitude_surface, plot_top_vs_median

        out, statistic = Path(out), self.config.statistic
        paths = [
            plot_top_vs_median(self.samples, out / "top_vs_median.png", statistic),
            plot_channel_atlas(self.samples, out / "channel_atlas.png", statistic),
        ]
        if self.surface is not None:
            title = f"|x| at {self.stats.meta['surface_site']}, step {self.config.surface_step}"
            paths.append(plot_magnitude_surface(self.surface, out / "surface.png", title))
        if self.images:
            paths.append(image_grid(self.images, out / "images.png", columns=len(self.config.prompts), scale=4))
        return paths

    def layout(self) -> dict[str, Any]:
        """What the recording holds and what the summary measured: the recorded rows of a
        step (run, call, role, prompt each) and the sample rows the summary reads."""
        from .core.rows import RowLayout

        rows = RowLayout.of(self.stats.meta, len(self.config.prompts))
        return self.stats.meta | {
            "row_labels": rows.labels(),
            "summary_rows": rows.sample_rows(),
            "summary_reads": "each sample's conditional row (samples = seeds x prompts, seed-major)",
        }

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """stats.safetensors, channels.json and image_NNN.png, written whole or not at all."""
        out = Path(out_dir)
        names = {"stats": "stats.safetensors", "channels": "channels.json"}
        names |= {f"image_{i}": f"image_{i:03d}.png" for i in range(len(self.images))}
        with output_folder(out) as tmp:
            self.stats.save(tmp / names["stats"])
            (tmp / names["channels"]).write_text(json.dumps(self.summary(), indent=1))
            for i, image in enumerate(self.images):
                image.save(tmp / names[f"image_{i}"])
        return {key: out / name for key, name in names.items()}


def _jaccard(masks: torch.Tensor, present: torch.Tensor) -> float | None:
    """(M, ..., D) bool masks of M items, (M, ...) which are present -> the mean over cells
    of each cell's mean pairwise Jaccard, over the pairs of present items only (cells with
    fewer than two present items left out). None where no cell has two (one prompt, one
    seed or one step): there is nothing to compare, which is not perfect agreement."""
    M = masks.shape[0]
    total = torch.zeros(masks.shape[1:-1])
    pairs = torch.zeros(masks.shape[1:-1])
    for i in range(M):
        for j in range(i + 1, M):
            both = present[i] & present[j]
            total += torch.where(both, jaccard(masks[i], masks[j]), 0.0)
            pairs += both
    cells = pairs > 0
    if not bool(cells.any()):
        return None
    return round(float((total[cells] / pairs[cells]).mean()), 4)


def find_channels(pipe: Any, config: FindConfig, *, prompt_kwargs: dict[str, Any] | None = None) -> FindResult:
    """Run `pipe` for every seed over `config.prompts`, recording channel statistics.

    prompt_kwargs: replaces `prompt=` (e.g. precomputed `prompt_embeds` for pipelines whose
    text encoders are not loaded)."""
    from .adapters import adapter_for

    adapter = adapter_for(pipe)
    site_names = [s.name for s in adapter.sites()]
    config.validate(adapter.hidden_size, site_names)
    surface_site = config.surface_site or site_names[len(site_names) // 2]
    record = RecordConfig(keep_hidden=(surface_site,), keep_hidden_steps=(config.surface_step,))
    images: list[Any] = []
    with hooks(pipe, record=record) as run:
        for seed in config.seeds:
            generator = torch.Generator().manual_seed(seed)
            call = dict(prompt_kwargs) if prompt_kwargs else {"prompt": config.prompts}
            output = pipe(
                **call,
                **config.generation.kwargs(pipe, len(config.prompts), call),
                generator=generator,
                output_type="pil",
            )
            images.extend(output.images)
    stats = run.stats
    from .core.checks import HINT, NonFiniteError

    table = stats.img["abs_mean"]  # NaN where a site did not run in a call (stats.ran): absent, not an error
    ran = stats.ran.get("img", torch.ones(table.shape[:-1], dtype=torch.bool))
    ok = torch.isfinite(table) | ~ran.unsqueeze(-1)
    bad = ~ok.all(dim=-1).all(dim=-1)  # (steps, sites); checked once, no per-step sync
    if bool(bad.any()):
        step, site = (int(i) for i in bad.nonzero()[0])
        raise NonFiniteError(
            f"The image stream holds NaN or infinite values at site {stats.sites[site]}, step {step}. {HINT}"
        )
    if config.surface_step >= stats.num_steps:
        raise ValueError(f"Step {config.surface_step} is outside the schedule: 0..{stats.num_steps - 1}.")
    stats.meta |= {"prompts": config.prompts, "seeds": config.seeds, "surface_site": surface_site}
    return FindResult(stats=stats, config=config, images=images)
