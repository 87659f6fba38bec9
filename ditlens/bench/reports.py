"""What every bench report shares: its first line (the command, seeds, commit, device, torch
and the run's duration, so that a report says how to make it again), the model's name, and
the section that lists what the run could not measure and why."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from ..reporting.report import Section, commit


def provenance(command: str, seeds: str, started: float) -> str:
    """`Command: ... · SEEDS · commit ... · device · torch ... · machine · N s`; seeds worded by
    the caller ("seed 1234", "seeds [0, 1]"), started: `time.perf_counter()` at the run's start.
    scripts/readme_findings.py reads the command and the commit back from this line."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    return (
        f"Command: `{command}` · {seeds} · commit {commit()} · {device} · torch {torch.__version__} · "
        f"{platform.machine()} · {time.perf_counter() - started:.0f} s"
    )


def model_name(pipe: Any) -> str:
    """The folder or hub id the pipeline was loaded from, else its class name."""
    return getattr(getattr(pipe, "config", None), "_name_or_path", None) or type(pipe).__name__


def report_folder(out_dir: str | Path) -> Path:
    """The folder a bench writes its report, JSON and figures into, made where missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def not_measured_section(not_measured: list[str], always: bool = False) -> list[Section]:
    """The "Not measured" section, as a list to append: empty where everything was measured,
    unless `always` (then it says so)."""
    if not not_measured and not always:
        return []
    text = "; ".join(not_measured) + "." if not_measured else "Everything above was measured."
    return [Section("Not measured", text, [], None)]
