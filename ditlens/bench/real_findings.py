"""`ditlens bench findings --model M --prompts FILE`: the paper's protocol for Findings 1
and 2 on any supported pipeline, where no exact ground truth exists.

    ditlens bench findings --model ./FLUX.1-schnell --prompts prompts.txt \\
        --segmenter ./segformer --clip ./clip-vit-large-patch14

Finding 1: zero the top-k, bottom-k and random-k channels (every site and step) over k, and
score each condition by its pixel distance to the unedited images and, with a CLIP, the CLIP
score with each image's prompt and CLIP-I to the unedited image. Finding 2: K = 2 masks of
the generated images per site and step for top-k, bottom-k, random-k and all channels, under
every foreground rule, against the truth of `--truth-dir` or `--segmenter`, with the oracle
labelling, agreement and ARI (the same tables as the built-in bench), and the attention
baseline (K = 2 on the image-to-subject-words attention) where each line of the prompts file
names its subject: `a cat on a red sofa | cat`. The report says what it could not measure
and why. Every number in it comes from the run that wrote it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from ..adapters import UnsupportedModelError, adapter_for
from ..disrupt import Condition, DisruptConfig, DisruptResult, disrupt
from ..io.outputs import write_atomic
from ..metrics.scores import DISRUPT_CURVES, Scorers, disrupt_scores, score_curves
from ..reporting.plots import plot_metric_over_k
from ..reporting.report import Section, write_markdown
from ..reporting.verdicts import segmentation_verdict
from ..segment import SegmentConfig, SegmentResult, segment_generated
from . import scoring  # the tables the built-in bench shares
from .configs import ProtocolConfig, split_subjects  # noqa: F401 (cli/bench.py imports split_subjects from here)
from .reports import model_name, not_measured_section, provenance, report_folder


def attention_positions(pipe: Any, config: ProtocolConfig) -> tuple[list[list[int]] | None, str]:
    """Per prompt, the text-stream positions of its subject words (`Adapter.text_positions`),
    or None and why the attention baseline cannot run. A word the pipeline cuts away raises."""
    if config.subjects is None:
        return (
            None,
            "the attention baseline: no subject words (write the prompts file's lines as `prompt | subject words`)",
        )
    adapter = adapter_for(pipe)
    try:
        if adapter.attention_locator is None:
            raise UnsupportedModelError(f"attention maps are not wired for {type(adapter.transformer).__name__}")
        return [adapter.text_positions(pipe, p, words) for p, words in zip(config.prompts, config.subjects)], ""
    except UnsupportedModelError as err:
        return None, f"the attention baseline: {err}"


def _batches(config: ProtocolConfig) -> list[tuple[int, slice]]:
    """(seed, the prompts' slice) per pipeline call, seeds outermost: concatenated, the images
    are seed-major over all prompts, as one call over every prompt would give them."""
    size = config.batch_size
    return [(seed, slice(i, i + size)) for seed in config.seeds for i in range(0, len(config.prompts), size)]


def run_disruption(pipe: Any, config: ProtocolConfig, say: Callable[[str], None]) -> DisruptResult:
    """Zeroing top-k, bottom-k and random-k channels over config.ks, batch by batch, joined
    into one result over every prompt and seed."""
    images: dict[Condition, list[torch.Tensor]] = {}
    dconfig = None
    for b, (seed, batch) in enumerate(_batches(config)):
        dconfig = DisruptConfig(
            prompts=config.prompts[batch],
            seeds=[seed],
            ks=config.ks,
            random_draws=config.random_draws,
            generation=config.generation,
        )
        result = disrupt(pipe, dconfig, progress=scoring.batch_progress(say, b + 1))
        for condition, imgs in result.images.items():
            images.setdefault(condition, []).append(imgs)
    assert dconfig is not None, "a protocol has at least one prompt and seed"
    return DisruptResult(
        replace(dconfig, prompts=config.prompts, seeds=config.seeds), {c: torch.cat(v) for c, v in images.items()}
    )


def run_segmentation(pipe: Any, config: ProtocolConfig, positions: list[list[int]] | None = None) -> SegmentResult:
    """K = 2 masks of every prompt and seed; positions (per prompt, `attention_positions`) adds
    the attention baseline."""
    parts = [
        segment_generated(
            pipe,
            SegmentConfig(
                prompts=config.prompts[batch],
                seeds=[seed],
                k=config.k_segment,
                rules=["top", "bottom", "random", "all"],
                generation=config.generation,
                compare_foregrounds=True,
            ),
            attention_positions=None if positions is None else positions[batch],
        )
        for seed, batch in _batches(config)
    ]
    return SegmentResult.concatenate(parts)


def bench_findings_any(
    pipe: Any,
    out_dir: str | Path,
    config: ProtocolConfig,
    command: str,
    *,
    scorers: Scorers,
    truth: Callable[[SegmentResult], torch.Tensor] | None,
    truth_source: str,
    say: Callable[[str], None] = print,
) -> Path:
    """Run the protocol and write report.md, findings.json and the figures into out_dir.
    truth: the ground-truth masks (n, H, W) of the generated images (None: Finding 2's
    scores are not measured); truth_source names where they come from."""
    started = time.perf_counter()
    out = report_folder(out_dir)
    not_measured = list(scorers.not_measured())
    numbers: dict[str, Any] = {
        "config": asdict(config) | {"generation": asdict(config.generation)},
        "truth": truth_source,
    }
    positions, no_attention = attention_positions(pipe, config) if truth is not None else (None, "")
    if no_attention:
        not_measured.append(no_attention)

    say(f"finding 1: zeroing k={config.ks} channels on {len(config.prompts)} prompts x {len(config.seeds)} seeds")
    numbers["finding1"], section1 = _finding1(pipe, config, scorers, out, say)
    sections = [section1]
    if truth is None:
        not_measured.append("Finding 2's mIoU: no ground truth (give --truth-dir DIR or --segmenter PATH)")
    else:
        say(f"finding 2: K=2 masks (k={config.k_segment}) against {truth_source}")
        seg = run_segmentation(pipe, config, positions)
        numbers["finding2"], sections2 = _finding2(
            seg, truth(seg), config.k_segment, truth_source, positions is not None, out
        )
        sections += sections2
    numbers["not_measured"] = not_measured
    sections += not_measured_section(not_measured, always=True)
    write_atomic(out / "findings.json", json.dumps(numbers, indent=1, default=str))
    seeds = f"{len(config.seeds)} seed{'s' * (len(config.seeds) != 1)}"
    intro = (
        f"{provenance(command, f'seeds {config.seeds}', started)}. Model {model_name(pipe)} "
        f"({type(pipe.transformer).__name__}); {len(config.prompts)} prompts x {seeds}; random-k over "
        f"{config.random_draws} seeded draws (mean ± std over draws and images)."
    )
    return write_markdown(out / "report.md", f"ditlens bench findings ({type(pipe).__name__})", intro, sections)


def _finding1(
    pipe: Any, config: ProtocolConfig, scorers: Scorers, out: Path, say: Callable[[str], None]
) -> tuple[dict[str, Any], Section]:
    """Zero the channels, score every condition, plot each score over k and the first prompt's grid."""
    result = run_disruption(pipe, config, say)
    scores = disrupt_scores(result, scorers)
    numbers = {label: {k: v for k, v in row.items() if not k.endswith("_per_image")} for label, row in scores.items()}
    figures = []
    for key, (label, title) in {
        "psnr_db": ("PSNR to unedited (dB)", "Zeroing channels: pixel change"),
        **DISRUPT_CURVES,
    }.items():
        curves = score_curves(scores, key, list(scoring.RULES))
        if curves:
            plot_metric_over_k(curves, out / f"finding1_{key}.png", label, title)
            figures.append((f"finding1_{key}.png", f"{label} over k"))
    result.plot_grid(out / "finding1_grid.png")
    figures.append(("finding1_grid.png", "the first prompt, rows: rule, columns: k"))
    text = _disruption_sentence(scores, config.ks)
    return numbers, Section(
        "Finding 1 (functionally critical): zeroing channels", text, figures, _finding1_table(scores)
    )


def _finding1_table(scores: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Per rule and k: the mean of each score there is, ± its spread over draws and images."""
    columns = [
        ("psnr_db", "PSNR to unedited", ".1f"),
        ("clip_score", "CLIP score", ".2f"),
        ("clip_i_to_unedited", "CLIP-I to unedited", ".3f"),
    ]
    columns = [c for c in columns if any(c[0] in row for row in scores.values())]
    table = [["condition", "k", *[name for _, name, _ in columns]]]
    for rule in ("none", *scoring.RULES):
        for k in sorted({row["k"] for row in scores.values() if row["rule"] == rule}):
            rows = [row for row in scores.values() if row["rule"] == rule and row["k"] == k]
            cells = []
            for key, _, fmt in columns:
                values = torch.tensor([row[key] for row in rows])
                spread = f" ± {float(values.std()):{fmt}}" if len(values) > 1 else ""
                cells.append(f"{float(values.mean()):{fmt}}" + spread)
            table.append([rule, str(k), *cells])
    return table


def _finding2(
    seg: SegmentResult, masks: torch.Tensor, k: int, truth_source: str, attention: bool, out: Path
) -> tuple[dict[str, Any], list[Section]]:
    """K = 2 masks of the generated images (on k channels) against the truth `masks`: the
    tables of the built-in bench on one image group, the verdict and the figures."""
    groups = {"all images": list(range(masks.shape[0]))}
    all_scores = seg.scores(masks)
    found, rows = scoring.mask_scores_table(seg, masks, groups, "generated", k, all_scores)
    fg_numbers, fg_table = scoring.foreground_rule_table({"generated": (seg, masks, groups["all images"])}, k)
    verdict = segmentation_verdict({"generated": scoring.mask_verdict_input(found["all images"])}, k)
    numbers = {
        "foreground": seg.foreground,
        "k": k,
        "scores": found,
        "foreground_rules": fg_numbers,
        "verdict": verdict.as_dict(),
    }
    seg.plot_scores(all_scores, out / "finding2_miou.png", f"k={k}, {seg.foreground} rule (solid), oracle (dotted)")
    best_site = found["all images"]["top"]["best_site"]
    seg.plot_overlays(out / "finding2_overlays.png", best_site, seg.steps // 2, masks, max_rows=6)
    text = (
        verdict.sentence() + f" Ground truth: {truth_source}. The oracle takes the better labelling of each image "
        "(an upper bound that reads the truth); ARI scores the split with no labelling."
        + (
            " The attention baseline labels by its own polarity (high attention to the subject's words)."
            if attention
            else ""
        )
    )
    figures = [
        ("finding2_miou.png", "mIoU per site"),
        ("finding2_overlays.png", "images, truth, masks at the best site"),
    ]
    return numbers, [
        Section(verdict.headline, text, figures, [scoring.mask_table_header(seg.foreground), *rows]),
        Section("Which K=2 cluster is the subject", "Per foreground rule, on the top-k masks.", [], fg_table),
    ]


def _disruption_sentence(scores: dict[str, dict[str, Any]], ks: list[int]) -> str:
    """At the smallest k: how far each rule moves the images, in the strongest score there is
    (CLIP-I to unedited with a CLIP, else PSNR; lower is further for both), worded from the numbers."""
    k = min(k for k in ks if k > 0)
    key, name = (
        ("clip_i_to_unedited", "CLIP-I to the unedited image")
        if "clip_i_to_unedited" in scores["none"]
        else ("psnr_db", "PSNR to the unedited image (dB)")
    )
    means = {}
    for rule in ("top", "bottom", "random"):
        values = [row[key] for row in scores.values() if row["rule"] == rule and row["k"] == k]
        if values:
            means[rule] = sum(values) / len(values)
    controls = {r: v for r, v in means.items() if r != "top"}
    if "top" not in means or not controls:
        return f"At k = {k} there is no top-k condition and control of the same size to compare."
    gap = min(controls.values()) - means["top"]  # > 0: top-k moved the images further than the nearest control
    return (
        f"At k = {k}, {name}: top-k {means['top']:.4f}, "
        + ", ".join(f"{r}-k {v:.4f}" for r, v in controls.items())
        + (
            f". Zeroing the top-k channels moves the images further than every control of the same size (by {gap:.4f})."
            if gap > 0
            else f". Zeroing the top-k channels does not move the images further than every control of the same "
            f"size (the nearest control is {-gap:.4f} further or as far)."
        )
    )
