"""`ditlens bench findings --model M --prompts FILE --segmenter S --clip C` on a complete tiny
pipeline (random weights): the report's tables hold the numbers of that run."""

from __future__ import annotations

import json

import pytest

from ditlens.cli import main

from .full_pipelines import pipeline_folder
from .tiny_scorers import save_tiny_clip, save_tiny_segmenter

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_bench_findings_on_a_real_pipeline_reports_its_own_numbers(tmp_path_factory, tmp_path):
    model = pipeline_folder(tmp_path_factory, "flux")
    clip, segmenter = save_tiny_clip(tmp_path / "clip"), save_tiny_segmenter(tmp_path / "seg")
    (tmp_path / "p.txt").write_text("a red cube\na blue ball\n")
    out = tmp_path / "bench"
    argv = ["bench", "findings", "--model", str(model), "--prompts", str(tmp_path / "p.txt"), "--segmenter", str(segmenter),
            "--clip", str(clip), "--ks", "1", "4", "--k", "2", "--steps", "2", "--height", "32", "--width", "32",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    numbers = json.loads((out / "findings.json").read_text())
    report = (out / "report.md").read_text()
    f1 = numbers["finding1"]
    assert set(f1) == {"none", "top-1", "top-4", "bottom-1", "bottom-4", "random-1#0", "random-1#1", "random-4#0", "random-4#1"}
    assert f1["none"]["clip_i_to_unedited"] == pytest.approx(1.0, abs=1e-5) and f1["none"]["psnr_db"] == 100.0
    top = f1["top-4"]
    assert f"| top | 4 | {top['psnr_db']:.1f} | {top['clip_score']:.2f} | {top['clip_i_to_unedited']:.3f} |" in report
    randoms = [f1[f"random-1#{d}"]["clip_score"] for d in range(2)]
    assert f"| random | 1 | " in report and f"{sum(randoms) / 2:.2f} ± " in report
    f2 = numbers["finding2"]["scores"]["all images"]
    assert f2["images"] == 2 and set(f2) >= {"top", "bottom", "random", "all"}
    assert f"{f2['top']['miou']:.3f} ({f2['top']['best_site']})" in report
    assert numbers["finding2"]["verdict"]["text"] in report
    assert "Not measured" in report and "prompt fidelity" in " ".join(numbers["not_measured"])
    for name in ("finding1_clip_score.png", "finding1_clip_i_to_unedited.png", "finding1_psnr_db.png", "finding2_miou.png", "finding2_overlays.png"):
        assert (out / name).is_file(), name


def test_bench_refusals_name_what_is_wrong(tmp_path, capsys):
    assert main(["bench", "findings", "--clip", str(tmp_path), "--quick"]) == 2
    assert "No CLIP model at" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("a red cube\n")
    assert main(["bench", "findings", "--prompts", str(tmp_path / "p.txt"), "--quick"]) == 2
    assert "--prompts is for a real model" in capsys.readouterr().err
    assert main(["bench", "transport", "--model", str(tmp_path), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "bench transport on a real model is not built yet" in err or "model_index.json" in err
