"""`ditlens bench` end to end on the built-in model, tiny: every headline is the verdict of
the run's own numbers, and the tables hold those numbers."""

from __future__ import annotations

import json

import pytest

from ditlens.bench import FindingsConfig, TransportBenchConfig, bench_findings, bench_transport


@pytest.fixture(scope="module")
def pipe():
    from ditlens.builtin import load_builtin

    pipe = load_builtin()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def headings(report: str) -> list[str]:
    return [line[3:] for line in report.splitlines() if line.startswith("## ")]


def test_findings_report_headlines_are_the_verdicts_of_its_numbers(pipe, tmp_path):
    config = FindingsConfig(n_prompts=4, ks=[1], random_draws=1, batch_size=4)
    bench_findings(pipe, tmp_path, config, "test", say=lambda _: None)
    numbers = json.loads((tmp_path / "findings.json").read_text())
    report = (tmp_path / "report.md").read_text()
    v1, v2 = numbers["finding1"]["verdict"], numbers["finding2"]["verdict"]
    assert headings(report)[:2] == [f"{v1['finding']}: {v1['status']}", f"{v2['finding']}: {v2['status']}"]
    assert v1["text"] in report and v2["text"] in report
    sets = numbers["finding2"]["image_sets"]
    top = sets["generated"][numbers["finding2"]["headline_group"]]["top"]
    # the verdict's evidence quotes the table's own figure, and the oracle bounds the rule
    assert f"top-2 {top['miou']:.3f}" in v2["evidence"]
    assert f"| {top['miou']:.3f} ({top['best_site']}) | {top['oracle']:.3f} |" in report
    for image_set in sets.values():
        for group in image_set.values():
            for rule, n in group.items():
                if rule != "images":
                    assert all(o >= m - 1e-6 for o, m in zip(n["curves"]["oracle"], n["curves"]["miou"]))
    fg = numbers["finding2"]["foreground_rules"]
    assert set(fg) == {"border", "smaller", "high", "low"}
    for png in ("finding2_overlays.png", "finding2_miou_generated_all.png", "finding2_miou_renders_all.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_transport_report_headline_is_the_verdict_of_its_numbers(pipe, tmp_path):
    config = TransportBenchConfig(
        n_pairs=1,  # every section still runs; 2 pairs took ~2 minutes on the 2-core CPU
        alphas=[0.0, 1.0],
        sweep_k=[2, 256],
        sweep_windows=[None],
        sweep_sites=["all"],
        sweep_masks=["source", "all"],
        sweep_streams=["img", "txt"],
    )
    bench_transport(pipe, tmp_path, config, "test", say=lambda _: None)
    numbers = json.loads((tmp_path / "transport.json").read_text())
    report = (tmp_path / "report.md").read_text()
    verdict = numbers["verdict"]
    assert headings(report)[0] == f"{verdict['finding']}: {verdict['status']}"
    curve = numbers["strength_curve"]["transport"]["1.0"]
    assert f"colour {curve['colour_from_source']:.2f}, shape {curve['shape_from_source']:.2f}" in verdict["evidence"]
    few = numbers["defaults_sweep"]["k=2"]  # the only few-channel k here (k <= 256 / 8)
    assert f"(k = 2 of 256) moves the source's colour {few['colour_from_source']:.2f}" in verdict["evidence"]
    assert {"streams=img", "streams=txt", "k=2", "k=256", "random k=2 (control)", "mask=source", "mask=all"} <= set(
        numbers["defaults_sweep"]
    )
    # the oracle beside the methods: its layout IoU is the base of the layout bar
    oracle = numbers["perfect_transfer"]
    assert oracle["colour_from_source"] == oracle["shape_from_source"] == 1.0
    assert f"Layout bar: 0.75 x {oracle['mask_iou_with_target']:.2f}" in verdict["evidence"]
    assert f"| perfect transfer (oracle) | — | {oracle['both_from_source']:.3f} |" in report
    two = numbers["two_object_targets"]
    assert "massive-channel transport (mask = source)" in two and "massive-channel transport (mask = all)" in two
    edge = numbers["k_sweep_edge"]
    assert edge["past_the_winner"] == [k for k in config.sweep_k if k > edge["best_k"]]
