"""Plots that take result objects. Matplotlib with the Agg backend: files, never windows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..choices import DEFAULT_STATISTIC  # noqa: E402
from ..core.record import ChannelStats  # noqa: E402
from ..io.outputs import write_atomic  # noqa: E402
from ..segment import SegmentResult  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _short(site: str) -> str:
    """transformer_blocks.3 -> T3, single_transformer_blocks.10 -> S10 (axis labels)."""
    name, index = site.rsplit(".", 1)
    return ("S" if name.startswith("single") else "T" if name == "transformer_blocks" else name[:1].upper()) + index


def plot_top_vs_median(
    stats: ChannelStats, path: str | Path, statistic: str = DEFAULT_STATISTIC, stream: str = "img"
) -> Path:
    """Per site: the top-1/2/3 channel statistic and the median channel (log scale), mean over
    steps and rows, with the spread over rows shaded."""
    sites = stats.sites if stream == "img" else stats.txt_sites
    top = stats.top_values(3, statistic, stream)  # (steps, sites, rows, 3)
    median = stats.median(statistic, stream)  # (steps, sites, rows)
    x = np.arange(len(sites))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(sites) + 2), 3.6))
    for i, colour in enumerate(("#c0392b", "#e67e22", "#f1c40f")):
        per_row = top[..., i].mean(0)  # (sites, rows)
        ax.plot(x, per_row.mean(-1), "o-", color=colour, ms=3, label=f"top-{i + 1}")
        ax.fill_between(x, per_row.amin(-1), per_row.amax(-1), color=colour, alpha=0.15, lw=0)
    med = median.mean(0)
    ax.plot(x, med.mean(-1), "s--", color="#34495e", ms=3, label="median channel")
    ax.set_yscale("log")
    ax.set_xticks(x, [_short(s) for s in sites], rotation=90, fontsize=7)
    ax.set_xlabel("site (T = double-stream block, S = single-stream block)")
    ax.set_ylabel(f"{statistic} ({stream} stream)")
    ax.set_title(f"{stats.meta.get('transformer_class', 'model')}: top channels vs median")
    ax.legend(fontsize=8, ncol=4)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_magnitude_surface(
    hidden: torch.Tensor, path: str | Path, title: str = "", marked: list[int] | None = None
) -> Path:
    """Token x channel surface of |x| for one site and step: massive channels stand as walls.
    `marked` channels (e.g. the top-k there) get a red dot and their number at their peak."""
    z = hidden.abs().float().numpy()  # (N, D)
    N, D = z.shape
    tokens, channels = np.meshgrid(np.arange(N), np.arange(D), indexing="ij")
    fig = plt.figure(figsize=(7, 4.5))
    # drawn in the order given (not by depth) when channels are marked, so the marks stay in front of the walls
    ax = fig.add_subplot(projection="3d", computed_zorder=not marked)
    ax.plot_surface(
        channels, tokens, z, cmap="viridis", linewidth=0, antialiased=False, rstride=max(1, N // 128), cstride=1
    )
    top = float(z.max()) * 1.12
    for channel in marked or []:
        token = int(z[:, channel].argmax())  # a stem from the channel's peak up to its label
        ax.plot([channel, channel], [token, token], [z[token, channel], top], color="#d62728", lw=1.2)
        ax.text(channel, token, top, f"ch {channel}", color="#d62728", fontsize=8, ha="center", va="bottom")
    ax.set_xlabel("channel")
    ax.set_ylabel("image token")
    ax.set_zlabel("|x|")
    ax.set_title(title or "|x| over tokens and channels")
    ax.view_init(elev=25, azim=-60)
    return _save(fig, path)


def plot_channel_atlas(
    stats: ChannelStats, path: str | Path, statistic: str = DEFAULT_STATISTIC, max_channels: int = 8
) -> Path:
    """Site x step map of the top-1 channel (most frequent over rows); one colour per channel."""
    top1 = stats.top_k(1, statistic)[..., 0]  # (steps, sites, rows)
    steps, n_sites, _ = top1.shape
    mode = torch.tensor(
        [[Counter(top1[t, s].tolist()).most_common(1)[0][0] for t in range(steps)] for s in range(n_sites)]
    )
    ranked = [c for c, _ in Counter(mode.flatten().tolist()).most_common()]
    shown = ranked[:max_channels]
    codes = torch.full_like(mode, len(shown))  # the last code = "other"
    for i, c in enumerate(shown):
        codes[mode == c] = i
    cmap = plt.get_cmap("tab10", len(shown) + 1)
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * steps + 3), max(3, 0.22 * n_sites + 1)))
    ax.imshow(codes.numpy(), cmap=cmap, vmin=-0.5, vmax=len(shown) + 0.5, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(n_sites), [_short(s) for s in stats.sites], fontsize=7)
    ax.set_xlabel("denoising step")
    ax.set_ylabel("site")
    ax.set_title("channel atlas: top-1 channel per site and step")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(shown) + (len(ranked) > len(shown)))]
    labels = [f"ch {c}" for c in shown] + (["other"] if len(ranked) > len(shown) else [])
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


def image_grid(images: list, path: str | Path, columns: int, scale: int = 1, labels: list[str] | None = None) -> Path:
    """Tile PIL images into one PNG (nearest-neighbour upscaling for small images)."""
    from PIL import Image

    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w * scale, rows * h * scale), "white")
    for i, image in enumerate(images):
        tile = image.convert("RGB").resize((w * scale, h * scale), Image.Resampling.NEAREST)
        grid.paste(tile, ((i % columns) * w * scale, (i // columns) * h * scale))
    return write_atomic(path, lambda tmp: grid.save(tmp, format="PNG"))


def _as_array(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) for imshow."""
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).numpy()


def plot_image_table(
    cells: list[list[torch.Tensor | None]],
    path: str | Path,
    row_labels: list[str],
    column_labels: list[str],
    title: str = "",
    cell_inches: float = 1.3,
) -> Path:
    """A labelled grid of (3, H, W) images in [0, 1]; None leaves a cell empty."""
    n_rows, n_cols = len(cells), max(len(r) for r in cells)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(cell_inches * n_cols + 1, cell_inches * n_rows + 0.6), squeeze=False
    )
    for r, row in enumerate(cells):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = row[c] if c < len(row) else None
            if image is None:
                ax.axis("off")
            else:
                ax.imshow(_as_array(image), interpolation="nearest")
            if r == 0:
                ax.set_title(column_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


MASK_STYLES = {
    "top": ("#c0392b", "o-"),
    "bottom": ("#2980b9", "s--"),
    "random": ("#7f8c8d", "^--"),
    "all": ("#27ae60", "d:"),
    "attention": ("#8e44ad", "x-."),
}


def plot_miou_curves(
    table: dict[str, torch.Tensor],
    sites: list[str],
    path: str | Path,
    title: str = "",
    oracle: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Per-site mIoU (mean over steps) for each rule: the segmentation finding at a glance.
    oracle: the same curves for the better labelling of each image, drawn thin and dotted
    beside their rule (an upper bound: a gap is a labelling error, not a bad split)."""
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(sites) + 2), 3.4))
    x = np.arange(len(sites))

    def curve(values: torch.Tensor) -> np.ndarray:
        return values.mean(0).numpy() if values.dim() == 2 else values.numpy()

    for rule, values in table.items():
        colour, style = MASK_STYLES.get(rule, ("black", "-"))
        ax.plot(x, curve(values), style, color=colour, ms=3, label=rule)
        if oracle is not None and rule in oracle:
            ax.plot(x, curve(oracle[rule]), ":", color=colour, lw=1, alpha=0.8)
    if oracle is not None:
        ax.plot([], [], ":", color="black", lw=1, label="oracle labelling (upper bound)")
    ax.set_xticks(x, [_short(s) for s in sites], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mIoU (fg/bg)")
    ax.set_xlabel("site")
    ax.set_title(title or "K = 2 masks against ground truth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    return _save(fig, path)


def plot_segment_overlays(
    result: SegmentResult,
    path: str | Path,
    site: str,
    step: int,
    truth: torch.Tensor | None = None,
    max_rows: int = 8,
    rules: list[str] | None = None,
) -> Path:
    """Per image: the image, the ground truth (if any), the top-1 massive channel over the
    token grid as a heat map with its colour bar, and each rule's K = 2 mask as an outline
    (black and white, so it shows on an object of any colour) with the background dimmed."""
    if result.images is None:
        raise ValueError("This segment result holds no images (merged from parts without them): nothing to overlay.")
    rules = rules or list(result.masks)
    n = min(max_rows, len(result.images))
    heat = result.heat_map(step, site) if result.heat is not None else None
    columns = (
        ["image"] + (["truth"] if truth is not None else []) + (["top-1 channel"] if heat is not None else []) + rules
    )
    fig, axes = plt.subplots(n, len(columns), figsize=(1.45 * len(columns) + 1, 1.45 * n + 0.7), squeeze=False)
    for i in range(n):
        image = result.images[i]
        panels: list[tuple[str, Any]] = [("image", None)]
        if truth is not None:
            panels.append(("mask", truth[i]))
        if heat is not None:
            panels.append(("heat", heat[i]))
        panels += [("mask", result.pixel_masks(rule, step, site)[i]) for rule in rules]
        for c, (kind, value) in enumerate(panels):
            ax = axes[i][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "heat":
                shown = ax.imshow(value.float().numpy(), cmap="magma", interpolation="nearest")
                bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
                bar.ax.tick_params(labelsize=5)
            elif kind == "mask":
                _outlined(ax, image, value)
            else:
                ax.imshow(_as_array(image), interpolation="nearest")
            if i == 0:
                ax.set_title(columns[c], fontsize=8)
        axes[i][0].set_ylabel(f"#{i}", fontsize=8)
    fig.suptitle(f"K = 2 masks ({result.foreground} names the subject) at {site}, step {step}", fontsize=9)
    return _save(fig, path)


def _outlined(ax: plt.Axes, image: torch.Tensor, mask: torch.Tensor) -> None:
    """The image with the mask's outside dimmed and its edge drawn twice (black under white)."""
    m = mask.bool()
    shown = image.clone()
    shown[:, ~m] *= 0.35
    ax.imshow(_as_array(shown), interpolation="nearest")
    if m.any() and not m.all():
        edge = m.float().numpy()
        ax.contour(edge, levels=[0.5], colors="black", linewidths=2.2)
        ax.contour(edge, levels=[0.5], colors="white", linewidths=0.9)


def plot_metric_over_k(
    curves: dict[str, tuple[list[int], list[float], list[float] | None]], path: str | Path, ylabel: str, title: str = ""
) -> Path:
    """rule -> (ks, means, spreads or None): a metric as a function of k, one line per rule."""
    styles = {"top": ("#c0392b", "o-"), "bottom": ("#2980b9", "s--"), "random": ("#7f8c8d", "^--")}
    return _line_plot(
        curves,
        path,
        "k (channels edited)",
        ylabel,
        title,
        lambda i, rule: styles.get(rule, ("black", "-")),
        log2_x=True,
        legend_size=8,
    )


def plot_metric_over_alpha(
    curves: dict[str, tuple[list[float], list[float], list[float] | None]],
    path: str | Path,
    ylabel: str,
    title: str = "",
    reference: tuple[str, float] | None = None,
) -> Path:
    """method -> (alphas, means, spreads or None): a score over transport strength, one line per
    method; reference: (label, value) drawn as a dashed line (e.g. the target alone)."""
    styles = ["o-", "^--", "s-.", "d:", "x-"]
    return _line_plot(
        curves,
        path,
        "alpha (strength)",
        ylabel,
        title,
        lambda i, method: (None, styles[i % len(styles)]),
        reference=reference,
        legend_size=7,
    )


def _line_plot(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    style: Callable[[int, str], tuple[str | None, str]],
    *,
    log2_x: bool = False,
    reference: tuple[str, float] | None = None,
    legend_size: int = 8,
) -> Path:
    """One line per curve (name -> (xs, means, spreads or None)), its spread shaded; style(i,
    name) -> (colour or None for matplotlib's next, line style)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, (name, (xs, means, spreads)) in enumerate(curves.items()):
        colour, line_style = style(i, name)
        (line,) = ax.plot(xs, means, line_style, color=colour, label=name)
        if spreads is not None:
            ax.fill_between(
                xs,
                [m - s for m, s in zip(means, spreads)],
                [m + s for m, s in zip(means, spreads)],
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )
    if reference is not None:
        ax.axhline(reference[1], color="black", ls="--", lw=1, label=reference[0])
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    return _save(fig, path)


def plot_loss_curves(
    panels: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[bool]]]], path: str | Path
) -> Path:
    """Training losses on log-log axes, one panel per group (e.g. a world): name -> (steps,
    losses, at the constant peak rate?). The constant-rate part is solid, warm-up and decay
    dotted: a power law is a straight solid line, a plateau a solid line that levels off."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        for name, (steps, losses, constant) in curves.items():
            (line,) = ax.plot(steps, losses, ":", lw=1)
            kept = [(s, v) for s, v, c in zip(steps, losses, constant) if c]
            if kept:
                ax.plot(*zip(*kept), "-", color=line.get_color(), lw=1.6, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (mean of the logged steps)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
