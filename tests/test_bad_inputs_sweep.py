"""The catalogue of bad sweep configs and sweep folders: exit 2 with one line naming the
bad key or value, never a traceback, and no item half written (tests/bad_inputs.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .bad_inputs import SITES, Assets, disk_full_after, error_line, no_half_written, run_cli


def sweep_config(a: Assets, folder: Path, body: str, *, header: bool = True, name: str = "sweep.toml") -> str:
    """body (top-level keys first, then [[jobs]]) + the tiny pipeline's [model] and [generation] tables."""
    tables = f'\n[model]\nname = "{a.pipe}"\nembeds = "{a.embeds}"\n[generation]\nsteps = 2\nheight = 32\nwidth = 32\n'
    text = body + (tables if header else "")
    path = folder / name
    path.write_text(text)
    return str(path)


FIND = '[[jobs]]\ncommand = "find"\nk = 2\n'

SWEEP_CASES = [
    ("config-missing", None, ["does not exist"]),
    ("bad-toml", "seeds = [0,\n[[jobs]]\n", ["not valid TOML", "line"]),
    ("bad-yaml", ("seeds: [0\njobs: {command: find}\n", "sweep.yaml"), ["not valid YAML"]),
    ("unknown-file-type", ("{}", "sweep.json"), ["'.json'", ".toml, .yaml, .yml"]),
    (
        "unknown-top-level-key",
        "prompt = ['x']\n" + FIND,
        ["unknown key 'prompt'", "out, seeds, model, prompts, generation, jobs"],
    ),
    ("no-jobs", "", ["no jobs", "find, disrupt, segment, transport"]),
    ("job-without-command", "[[jobs]]\nk = 2\n", ["jobs[0] has no 'command'", "find, disrupt, segment, transport"]),
    ("unknown-command", '[[jobs]]\ncommand = "paint"\n', ["'paint'", "find, disrupt, segment, transport"]),
    ("unknown-setting", '[[jobs]]\ncommand = "find"\nkk = 2\n', ["'kk'", "allowed: k, statistic, stats"]),
    ("transport-without-target", '[[jobs]]\ncommand = "transport"\n', ["missing 'target'"]),
    (
        "seeds-wrong-type",
        ("seeds = 'many'\n" + FIND, "sweep.toml"),
        ["'seeds' must be a non-empty list of integers", "'many'"],
    ),
    ("seeds-duplicated", ("seeds = [1, 1]\n" + FIND, "sweep.toml"), ["'seeds' lists a seed twice"]),
    ("setting-wrong-type", '[[jobs]]\ncommand = "find"\nk = "four"\n', ["'k' must be an integer", "'four'"]),
    (
        "alpha-out-of-range",
        '[[jobs]]\ncommand = "transport"\ntarget = 1\nalpha = [0.5, 2]\n',
        ["'alpha' must be within [0, 1]", "2.0"],
    ),
    ("unknown-rule", '[[jobs]]\ncommand = "disrupt"\nrule = ["top", "best"]\n', ["'best'", "top, bottom, random"]),
    (
        "unknown-foreground",
        '[[jobs]]\ncommand = "segment"\nforeground = "big"\n',
        ["'foreground'", "'big'", "border, smaller, high, low"],
    ),
    (
        "unknown-streams",
        '[[jobs]]\ncommand = "transport"\ntarget = "y"\nstreams = "all"\n',
        ["'streams'", "'all'", "img, txt, both"],
    ),
    ("k-above-hidden-size", '[[jobs]]\ncommand = "find"\nk = 64\n', ["jobs[0] (find)", "1..32", "64"]),
    (
        "unknown-site",
        '[[jobs]]\ncommand = "disrupt"\nk = 1\nrule = "top"\nsites = ["blocks.9"]\n',
        ["jobs[0] (disrupt)", "'blocks.9'", SITES],
    ),
    (
        "window-beyond-schedule",
        '[[jobs]]\ncommand = "disrupt"\nk = 1\nrule = "top"\nwindow = [0, 5]\n',
        ["[0, 5]", "stop <= 2"],
    ),
    ("embeds-rows-vs-prompts", 'prompts = ["a", "b", "c"]\n' + FIND, ["3 prompts but the embeddings file has 2 rows"]),
    ("target-row-out-of-range", '[[jobs]]\ncommand = "transport"\ntarget = 5\n', ["target 5", "0..1"]),
    (
        "builtin-unknown-word",
        ('prompts = ["a large red dog on the left on a gray background"]\n' + FIND, "sweep.toml"),
        ["Unknown word 'dog'"],
    ),
]


@pytest.mark.parametrize("case_id, body, says", [pytest.param(*c, id=c[0]) for c in SWEEP_CASES])
def test_sweep_bad_config(case_id, body, says, assets, tmp_path, capsys):
    if body is None:
        config = str(tmp_path / "none.toml")
    elif isinstance(body, tuple):  # its own header (or none)
        text, name = body
        config = sweep_config(assets, tmp_path, text, header=False, name=name)
    else:
        config = sweep_config(assets, tmp_path, body)
    out = tmp_path / "out"
    message = run_cli(capsys, ["sweep", config, "--out", str(out), "--quiet"])
    for text in says:
        assert text in message, message
    no_half_written(tmp_path, out)


def test_sweep_out_under_a_file(assets, tmp_path, capsys):
    config = sweep_config(assets, tmp_path, FIND)
    message = run_cli(capsys, ["sweep", config, "--out", assets.a_file + "/out", "--quiet"])
    assert "a_file" in message and "is a file, not a folder" in message


def test_sweep_merge_before_any_result(assets, tmp_path, capsys):
    config = sweep_config(assets, tmp_path, FIND)
    out = tmp_path / "out"
    message = run_cli(capsys, ["sweep", config, "--out", str(out), "--merge"])
    assert "No finished items" in message and "run `ditlens sweep" in message
    no_half_written(tmp_path, out)


def test_sweep_nan_activations_stop_with_the_site_and_step(assets, tmp_path, capsys):
    config = sweep_config(
        assets,
        tmp_path,
        f'seeds = [0]\nprompts = ["a", "b"]\n[model]\nname = "{assets.nan_pipe}"\n'
        f'embeds = "{assets.embeds}"\n[generation]\nsteps = 2\nheight = 32\nwidth = 32\n'
        '[[jobs]]\ncommand = "disrupt"\nrule = "top"\nk = 1\n',
        header=False,
    )
    out = tmp_path / "out"
    message = run_cli(capsys, ["sweep", config, "--out", str(out), "--quiet"])
    assert (
        "NaN" in message
        and "site transformer_blocks.0, step 0" in message
        and "Only finite values are allowed" in message
    )
    assert not [p for p in (out / "items").iterdir()]  # no item, complete or not


@pytest.mark.parametrize("where", ["result-record", "image"])
def test_sweep_disk_full_keeps_nothing_half_written(where, assets, tmp_path, capsys, monkeypatch):
    import ditlens.sweep.store as sweep  # where items are written: _write_file, RESULT

    if where == "image":
        disk_full_after(monkeypatch, 0)
    else:
        original = sweep._write_file

        def write_file(path: Path, data: bytes) -> None:
            if path.name == sweep.RESULT:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            original(path, data)

        monkeypatch.setattr(sweep, "_write_file", write_file)
    config = sweep_config(assets, tmp_path, FIND)
    out = tmp_path / "out"
    message = run_cli(capsys, ["sweep", config, "--out", str(out), "--quiet"])
    assert "No space left on device" in message and "nothing of that item was kept" in message and "rerun" in message
    assert not list((out / "items").iterdir())
    no_half_written(tmp_path, None)


def test_sweep_refuses_a_second_sweep_on_the_same_folder(assets, tmp_path, capsys):
    config = sweep_config(assets, tmp_path, FIND)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        message = run_cli(capsys, ["sweep", config, "--out", str(out), "--quiet"])
    assert "Another sweep is writing" in message
    assert not list((out / "items").iterdir())


def test_the_real_entry_point_exits_2_without_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("seeds = [0,\n")
    done = subprocess.run(
        [sys.executable, "-m", "ditlens.cli", "sweep", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert error_line(done.stderr, "sweep").startswith(f"Sweep config {str(config)!r}: not valid TOML")
