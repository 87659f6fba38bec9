"""The merged sweep's figure, summary.png: one panel per command, its headline number against
its main setting (find: top channel / median per site; disrupt: PSNR to the unedited image
over k per rule; segment: best-site mIoU per rule; transport: PSNR to the target alone over alpha)."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from .jobs import COMMANDS
from .plan import Item
from .runner import mean
from .store import write_durable


def setting_label(command: str, settings: dict[str, Any]) -> str:
    """A job setting in a few words: 'k=4 statistic=abs_mean' (the transport target left out: it is long)."""
    parts = [
        f"{k}={'-'.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in settings.items()
        if k != "draw" and v is not None and not (command == "transport" and k == "target")
    ]
    return " ".join(parts)


def plot_summary(groups: list[dict[str, Any]], items_dir: Path, finished: list[Item], path: Path) -> None:
    """One panel per command of `groups` (merge.by_setting); `finished`: the items with results in `items_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    commands = [c for c in COMMANDS if any(e["command"] == c for e in groups)]
    fig, axes = plt.subplots(1, len(commands), figsize=(4.2 * len(commands), 3.4), squeeze=False)
    for ax, command in zip(axes[0], commands):
        entries = [e for e in groups if e["command"] == command]
        if command == "find":
            _find_panel(ax, entries, items_dir, finished)
        elif command == "disrupt":
            _disrupt_panel(ax, entries)
        elif command == "segment":
            _segment_panel(ax, entries)
        else:
            _transport_panel(ax, entries)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_durable(path, buffer.getvalue())


def _find_panel(ax: Any, entries: list[dict[str, Any]], items_dir: Path, finished: list[Item]) -> None:
    """The ratio of the top channel to the median channel, per site, one line per setting."""
    for e in entries:
        per_site = defaultdict(list)
        for item in finished:
            if item.command == "find" and item.settings == e["settings"]:
                summary = json.loads((items_dir / item.id / "channels.json").read_text())
                for s, info in enumerate(summary["sites"].values()):
                    per_site[s].append(info["ratio_to_median"][0])
        sites = sorted(per_site)
        ax.plot(sites, [mean(per_site[s]) for s in sites], marker="o", label=setting_label("find", e["settings"]))
    ax.set(xlabel="site (forward order)", ylabel="top channel / median", yscale="log", title="find: massive channels")


def _disrupt_panel(ax: Any, entries: list[dict[str, Any]]) -> None:
    """PSNR to the unedited image against k, one line per rule (and factor)."""
    lines = defaultdict(list)
    for e in entries:
        s = e["settings"]
        if s["rule"] != "none" and "psnr_to_unedited" in e:
            label = s["rule"] + (f" x{s['factor']:g}" if s["factor"] else "")
            lines[label].append((s["k"], e["psnr_to_unedited"]["mean"]))
    _lines(ax, lines)
    ax.set(xlabel="k (channels edited)", ylabel="PSNR to unedited (dB)", xscale="log", title="disrupt")


def _segment_panel(ax: Any, entries: list[dict[str, Any]]) -> None:
    """Best-site mIoU per rule (without ground truth: the foreground share), one bar group per setting."""
    key = "miou_best_" if any(k.startswith("miou_best_") for e in entries for k in e) else "foreground_"
    for n, e in enumerate(entries):
        names = [f"{key}{rule}" for rule in ("top", "bottom", "random", "all") if f"{key}{rule}" in e]
        ax.bar(
            [x + 0.8 * n / len(entries) for x in range(len(names))],
            [e[k]["mean"] for k in names],
            width=0.8 / len(entries),
            label=setting_label("segment", e["settings"]),
        )
        ax.set_xticks(range(len(names)), [k.removeprefix(key) for k in names])
    ax.set(ylabel="best-site mIoU" if key == "miou_best_" else "foreground share", title="segment")


def _transport_panel(ax: Any, entries: list[dict[str, Any]]) -> None:
    """PSNR to the target alone against alpha, one line per k and mask."""
    lines = defaultdict(list)
    for e in entries:
        s = e["settings"]
        if "psnr_to_target_alone" in e:
            lines[f"k={s['k']} mask={s['mask']}"].append((s["alpha"], e["psnr_to_target_alone"]["mean"]))
    _lines(ax, lines)
    ax.set(xlabel="alpha", ylabel="PSNR to target alone (dB)", title="transport")


def _lines(ax: Any, lines: dict[str, list[tuple[float, float]]]) -> None:
    for label, points in lines.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
