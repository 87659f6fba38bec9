"""bench/gpu_ladder.sh, the GPU machine's ladder driver: it parses, and refuses a verb it does not know."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_ladder.sh"


def test_it_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_an_unknown_verb_prints_the_usage(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), "tarin", "v1-m"],
        capture_output=True,
        text=True,
        env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "usage: bash bench/gpu_ladder.sh train RUNG" in done.stderr


def test_a_resumed_run_refuses_trial_flags(tmp_path):
    """Extra flags set a fresh run's settings; a run with a checkpoint resumes with its own."""
    root = tmp_path / "repo"
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "gpu_ladder.sh").write_text(SCRIPT.read_text())
    (root / "runs" / "v2-s").mkdir(parents=True)
    (root / "runs" / "v2-s" / "checkpoint.pt").write_bytes(b"")
    done = subprocess.run(
        ["bash", str(root / "bench" / "gpu_ladder.sh"), "train", "v2-s", "1500", "5000", "--lr", "6e-4"],
        capture_output=True,
        text=True,
        env={"OUT": str(tmp_path / "out"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "resumes with its own settings" in done.stderr and "--lr 6e-4" in done.stderr
