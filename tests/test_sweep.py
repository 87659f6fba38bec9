"""Sweeps: config parsing, items, and the acceptance test: two torchrun processes (gloo, CPU)
on the built-in model, one killed with SIGKILL mid-run, a rerun that finishes only the
missing items, and every item identical to a clean single-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

import ditlens
from ditlens.cli import main
from ditlens.sweep import load_config, plan, read_result

BUILTIN_WEIGHTS = Path(ditlens.__file__).parent / "builtin" / "weights" / "model"
needs_builtin = pytest.mark.skipif(
    not (BUILTIN_WEIGHTS / "model_index.json").is_file(), reason="the built-in model's weights are not shipped yet"
)

CONFIG = """
seeds = [0, 1]

[model]
name = "builtin"

[prompts]
list = ["a large red circle in the center on a gray background"]

[generation]
steps = 2  # few and small: the test is about sharding and resume, not image quality

[[jobs]]
command = "find"
k = 2

[[jobs]]
command = "disrupt"
rule = "top"
k = 2

[[jobs]]
command = "segment"
k = 2

[[jobs]]
command = "transport"
target = "a large blue square in the center on a gray background"
k = 2
"""


def write_config(folder: Path, text: str = CONFIG, name: str = "sweep.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ---- config and items (no model) -----------------------------------------------------------


def test_items_are_prompt_x_seed_x_setting_with_stable_ids(tmp_path):
    config = load_config(write_config(tmp_path))
    items = plan(config)
    # per prompt and seed: find, disrupt baseline + top-2, segment, transport
    assert len(items) == 1 * 2 * 5
    assert [i.index for i in items] == list(range(len(items)))
    assert len({i.id for i in items}) == len(items)
    assert plan(load_config(write_config(tmp_path))) == items  # same config, same ids
    # defaults written out give the same items; a changed setting gives new ones
    explicit = CONFIG.replace('command = "find"\nk = 2', 'command = "find"\nk = 2\nstatistic = "abs_mean"')
    assert [i.id for i in plan(load_config(write_config(tmp_path, explicit, "b.toml")))] == [i.id for i in items]
    changed = CONFIG.replace("steps = 2", "steps = 3")
    assert not {i.id for i in plan(load_config(write_config(tmp_path, changed, "c.toml")))} & {i.id for i in items}


def test_lists_sweep_and_random_draws_expand(tmp_path):
    text = """
seeds = {from = 3, count = 2}
prompts = ["a large red circle in the center on a gray background"]
[[jobs]]
command = "disrupt"
rule = ["top", "random"]
k = [0, 1, 4]
draws = 3
sites = [["transformer_blocks.0"], ["transformer_blocks.0", "transformer_blocks.1"]]
"""
    config = load_config(write_config(tmp_path, text))
    assert config.seeds == [3, 4]
    settings = {json.dumps(i.settings, sort_keys=True) for i in plan(config)}
    # baseline (k = 0 folds into it) + sites(2) x [top x k(2) + random x k(2) x draws(3)]
    assert len(settings) == 1 + 2 * (2 + 2 * 3)


def test_yaml_config_equals_toml(tmp_path):
    pytest.importorskip("yaml")
    yaml_text = """
seeds: [0, 1]
model: {name: builtin}
prompts:
  list:
    - a large red circle in the center on a gray background
generation: {steps: 2}
jobs:
  - {command: find, k: 2}
  - {command: disrupt, rule: top, k: 2}
  - {command: segment, k: 2}
  - {command: transport, target: a large blue square in the center on a gray background, k: 2}
"""
    toml_items = plan(load_config(write_config(tmp_path)))
    yaml_items = plan(load_config(write_config(tmp_path, yaml_text, "sweep.yaml")))
    assert [i.id for i in yaml_items] == [i.id for i in toml_items]


# ---- the acceptance test: kill -9 and resume ----------------------------------------------------


def run_env(token: str) -> dict[str, str]:
    # One intra-op thread everywhere (torchrun sets it for its workers too): CPU results are
    # bitwise reproducible for a fixed thread count, and the machine's 2 cores stay shared.
    return os.environ | {"OMP_NUM_THREADS": "1", "DITLENS_TEST_TOKEN": token, "PYTHONPATH": str(Path(__file__).parents[1])}


def torchrun(config: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "ditlens.cli", "sweep", str(config), "--out", str(out), "--quiet"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def worker_pid(token: str, rank: int) -> int | None:
    """The torchrun worker of this test with this RANK (found through /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DITLENS_TEST_TOKEN={token}".encode() in environ and f"RANK={rank}".encode() in environ:
            cmdline = (entry / "cmdline").read_bytes()
            if b"ditlens.cli" in cmdline and b"torch.distributed.run" not in cmdline:
                return int(entry.name)
    return None


def item_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_same_item(a: Path, b: Path) -> None:
    fa, fb = item_files(a), item_files(b)
    assert sorted(fa) == sorted(fb), a.name
    for name in fa:
        if name.endswith(".json"):
            assert json.loads(fa[name]) == json.loads(fb[name]), f"{a.name}/{name}"
        else:  # PNG images and safetensors masks: bitwise
            assert fa[name] == fb[name], f"{a.name}/{name}"


@needs_builtin
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_two_processes_killed_and_resumed_equal_a_clean_run(tmp_path):
    config = write_config(tmp_path)
    items = plan(load_config(config))
    token = uuid.uuid4().hex
    env = run_env(token)

    # a clean single-process run (this one, with one thread like the workers): the reference
    clean = tmp_path / "clean"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["sweep", str(config), "--out", str(clean), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)

    # two processes; SIGKILL rank 1 as soon as its first item has landed
    out = tmp_path / "run"
    proc = torchrun(config, out, env)
    rank1 = {i.id for i in items if i.index % 2 == 1}
    deadline, killed = time.monotonic() + 120, False
    while time.monotonic() < deadline and proc.poll() is None:
        landed = {p.name for p in (out / "items").glob("*-*") if not p.name.startswith(".")} if (out / "items").is_dir() else set()
        if landed & rank1:
            pid = worker_pid(token, rank=1)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    log = proc.communicate(timeout=120)[0]
    assert killed, log[-3000:]
    assert proc.returncode != 0  # torchrun reports the lost worker (and stops rank 0)
    finished = {i.id for i in items if read_result(out / "items" / i.id, i.id) is not None}
    assert 0 < len(finished) < len(items), "the kill must leave the sweep unfinished"
    before = {i: (out / "items" / i / "result.json").stat().st_ino for i in finished}

    # rerun the same command: only the missing items run
    proc = torchrun(config, out, env)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-3000:]
    assert {i: (out / "items" / i / "result.json").stat().st_ino for i in finished} == before  # not redone

    # every item exactly once, nothing half-written, the same as the clean run
    names = sorted(p.name for p in (out / "items").iterdir())
    assert names == sorted(i.id for i in items)
    assert not list(out.rglob(".tmp-*")) and not list(out.rglob("*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["id"] for m in manifest["items"]] == [i.id for i in items]
    for item in items:
        assert read_result(out / "items" / item.id, item.id) is not None
        assert_same_item(out / "items" / item.id, clean / "items" / item.id)

    # merge: one row per item, a figure
    assert main(["sweep", str(config), "--out", str(out), "--merge", "--quiet"]) == 0
    summary = json.loads((out / "summary" / "summary.json").read_text())
    assert summary["n_finished"] == len(items) and not summary["missing"]
    assert len((out / "summary" / "items.csv").read_text().splitlines()) == len(items) + 1
    assert (out / "summary" / "summary.png").stat().st_size > 0
