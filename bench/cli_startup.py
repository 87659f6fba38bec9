"""How long the command line takes to answer before any model loads, against `python -c pass`.

    .venv/bin/python bench/cli_startup.py [--repeats 5]

Prints the median wall time of `ditlens --help`, `ditlens find --help` and two bad inputs
(`find --k 0`, `generate --steps 0`), each as seconds and as a ratio to an empty Python
start. The target: each under 1 s; `import ditlens.cli` loads neither torch nor diffusers
(tests/test_cli_startup.py checks that)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "ditlens --help": [sys.executable, "-m", "ditlens.cli", "--help"],
    "ditlens find --help": [sys.executable, "-m", "ditlens.cli", "find", "--help"],
    "ditlens find --k 0": [sys.executable, "-m", "ditlens.cli", "find", "--k", "0"],
    "ditlens generate --steps 0": [sys.executable, "-m", "ditlens.cli", "generate", "--steps", "0"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    medians = {}
    for name, command in COMMANDS.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True)
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    base = medians["python -c pass"]
    for name, seconds in medians.items():
        verdict = "" if name == "python -c pass" else ("  under 1 s" if seconds < 1 else "  OVER 1 s")
        print(f"{name:30s} {seconds:6.3f} s  x{seconds / base:6.1f} python -c pass{verdict}")


if __name__ == "__main__":
    main()
