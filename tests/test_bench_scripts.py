"""The CPU benchmark scripts under bench/ run from a fresh clone and print their results.

Timings are not checked (tests check behaviour); what is checked is that each script still
runs against the current API, exits 0 and prints the lines its doc promises: a script that
silently broke would leave docs/performance.md citing a command nobody can rerun.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPTS = {  # script and arguments -> what its output must contain
    ("recording_overhead.py", "--quick"): ["RESULT recording overhead", "RESULT recording work alone"],
    ("stats_memory.py", "--quick"): ["RESULT default RecordConfig", "independent of the token count"],
    ("mask_cost.py", "--quick"): ["RESULT K=2 mask"],
    # the tiny random FluxPipeline: the built-in one took 91 s of the suite for the same code path
    ("transport_cost.py", "--quick", "--pipeline", "tiny-flux"): [
        "RESULT transport (defaults: mask",
        "RESULT transport (mask 'source', image stream)",
        "RESULT transport (every token",
    ],
    ("transport_parts.py", "--quick"): ["RESULT + hooks, nothing done", "RESULT transport_text (a new edit per call)"],
    ("nnsight_compare.py", "--quick"): ["RESULT naive hooks / ditlens"],
    ("inversion.py", "--quick"): ["MSE from the inverted start"],
}


@pytest.mark.parametrize("script", list(SCRIPTS), ids=[s[0] for s in SCRIPTS])
def test_bench_script_runs_and_prints_its_results(script):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script[0]), *script[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for expected in SCRIPTS[script]:
        assert expected in done.stdout, done.stdout[-3000:]
    assert "command: " in done.stdout and "machine: " in done.stdout
