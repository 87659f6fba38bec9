"""`ditlens bench findings --model M --prompts FILE --segmenter S --clip C` on a complete tiny
pipeline (random weights): the report's tables hold the numbers of that run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ditlens.adapters import adapter_for
from ditlens.bench import ProtocolConfig, attention_positions, split_subjects
from ditlens.cli import main
from ditlens.models import load_pipeline

from .full_pipelines import pipeline_folder
from .tiny_scorers import save_tiny_clip, save_tiny_segmenter

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def bench_findings_argv(model: Path, prompts: Path, out: Path, *options: str) -> list[str]:
    """`ditlens bench findings` on a real model folder, with a prompts file, into `out`."""
    return ["bench", "findings", "--model", str(model), "--prompts", str(prompts), "--out", str(out), *options]


def test_bench_findings_on_a_real_pipeline_reports_its_own_numbers(tmp_path_factory, tmp_path):
    model = pipeline_folder(tmp_path_factory, "flux")
    clip, segmenter = save_tiny_clip(tmp_path / "clip"), save_tiny_segmenter(tmp_path / "seg")
    (tmp_path / "p.txt").write_text("a red cube | cube\na blue ball | blue ball\n")  # subject words: attention
    out = tmp_path / "bench"
    argv = bench_findings_argv(model, tmp_path / "p.txt", out, "--segmenter", str(segmenter), "--clip", str(clip))
    argv += ["--ks", "1", "4", "--k", "2", "--steps", "2", "--height", "32", "--width", "32", "--quiet"]
    assert main(argv) == 0
    numbers = json.loads((out / "findings.json").read_text())
    report = (out / "report.md").read_text()
    f1 = numbers["finding1"]
    assert set(f1) == {
        "none",
        "top-1",
        "top-4",
        "bottom-1",
        "bottom-4",
        "random-1#0",
        "random-1#1",
        "random-4#0",
        "random-4#1",
    }
    assert f1["none"]["clip_i_to_unedited"] == pytest.approx(1.0, abs=1e-5) and f1["none"]["psnr_db"] == 100.0
    top = f1["top-4"]
    assert f"| top | 4 | {top['psnr_db']:.1f} | {top['clip_score']:.2f} | {top['clip_i_to_unedited']:.3f} |" in report
    randoms = [f1[f"random-1#{d}"]["clip_score"] for d in range(2)]
    assert "| random | 1 | " in report and f"{sum(randoms) / 2:.2f} ± " in report
    f2 = numbers["finding2"]["scores"]["all images"]
    assert f2["images"] == 2 and set(f2) >= {"top", "bottom", "random", "all", "attention"}
    assert f"{f2['top']['miou']:.3f} ({f2['top']['best_site']})" in report
    attention = f2["attention"]
    assert f"| attention | {attention['miou']:.3f} ({attention['best_site']}) | {attention['oracle']:.3f} |" in report
    assert not any("attention" in reason for reason in numbers["not_measured"])
    assert numbers["finding2"]["verdict"]["text"] in report
    assert "Not measured" in report and "prompt fidelity" in " ".join(numbers["not_measured"])
    for name in (
        "finding1_clip_score.png",
        "finding1_clip_i_to_unedited.png",
        "finding1_psnr_db.png",
        "finding2_miou.png",
        "finding2_overlays.png",
    ):
        assert (out / name).is_file(), name


def test_bench_refusals_name_what_is_wrong(tmp_path, capsys):
    assert main(["bench", "findings", "--clip", str(tmp_path), "--quick"]) == 2
    assert "No CLIP model at" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("a red cube\n")
    assert main(["bench", "findings", "--prompts", str(tmp_path / "p.txt"), "--quick"]) == 2
    assert "--prompts is for a real model" in capsys.readouterr().err
    assert main(["bench", "transport", "--pairs", str(tmp_path / "p.txt"), "--quick"]) == 2
    assert "--pairs is for a real model" in capsys.readouterr().err
    assert main(["bench", "transport", "--model", str(tmp_path), "--quick"]) == 2
    err = (
        capsys.readouterr().err
    )  # a folder without a model in it is said first; the pairs: tests/test_protocol_transport.py
    assert "is not a model folder (no model_index.json in it)" in err, err
    assert main(["bench", "findings", "--model", str(tmp_path), "--quick"]) == 2


def test_subject_words_are_read_and_checked_before_any_model_loads():
    assert split_subjects(["a red cube", "a blue ball"]) == (["a red cube", "a blue ball"], None)
    assert split_subjects(["a red cube | cube", "A Blue Ball |blue ball, Ball"]) == (
        ["a red cube", "A Blue Ball"],
        [["cube"], ["blue ball", "Ball"]],
    )
    for lines, fragment in [
        (["a red cube | cube", "a blue ball"], "Prompt 2 ('a blue ball') names no subject words"),
        (["a red cube | sphere"], "Subject word 'sphere' of prompt 1 does not occur in it"),
        (["a red cube | cub"], "Subject word 'cub'"),  # whole words only
        (["a red cube | "], "needs a prompt before '|' and subject words after it"),
    ]:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            split_subjects(lines)


def test_without_subject_words_the_attention_baseline_says_why_it_is_missing(tmp_path_factory, tmp_path, capsys):
    pipe = load_pipeline(str(pipeline_folder(tmp_path_factory, "flux")))
    positions, why = attention_positions(pipe, ProtocolConfig(prompts=["a red cube"]))
    assert positions is None and "prompt | subject words" in why
    positions, why = attention_positions(pipe, ProtocolConfig(prompts=["a red cube"], subjects=[["cube"]]))
    assert why == "" and positions == [adapter_for(pipe).text_positions(pipe, "a red cube", ["cube"])] and positions[0]
    (tmp_path / "p.txt").write_text("a red cube | cube\na blue ball\n")
    argv = bench_findings_argv(pipeline_folder(tmp_path_factory, "flux"), tmp_path / "p.txt", tmp_path / "out")
    assert main(argv) == 2
    assert "names no subject words" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "p.txt").write_text("a red cube\n")
    assert main(argv + ["--quick"]) == 2  # the built-in bench's options are refused on a real model, not ignored
    assert (
        "--quick is not used by the bench on a real model" in capsys.readouterr().err
        and not (tmp_path / "out").exists()
    )


def test_a_bench_that_fails_part_way_leaves_its_folder_as_it_was(tmp_path_factory, tmp_path, monkeypatch, capsys):
    """bench writes into a staging folder that replaces --out only once the report is done."""
    import ditlens.bench
    import ditlens.bench.real_findings

    def half_then_fail(pipe, out, *args, **kwargs):
        (out / "finding1_grid.png").write_bytes(b"half")
        raise ValueError("Finding 2 failed")

    for module in (ditlens.bench, ditlens.bench.real_findings):  # where the CLI may import it from
        monkeypatch.setattr(module, "bench_findings_any", half_then_fail)
    (tmp_path / "p.txt").write_text("a red cube\n")
    out = tmp_path / "bench"
    argv = bench_findings_argv(pipeline_folder(tmp_path_factory, "flux"), tmp_path / "p.txt", out, "--quiet")
    assert main(argv) == 2 and "Finding 2 failed" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["p.txt"]
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not a ditlens folder: refused before any model loads
    assert main(argv) == 2 and "did not mark as its own" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_the_built_in_bench_refuses_the_real_model_seeds_and_ks(capsys):
    """Their defaults are None, so that giving them to the built-in bench is said, not ignored."""
    for option in (["--seeds", "3"], ["--ks", "2"]):
        assert main(["bench", "findings", "--quick", *option]) == 2
        assert f"{option[0]} is for a real model" in capsys.readouterr().err
