"""Bad luck rather than bad input, on the command line: Ctrl+C, an unwritable output folder, a
full disk. One line on stderr, no traceback, and nothing half written (tests/bad_inputs.py).
A sweep's full disk is in tests/test_bad_inputs_sweep.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from ditlens.cli import main

from .bad_inputs import SCENE, SCENE_2, disk_full_after, no_half_written, run_cli, tiny


def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch, tmp_path):
    import ditlens.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ditlens.cli.run, "load", interrupted)
    assert main(["find", "--prompt", SCENE, "--steps", "1", "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "interrupted (Ctrl+C)" in err and "nothing of this run was written" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: chmod cannot make a folder unwritable")
def test_cli_out_folder_not_writable(assets, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = run_cli(capsys, ["find", *tiny(assets), "--out", str(locked / "out")])
        assert "locked" in message
    finally:
        locked.chmod(0o700)
    no_half_written(tmp_path, locked / "out")


def test_cli_disk_full_leaves_nothing_half_written_find(assets, tmp_path, capsys, monkeypatch):
    disk_full_after(monkeypatch, 1)
    out = tmp_path / "out"
    message = run_cli(capsys, ["find", *tiny(assets), "--out", str(out)])
    assert "No space left on device" in message and str(out) in message
    no_half_written(tmp_path, out)


def test_a_full_disk_while_saving_statistics_is_an_os_error(assets, tmp_path, capsys, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError: it must read as the disk's error."""
    from safetensors import SafetensorError

    import ditlens.core.record

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ditlens.core.record, "save_file", full)
    out = tmp_path / "out"
    message = run_cli(capsys, ["find", *tiny(assets), "--out", str(out)])
    assert "No space left on device" in message and str(out) in message
    no_half_written(tmp_path, out)


def test_a_real_full_disk_during_find(tmp_path, capsys):
    """find on the built-in model into a 1 MB tmpfs: its statistics do not fit."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "out"
        argv = ["find", "--prompt", SCENE, "--prompt", SCENE_2, *"--seeds 0 1 2 3 --steps 8 --quiet --out".split()]
        message = run_cli(capsys, [*argv, str(out)])
        assert "No space left on device" in message and str(out) in message
        no_half_written(disk, out)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
