"""The loss curves of every committed training run of the model ladder, and how far each was
from its plateau, read from the logs alone.

    python scripts/loss_curves.py            # print the table (markdown)
    python scripts/loss_curves.py --write    # write it into docs/ladder.md, and the plot
    python scripts/loss_curves.py --check    # exit 1 if docs/ladder.md does not hold it

A run is a folder under docs/results/ladder/ with a train.log and its train_config.json
(`python -m ditlens.builtin.train`); the trials of one rung (other peak rates or schedules) sit
under RUNG-trials/. The plot (docs/results/ladder/loss_curves.png) has one panel per world on
log-log axes. The readings are those of `ditlens.builtin.train_log`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ditlens.builtin.train_log import (
    PLATEAU_PER_DOUBLING,
    Change,
    at_plateau,
    constant_rate,
    doubling_change,
    finished,
    logged_losses,
    window_change,
)
from ditlens.reporting.generated import sync_block
from ditlens.reporting.plots import plot_loss_curves

ROOT = Path(__file__).resolve().parent.parent
LADDER = ROOT / "docs" / "results" / "ladder"
DOC = ROOT / "docs" / "ladder.md"
PLOT = LADDER / "loss_curves.png"
BEGIN, END = "<!-- loss-curves: scripts/loss_curves.py writes what follows -->", "<!-- /loss-curves -->"


def runs() -> list[Path]:
    """Every folder under docs/results/ladder/ holding a training run, in name order."""
    return sorted(log.parent for log in LADDER.rglob("train.log") if (log.parent / "train_config.json").is_file())


def _name(run: Path) -> str:
    return str(run.relative_to(LADDER))


def _config(run: Path) -> dict:
    return json.loads((run / "train_config.json").read_text())


def _change(change: Change | None) -> str:
    if change is None:
        return "not enough steps"
    return f"{change.relative:+.1%} ({change.first_step:,} to {change.last_step:,})"


def table() -> str:
    rows = []
    for run in runs():
        config = _config(run)
        log = (run / "train.log").read_text()
        losses = logged_losses(log)
        flat = constant_rate(losses, config["warmup_steps"])
        done = finished(log)
        doubling = doubling_change(losses, config["warmup_steps"])
        rows.append(
            [
                f"[{_name(run)}](results/ladder/{_name(run)}/train.log)",
                config["world"],
                f"{config['hidden_size']} / {config['num_double_blocks']} + {config['num_single_blocks']}",
                f"{config['lr']:.0e}".replace("e-0", "e-"),
                f"{done[0]:,} of {config['steps']:,}" if done else f"{losses[-1].step:,} (not finished)",
                f"{flat[-1].loss:.4f} at {flat[-1].step:,}" if flat else "none",
                _change(window_change(losses, config["warmup_steps"])),
                _change(doubling),
                "not enough steps" if doubling is None else ("yes" if at_plateau(doubling) else "no"),
                f"{losses[-1].loss:.4f}",
            ]
        )
    header = [
        "run",
        "world",
        "width / blocks",
        "peak rate",
        "steps (of the schedule)",
        "loss at the end of the constant rate",
        "change, last 1,000 constant-rate steps",
        "change per doubling of steps",
        f"at its plateau (within {PLATEAU_PER_DOUBLING:.0%} per doubling)",
        "last loss",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plot(path: Path = PLOT) -> Path:
    panels: dict[str, dict] = {}
    for run in runs():
        config = _config(run)
        losses = logged_losses((run / "train.log").read_text())
        flat = {line.step for line in constant_rate(losses, config["warmup_steps"])}
        label = f"{_name(run)} (rate {config['lr']:.0e})".replace("e-0", "e-")
        panels.setdefault(f"world {config['world']}", {})[label] = (
            [line.step for line in losses],
            [line.loss for line in losses],
            [line.step in flat for line in losses],
        )
    return plot_loss_curves(dict(sorted(panels.items())), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write the table into docs/ladder.md and {PLOT.name}")
    mode.add_argument("--check", action="store_true", help="exit 1 unless docs/ladder.md holds the table")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(table())
        return 0
    if not sync_block(DOC, BEGIN, END, table(), write=args.write, fix="python scripts/loss_curves.py --write"):
        return 1
    if args.write:
        print(f"wrote {DOC.relative_to(ROOT)} and {plot().relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
