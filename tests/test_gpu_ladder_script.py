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
