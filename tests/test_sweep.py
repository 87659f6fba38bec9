"""Sweeps: config parsing, items, and the acceptance test: two torchrun processes (gloo, CPU)
on the built-in model, one killed with SIGKILL mid-run, a rerun that finishes only the
missing items, and every item identical to a clean single-process run. Item ids cover the
model's files: a weight changed in place reruns the items and says why. --quiet prints nothing.
(The plan's checks before any model loads: tests/test_sweep_plan.py.)"""

from __future__ import annotations

import hashlib
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
    return os.environ | {
        "OMP_NUM_THREADS": "1",
        "DITLENS_TEST_TOKEN": token,
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }


def torchrun(config: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "ditlens.cli",
        "sweep",
        str(config),
        "--out",
        str(out),
        "--quiet",
    ]
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
        landed = (
            {p.name for p in (out / "items").glob("*-*") if not p.name.startswith(".")}
            if (out / "items").is_dir()
            else set()
        )
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


# ---- item ids cover the model's weights ----------------------------------------------------------

TINY = """
seeds = [0]

[model]
name = "pipe"
embeds = "embeds.safetensors"

[generation]
steps = 2
height = 32
width = 32

[[jobs]]
command = "find"
k = 2
"""


@pytest.fixture
def tiny_sweep(tmp_path) -> Path:
    """A config on the tiny FLUX pipeline saved to a folder, with 2 rows of prompt embeddings: 2 items."""
    from safetensors.torch import save_file

    from .pipelines import flux_call_kwargs, tiny_flux_pipeline

    tiny_flux_pipeline().save_pretrained(tmp_path / "pipe")
    kwargs = flux_call_kwargs(batch=2)
    save_file({k: kwargs[k] for k in ("prompt_embeds", "pooled_prompt_embeds")}, str(tmp_path / "embeds.safetensors"))
    return write_config(tmp_path, TINY)


def sweep_says(capsys, config: Path, out: Path) -> str:
    assert main(["sweep", str(config), "--out", str(out)]) == 0
    return capsys.readouterr().out


def edit_one_weight(file: Path) -> None:
    """Change one number of a safetensors file in place (same name, same size), as retraining would."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(file), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(file))
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] += 1.0
    size = file.stat().st_size
    save_file(tensors, str(file), metadata=metadata)
    assert file.stat().st_size == size


def test_a_weight_changed_in_place_reruns_the_items_and_says_why(tiny_sweep, tmp_path, capsys, monkeypatch):
    import ditlens.sweep.hashes as hashes

    out = tmp_path / "out"
    said = sweep_says(capsys, tiny_sweep, out)
    assert "2 items run, 0 already done, 2 in all" in said and "rerunning" not in said
    first = {p.name for p in (out / "items").iterdir()}

    # a resume with nothing changed: everything is done, and no model file is read again
    reads = []
    monkeypatch.setattr(
        hashes, "file_sha256", lambda path, read=hashes.file_sha256: reads.append(path.name) or read(path)
    )
    said = sweep_says(capsys, tiny_sweep, out)
    assert "0 items run, 2 already done, 2 in all" in said and "rerunning" not in said, said
    model_files = {"diffusion_pytorch_model.safetensors", "config.json", "model_index.json", "embeds.safetensors"}
    assert not model_files & set(reads), reads  # only the items' own files are checked

    # one weight of the transformer changed in place: both items again, and the run says why
    weights = tmp_path / "pipe" / "transformer" / "diffusion_pytorch_model.safetensors"
    edit_one_weight(weights)
    assert main(["sweep", str(tiny_sweep), "--out", str(out), "--merge"]) == 2  # nothing of these weights yet
    err = capsys.readouterr().err
    assert (
        "No finished items" in err
        and "the model's weights changed (transformer/diffusion_pytorch_model.safetensors)" in err
    ), err
    reads.clear()
    said = sweep_says(capsys, tiny_sweep, out)
    assert (
        "the model's weights changed (transformer/diffusion_pytorch_model.safetensors) since the items in "
        f"{out / 'items'}/ were written: rerunning 2"
    ) in said, said
    assert "2 items run, 0 already done, 2 in all" in said, said
    assert [name for name in reads if name in model_files] == [weights.name]  # the changed file only, once
    second = {p.name for p in (out / "items").iterdir()}
    assert len(second) == 4 and first < second  # new ids; the former results stay, unused
    manifest = json.loads((out / "manifest.json").read_text())
    assert {m["id"] for m in manifest["items"]} == second - first

    said = sweep_says(capsys, tiny_sweep, out)
    assert "0 items run, 2 already done, 2 in all" in said and "rerunning" not in said, said

    # merge reads only the current items
    assert main(["sweep", str(tiny_sweep), "--out", str(out), "--merge", "--quiet"]) == 0
    summary = json.loads((out / "summary" / "summary.json").read_text())
    assert {i["id"] for i in summary["items"]} == second - first


def test_ids_cover_the_embeddings_file_the_builtin_files_and_the_ditlens_version(tiny_sweep, tmp_path, monkeypatch):
    import ditlens.sweep as sweep
    import ditlens.sweep.identity
    from ditlens.builtin.pipeline import DEFAULT_WEIGHTS
    from ditlens.metrics.classifier import DEFAULT_WEIGHTS as CLASSIFIER_WEIGHTS

    ids = {i.id for i in plan(load_config(tiny_sweep))}
    edit_one_weight(tmp_path / "embeds.safetensors")
    assert not ids & {i.id for i in plan(load_config(tiny_sweep))}

    builtin = load_config(write_config(tmp_path))
    fingerprint = sweep.model_fingerprint(builtin.model)
    assert (
        sweep.BUILTIN_WEIGHTS / "model" == DEFAULT_WEIGHTS
        and sweep.BUILTIN_WEIGHTS / "classifier" == CLASSIFIER_WEIGHTS
    )
    assert {
        "model/transformer/diffusion_pytorch_model.safetensors",
        "model/model_index.json",
        "classifier/model.safetensors",
    } <= set(fingerprint.files)
    ids = {i.id for i in plan(builtin)}
    monkeypatch.setattr(ditlens.sweep.identity, "__version__", "0.0.0-other")
    assert not ids & {i.id for i in plan(builtin)}


def test_an_older_sweep_folder_is_refused_with_what_to_do(tiny_sweep, tmp_path, capsys, monkeypatch):
    import ditlens.models

    out = tmp_path / "out"
    (out / "items").mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({"identity": {"version": 1, "model": "pipe"}, "items": []}))
    monkeypatch.setattr(ditlens.models, "load_pipeline", lambda *a, **k: pytest.fail("loaded the model"))
    for merge in ([], ["--merge"]):
        assert main(["sweep", str(tiny_sweep), "--out", str(out), "--quiet", *merge]) == 2
        err = capsys.readouterr().err
        assert "holds a sweep of format 1 (this ditlens writes format 2)" in err, err
        assert "do not cover the content of the model's weights" in err and "give another --out" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["items", "manifest.json"]  # nothing written


@needs_builtin
def test_quiet_prints_nothing_on_success(tmp_path):
    config = write_config(tmp_path, CONFIG.replace("seeds = [0, 1]", "seeds = [0]"))
    done = subprocess.run(
        [sys.executable, "-m", "ditlens.cli", "sweep", str(config), "--out", str(tmp_path / "out"), "--quiet"],
        env=run_env("quiet"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr
    assert len(list((tmp_path / "out" / "items").iterdir())) == 5


def test_a_hub_id_is_fingerprinted_from_its_cached_snapshot(tmp_path, monkeypatch):
    """A hub id's files are those of its snapshot in the local cache (links into blobs/); a new
    revision in the cache is new weights. No network: a cache laid out as huggingface_hub does."""
    import huggingface_hub.constants

    from ditlens.sweep import ModelOptions, model_fingerprint

    repo = tmp_path / "hub" / "models--someone--tiny-dit"
    (repo / "blobs").mkdir(parents=True)

    def snapshot(commit: str, weights: bytes) -> None:
        for name, data in {
            "model_index.json": b"{}",
            "transformer/diffusion_pytorch_model.safetensors": weights,
            "README.md": b"not a model file",
        }.items():
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = repo / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = ModelOptions(name="someone/tiny-dit")
    with pytest.raises(ValueError, match="nor in the local Hugging Face cache"):
        model_fingerprint(model)
    snapshot("a" * 40, b"weights 1")
    first = model_fingerprint(model)
    assert sorted(first.files) == ["model_index.json", "transformer/diffusion_pytorch_model.safetensors"]
    assert first.files["transformer/diffusion_pytorch_model.safetensors"] == hashlib.sha256(b"weights 1").hexdigest()
    snapshot("b" * 40, b"weights 2")  # a new revision of main
    assert model_fingerprint(model).sha256 != first.sha256
