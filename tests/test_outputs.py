"""Output folders (ditlens.io.outputs): replaced whole, one run at a time, never a folder of the
user's. Direct tests of output_folder, then the CLI on the built-in model (`generate`, one
step: the cheapest command that writes a folder) in this process and in subprocesses: a
rerun, two runs at once, a run killed with SIGTERM inside its write, refused folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ditlens.builtin.examples import EXAMPLE_PROMPTS
from ditlens.cli import main
from ditlens.config import GenerationSettings
from ditlens.io.outputs import MARKER, OutputFolderError, output_folder, output_lock

P0, P1, P2 = EXAMPLE_PROMPTS[:3]


def generate(out: Path | str, *prompts: str) -> list[str]:
    """argv of the cheapest CLI run that writes an output folder."""
    return ["generate", *(a for p in prompts for a in ("--prompt", p)), "--steps", "1", "--quiet", "--out", str(out)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temporary folders and lock files: none may stay once a run has ended, whatever the end."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".tmp-") or p.name.endswith(".lock"))


# ---- output_folder directly --------------------------------------------------------------------


def test_a_rerun_replaces_the_folder_as_a_whole(tmp_path):
    out = tmp_path / "run"
    with output_folder(out) as tmp:
        for name in ("a.png", "b.png", "c.png"):
            (tmp / name).write_text(name)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "d.txt").write_text("d")
    assert json.loads((out / MARKER).read_text())["files"] == ["a.png", "b.png", "c.png", "sub", "sub/d.txt"]
    with output_folder(out) as tmp:
        (tmp / "a.png").write_text("new")
    assert snapshot(out).keys() == {"a.png", MARKER} and (out / "a.png").read_text() == "new"
    assert leftovers(tmp_path) == []


def test_an_error_inside_leaves_the_previous_results_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    with output_folder(out) as tmp:
        (tmp / "a.png").write_text("old")
    before = snapshot(out)
    with pytest.raises(RuntimeError, match="mid-way"):
        with output_folder(out) as tmp:
            (tmp / "b.png").write_text("new")
            raise RuntimeError("mid-way")
    assert snapshot(out) == before and leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        with output_folder(tmp_path / "new" / "deeper") as tmp:
            raise RuntimeError("mid-way")
    assert not (tmp_path / "new").exists()  # the parent folders made for it are gone again


def test_two_writers_at_once_one_writes_the_other_is_refused(tmp_path):
    out = tmp_path / "run"
    start = threading.Barrier(2)
    refused = threading.Event()
    results: dict[str, str] = {}

    def run(name: str) -> None:
        start.wait()
        try:
            with output_folder(out) as tmp:
                (tmp / "who.txt").write_text(name)
                refused.wait(30)  # hold the folder until the other writer has tried
            results[name] = "wrote"
        except OutputFolderError as err:
            results[name] = str(err)
            refused.set()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (winner,) = [name for name, r in results.items() if r == "wrote"]
    (message,) = [r for r in results.values() if r != "wrote"]
    assert f"Output folder {str(out)!r} is in use: another run" in message
    assert (out / "who.txt").read_text() == winner and leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["", ".", "HERE", "..", "/", "HOME"])
def test_the_current_folder_its_parents_and_home_are_refused(value, tmp_path, monkeypatch):
    here = tmp_path / "work"
    here.mkdir()
    (here / "image_000.png").write_text("the user's")
    monkeypatch.chdir(here)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    value = {"HERE": str(here), "HOME": str(tmp_path / "home")}.get(value, value)
    with pytest.raises(OutputFolderError, match=f"Output folder {value!r} refused: "):
        with output_folder(value):
            pass
    assert sorted(p.name for p in here.iterdir()) == ["image_000.png"] and leftovers(tmp_path) == []


def test_folders_ditlens_did_not_write_are_refused_and_untouched(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "image_000.png").write_text("the user's")
    with pytest.raises(
        OutputFolderError, match=f"'{mine}' holds files that ditlens did not mark as its own .image_000.png"
    ):
        with output_folder(mine):
            pass
    assert snapshot(mine) == {"image_000.png": b"the user's"}

    ours = tmp_path / "ours"
    with output_folder(ours) as tmp:
        (tmp / "grid.png").write_text("grid")
    (ours / "notes.txt").write_text("added by the user")
    with pytest.raises(OutputFolderError, match="did not write there .notes.txt.*Move them out"):
        with output_folder(ours):
            pass
    assert (ours / "notes.txt").read_text() == "added by the user" and (ours / "grid.png").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    with output_folder(empty) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (empty / "a.txt").is_file() and leftovers(tmp_path) == []


def test_what_killed_runs_left_is_removed_and_an_interrupted_swap_put_back(tmp_path, capsys):
    out = tmp_path / "run"
    with output_folder(out) as tmp:
        (tmp / "a.png").write_text("old")
    (tmp_path / ".tmp-run-111").mkdir()  # killed while writing
    (tmp_path / ".tmp-run-2-222").mkdir()  # another folder's ("run-2"): not this run's to remove
    out.rename(tmp_path / ".tmp-run-333.old")  # killed between its two renames: the previous results
    with output_lock(out):
        assert snapshot(out)["a.png"] == b"old"
    err = capsys.readouterr().err
    assert "note: put back" in err and "note: removed .tmp-run-111 beside" in err
    assert leftovers(tmp_path) == [".tmp-run-2-222"]


# ---- the CLI -----------------------------------------------------------------------------------

# A CLI run that pauses once, right after writing its first file into its temporary folder,
# until the file GO exists (it never does for a run to be killed there).
PAUSED = """
import sys, time
from pathlib import Path
from PIL import Image
ready, go, argv = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
save = Image.Image.save
def paused(self, *args, **kwargs):
    save(self, *args, **kwargs)
    Image.Image.save = save
    ready.touch()
    while not go.exists():
        time.sleep(0.05)
Image.Image.save = paused
from ditlens.cli import main
sys.exit(main(argv))
"""


def start_paused(tmp_path: Path, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    go = tmp_path / "go"
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED, str(ready), str(go), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the paused run did not reach its write: {proc.communicate()}")
        time.sleep(0.05)
    return proc, go


def test_cli_rerun_leaves_no_files_of_the_first_run(tmp_path):
    out = tmp_path / "gen"
    assert main(generate(out, P0, P1, P2)) == 0
    assert (out / "image_002.png").is_file()
    assert main(generate(out, P0)) == 0
    assert sorted(snapshot(out)) == [MARKER, "generate.json", "grid.png", "image_000.png"]
    assert json.loads((out / "generate.json").read_text())["prompts"] == [P0]


def test_cli_two_runs_on_one_folder_one_succeeds_the_other_exits_2(tmp_path, capsys):
    out = tmp_path / "gen"
    first, go = start_paused(tmp_path, generate(out, P0, P1))  # inside its write, holding the folder
    try:
        assert main(generate(out, P2)) == 2
        err = capsys.readouterr().err
        assert (
            f"ditlens generate: error: Output folder {str(out)!r} is in use: another run (process {first.pid})" in err
        )
    finally:
        go.touch()
        stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert json.loads((out / "generate.json").read_text())["prompts"] == [P0, P1]  # nothing of the refused run
    assert sorted(snapshot(out)) == [MARKER, "generate.json", "grid.png", "image_000.png", "image_001.png"]
    assert leftovers(tmp_path) == []


def test_cli_sigterm_inside_the_write_then_a_rerun(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(generate(out, P0)) == 0
    before = snapshot(out)
    killed, _ = start_paused(tmp_path, generate(out, P1, P2))
    temporary = tmp_path / f".tmp-gen-{killed.pid}"
    assert (temporary / "image_000.png").is_file()
    killed.send_signal(signal.SIGTERM)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGTERM
    assert snapshot(out) == before and temporary.is_dir()  # the previous results intact; its leftovers stay
    capsys.readouterr()
    assert main(generate(out, P1, P2)) == 0
    assert (
        f"ditlens: note: removed {temporary.name} beside {str(out)!r}, left by an interrupted run"
        in capsys.readouterr().err
    )
    assert json.loads((out / "generate.json").read_text())["prompts"] == [P1, P2]
    assert sorted(snapshot(out)) == [MARKER, "generate.json", "grid.png", "image_000.png", "image_001.png"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["", "."])
def test_cli_out_current_folder_refused_and_the_users_files_kept(value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "image_000.png").write_bytes(b"the user's")
    assert main(generate(value, P0)) == 2
    err = capsys.readouterr().err
    said = (
        "Output folder '' refused: an empty name means the current folder"
        if value == ""
        else "Output folder '.' refused: it is the current folder"
    )
    assert f"ditlens generate: error: {said}" in err and "Traceback" not in err
    assert snapshot(tmp_path) == {"image_000.png": b"the user's"}


def test_cli_demo_refuses_before_it_starts(tmp_path, capsys):
    """`ditlens demo` (the real entry point) checks its folder before loading the model: a
    refusal takes a second, not the demo's minutes."""
    (tmp_path / "index.html").write_text("the user's page")
    done = subprocess.run(
        [sys.executable, "-m", "ditlens.cli", "demo", "--quiet", "--out", ""],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    says = "ditlens demo: error: Output folder '' refused: an empty name means the current folder"
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("the user's page")
    assert main(["demo", "--quiet", "--out", str(mine)]) == 2
    assert (
        f"Output folder {str(mine)!r} holds files that ditlens did not mark as its own (index.html;"
        in capsys.readouterr().err
    )
    assert snapshot(tmp_path) == {"index.html": b"the user's page", "mine/index.html": b"the user's page"}


def test_cli_demo_on_a_busy_folder_exits_2(tmp_path, capsys):
    out = tmp_path / "demo"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with output_lock(out):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    try:
        assert main(["demo", "--quiet", "--out", str(out)]) == 2
    finally:
        release.set()
        holder.join(30)
    assert f"Output folder {str(out)!r} is in use" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_interrupted_demo_leaves_the_previous_one(tmp_path, monkeypatch):
    """The demo fails in its second section (after find/ was written): the folder holds the
    previous demo, not a find/ without an index.html."""
    from dataclasses import replace

    from ditlens import demo
    from ditlens.models import load_pipeline

    out = tmp_path / "demo"
    with output_folder(out) as tmp:
        (tmp / "index.html").write_text("the previous demo")

    def interrupted(*args, **kwargs):
        assert (tmp_path / f".tmp-demo-{os.getpid()}" / "find" / "stats.safetensors").is_file()
        raise KeyboardInterrupt

    find_channels = demo.find_channels
    monkeypatch.setattr(
        demo,
        "find_channels",
        lambda pipe, config: find_channels(pipe, replace(config, generation=GenerationSettings(1))),
    )
    monkeypatch.setattr(demo, "disrupt", interrupted)
    pipe = load_pipeline(None)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(pipe, out, demo.DemoConfig(prompts=[P0]), say=lambda message: None)
    assert snapshot(out) == {"index.html": b"the previous demo", MARKER: (out / MARKER).read_bytes()}
    assert leftovers(tmp_path) == []
