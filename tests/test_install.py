"""ditlens installs beside a torch the user already has: its dependencies are ranges, and
`pip install -e .` without the project's constraints keeps the venv's torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
TESTED = {"torch": ["2.11.0", "2.13.0"], "diffusers": ["0.42.1"], "transformers": ["5.24.0"], "accelerate": ["1.15.0"]}


def test_dependencies_are_ranges_that_admit_the_tested_versions():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {r.name: r for r in map(Requirement, dependencies)}
    assert {"torch", "diffusers", "transformers", "accelerate"} <= set(reqs)
    for name, req in reqs.items():
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), f"{name} is pinned exactly: {req}"
    for name, versions in TESTED.items():
        for version in versions:
            assert reqs[name].specifier.contains(version), (
                f"{name} {version} (tested) is outside {reqs[name].specifier}"
            )
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name, version in pins.items():  # what CI installs lies inside the library's ranges
        assert reqs[name].specifier.contains(version), (
            f"constraints.txt {name}=={version} is outside {reqs[name].specifier}"
        )


@pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the source checkout")
def test_editable_install_without_the_constraints_keeps_the_installed_torch(tmp_path):
    import torch

    before = torch.__version__
    (tmp_path / "keep.txt").write_text(f"torch=={before}\n")  # a user's constraint: this torch, whatever else
    report = tmp_path / "report.json"
    pip = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "-q", "-c", str(tmp_path / "keep.txt")]
    done = subprocess.run([*pip, "--dry-run", "--report", str(report), "-e", str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    would = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert would == {"ditlens"}, (
        f"installing ditlens beside torch {before} would also install {sorted(would - {'ditlens'})}"
    )
    done = subprocess.run([*pip, "-e", str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    after = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    assert after.stdout.strip() == before
