"""docs/ladder.md's loss-curve table is what scripts/loss_curves.py reads from the committed logs."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("loss_curves", ROOT / "scripts" / "loss_curves.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_docs_table_is_the_logs():
    assert _script().main(["--check"]) == 0


def test_every_committed_run_has_a_row_and_the_v2_l_row_by_hand():
    """One row per train.log with its config (the ladder's rungs and the v2-l trials); v2-l's
    row read here from its files: rate, steps, and the loss of its last peak-rate line."""
    script = _script()
    names = [script._name(run) for run in script.runs()]
    assert {"v2-l", "v2-s", "v2-l-trials/lr2e-4-steps12000"} <= set(names)
    rows = script.table().splitlines()[2:]
    assert len(rows) == len(names)
    run = script.LADDER / "v2-l"
    config = json.loads((run / "train_config.json").read_text())
    log = (run / "train.log").read_text()
    row = next(r for r in rows if r.startswith("| [v2-l]")).split(" | ")
    peak = [line for line in re.findall(r"^step +(\d+) +loss ([\d.]+) +lr ([\d.e+-]+)", log, re.M)]
    last_peak = [(int(s), loss) for s, loss, lr in peak if float(lr) == config["lr"]][-1]
    assert float(row[3]) == config["lr"]
    assert row[5] == f"{last_peak[1]} at {last_peak[0]:,}"


def test_the_plot_has_a_panel_per_world(tmp_path):
    from PIL import Image

    path = _script().plot(tmp_path / "curves.png")
    width, height = Image.open(path).size
    assert width > 1.5 * height  # two panels side by side: worlds v1 and v2
