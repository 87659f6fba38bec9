"""`ditlens bench findings` on the built-in model (or a folder of its family): Findings 1
and 2 as numbers with controls, into report.md, findings.json and the figures.

    ditlens bench findings [--quick]
    ditlens bench findings --model OUT/model [--classifier FOLDER]   # a model `python -m ditlens.builtin.train` wrote

Finding 1 (functionally critical): zero the top-k, bottom-k and random-k channels over k and
score prompt fidelity (the world's attribute classifier) and the Frechet distance to renders;
without a classifier (world v2, none given), only how far each condition moves the pixels.
Finding 2 (spatially organised): K = 2 masks per site and step, on generated images and on
noised exact renders (`renders.py`), scored against ground truth per background group.
Prompts and seeds are held out (`worlds.py`); every number comes from the run that wrote it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..builtin import scenes as scenes_v1
from ..disrupt import DisruptConfig, DisruptResult, disrupt
from ..generation import GenerationSettings, pixel_distances
from ..io.outputs import write_atomic
from ..reporting.plots import plot_metric_over_k
from ..reporting.report import Section, write_markdown
from ..reporting.verdicts import disruption_verdict, segmentation_verdict
from ..segment import SegmentConfig, SegmentResult, segment_generated
from .builtin_model import model_sentence, model_summary, report_title
from .configs import FindingsConfig
from .renders import renders_through_model
from .reports import not_measured_section, provenance, report_folder
from .scoring import (
    RULES,
    batch_progress,
    foreground_rule_table,
    mask_scores_table,
    mask_table_header,
    mask_verdict_input,
    over_k,
    over_k_rows,
)
from .worlds import (
    BENCH_SEED,
    background_groups,
    classifier_for,
    held_out_prompts,
    metrics_of,
    needs_classifier,
    render_seeds,
    subject_positions,
    world_of,
)

SEGMENT_RULES = ["top", "bottom", "random", "all"]  # Finding 2's channel rules (attention is added beside them)


@dataclass
class _Run:
    """What every step of one findings run reads."""

    pipe: Any
    out: Path
    config: FindingsConfig
    world: ModuleType
    metrics: ModuleType  # the world's scores (metrics_of)
    classifier: Any  # None: fidelity is not measured
    prompts: list[str]
    seeds: list[int]  # of the renders (v2 draws one layout per seed)
    say: Callable[[str], None]
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    def batches(self) -> list[list[str]]:
        """The prompts per pipeline call; batch b generates on seed BENCH_SEED + b."""
        size = self.config.batch_size
        return [self.prompts[i : i + size] for i in range(0, len(self.prompts), size)]


def bench_findings(
    pipe: Any,
    out_dir: str | Path,
    config: FindingsConfig,
    command: str,
    say: Callable[[str], None] = print,
    classifier: Any = None,
) -> Path:
    """Findings 1 and 2 on a built-in-family pipeline of either world. classifier: the
    attribute classifier of the pipeline's world (default: the shipped one for v1; none for
    v2, whose fidelity scores are then listed as not measured)."""
    started = time.perf_counter()
    world = world_of(pipe)
    classifier = classifier_for(pipe, classifier)
    out = report_folder(out_dir)
    prompts = held_out_prompts(config.n_prompts, world=world)
    run = _Run(pipe, out, config, world, metrics_of(world), classifier, prompts, render_seeds(len(prompts)), say)
    model = model_summary(pipe)
    numbers: dict[str, Any] = {"config": asdict(config), "model": model, "prompts": prompts}
    not_measured: list[str] = []

    say(f"finding 1: disruption sweep over k={config.ks} on {len(prompts)} held-out prompts")
    images, first = _disrupted_images(run)
    grid = (first.plot_grid(out / "finding1_grid.png").name, "one prompt, rows: rule, columns: k")
    if classifier is not None:
        numbers["finding1"], section1 = _finding1_fidelity(run, images, grid)
    else:  # what needs no classifier: how far each condition moves the images
        numbers["finding1"], section1 = _finding1_pixels(run, images, grid)
        not_measured.append(
            needs_classifier(
                "Finding 1's prompt fidelity (objects fully correct, per attribute), its Frechet distance to "
                "renders, and so its verdict"
            )
        )

    say("finding 2: K=2 masks on generated images and on noised renders")
    numbers["finding2"], sections2 = _finding2(run)
    if not_measured:
        numbers["not_measured"] = not_measured
    write_atomic(out / "findings.json", json.dumps(numbers, indent=1))

    sections = [section1, *sections2, *not_measured_section(not_measured)]
    intro = (
        f"{provenance(command, f'seed {BENCH_SEED}', started)}. {model_sentence(model)}. {len(prompts)} held-out "
        f"captions (never seen in training), {run.settings.num_inference_steps or 'default'} steps; random-k over "
        f"{config.random_draws} seeded draws (mean ± std)."
    )
    return write_markdown(out / "report.md", f"ditlens bench findings ({report_title(model)})", intro, sections)


# ---- Finding 1: zeroing channels -----------------------------------------------------------------


def _disrupted_images(run: _Run) -> tuple[dict[str, list[torch.Tensor]], DisruptResult]:
    """Every condition's images, per batch (condition label -> one tensor a batch), and the
    first batch's result (for the grid figure)."""
    images: dict[str, list[torch.Tensor]] = {}
    first = None
    for b, batch in enumerate(run.batches()):
        dconfig = DisruptConfig(
            prompts=batch,
            seeds=[BENCH_SEED + b],
            ks=run.config.ks,
            random_draws=run.config.random_draws,
            generation=run.settings,
        )
        result = disrupt(run.pipe, dconfig, progress=batch_progress(run.say, b + 1))
        for condition, imgs in result.images.items():
            images.setdefault(condition.label, []).append(imgs)
        if first is None:
            first = result
    assert first is not None, "a findings run has at least one prompt"
    return images, first


def _finding1_fidelity(
    run: _Run, images: dict[str, list[torch.Tensor]], grid: tuple[str, str]
) -> tuple[dict[str, Any], Section]:
    """Prompt fidelity and the Frechet distance to renders of every condition, over k, and the
    verdict decided on them."""
    ks = run.config.ks
    scores = {
        label: run.metrics.builtin_scores(torch.cat(parts), run.prompts, run.classifier, run.seeds)
        for label, parts in images.items()
    }
    numbers: dict[str, Any] = {
        label: {
            "full_object_accuracy": s["full_object_accuracy"],
            "frechet_distance": s["frechet_distance"],
            "accuracy": s["fidelity"]["accuracy"],
        }
        for label, s in scores.items()
    }
    accuracy, frechet = over_k(scores, "full_object_accuracy", ks), over_k(scores, "frechet_distance", ks)
    plot_metric_over_k(
        accuracy, run.out / "finding1_fidelity.png", "objects fully correct", "Zeroing k channels: prompt fidelity"
    )
    plot_metric_over_k(
        frechet, run.out / "finding1_frechet.png", "Frechet distance to renders", "Zeroing k channels: image quality"
    )
    none = scores["none"]
    table = [
        ["condition", "k", "objects fully correct", "Frechet distance"],
        ["none", "0", f"{none['full_object_accuracy']:.3f}", f"{none['frechet_distance']:.1f}"],
    ]
    table += [acc + fd[2:] for acc, fd in zip(over_k_rows(accuracy, ks, ".3f"), over_k_rows(frechet, ks, ".1f"))]
    by_rule = {
        rule: {k: {"accuracy": accuracy[rule][1][i], "frechet": frechet[rule][1][i]} for i, k in enumerate(ks)}
        for rule in RULES
    }
    verdict = disruption_verdict(
        {"accuracy": none["full_object_accuracy"], "frechet": none["frechet_distance"]}, by_rule
    )
    numbers["verdict"] = verdict.as_dict()
    figures = [
        ("finding1_fidelity.png", "prompt fidelity over k"),
        ("finding1_frechet.png", "Frechet distance over k"),
        grid,
    ]
    return numbers, Section(verdict.headline, verdict.sentence(), figures, table)


def _finding1_pixels(
    run: _Run, images: dict[str, list[torch.Tensor]], grid: tuple[str, str]
) -> tuple[dict[str, Any], Section]:
    """Without a classifier: PSNR of every condition to the unedited images, over k; not decided."""
    baseline = torch.cat(images["none"])
    scores = {label: pixel_distances(torch.cat(parts), baseline) for label, parts in images.items()}
    numbers = {label: {"psnr_db_to_unedited": s["psnr_db"]} for label, s in scores.items()}
    curves = over_k(scores, "psnr_db", run.config.ks)
    plot_metric_over_k(
        curves, run.out / "finding1_psnr.png", "PSNR to unedited (dB)", "Zeroing k channels: pixel change"
    )
    table = [["condition", "k", "PSNR to unedited (dB)"], *over_k_rows(curves, run.config.ks, ".1f")]
    section = Section(
        "Finding 1 (functionally critical): not decided",
        "Not decided: the finding is decided on prompt fidelity and the Frechet distance, which need a v2 attribute "
        "classifier (see Not measured). The table shows how far zeroing each rule's channels moves the images: PSNR "
        "to the unedited images of the same prompts and seeds (lower = further).",
        [("finding1_psnr.png", "PSNR to the unedited images over k"), grid],
        table,
    )
    return numbers, section


# ---- Finding 2: K = 2 masks ----------------------------------------------------------------------


def _finding2(run: _Run) -> tuple[dict[str, Any], list[Section]]:
    """K = 2 masks of generated images and of renders against their truth, per background
    group; the verdict on the headline group; which foreground rule names the subject."""
    k = run.config.k_segment
    sets = {"generated": _generated_masks(run), "renders": _render_masks(run)}
    generated, gen_truth = sets["generated"]
    groups = background_groups(run.prompts, run.world)
    image_sets, table, figures = _mask_tables(run, sets, groups)
    # v1: the headline stands on one-colour backgrounds (no competing left/right split), if the prompts have any;
    # v2: on every image (each background is one colour word; the textured ones are shown apart)
    headline = "one-colour backgrounds" if groups.get("one-colour backgrounds") else "all images"
    one = groups[headline]
    fg_numbers, fg_table = foreground_rule_table({name: (*pair, one) for name, pair in sets.items()}, k)
    best_site = image_sets["generated"][headline]["top"]["best_site"]
    generated.plot_overlays(run.out / "finding2_overlays.png", best_site, generated.steps // 2, gen_truth, max_rows=6)
    verdict = segmentation_verdict(
        {f"{label}, {headline}": mask_verdict_input(image_sets[label][headline]) for label in sets}, k
    )
    best_rule = max(fg_numbers, key=lambda fg: fg_numbers[fg]["generated"]["agreement"])
    numbers = {
        "foreground": generated.foreground,
        "k": k,
        "image_sets": image_sets,
        "headline_group": headline,
        "foreground_rules": fg_numbers,
        "verdict": verdict.as_dict(),
        "foreground_choice": {"measured_best": best_rule, "default": generated.foreground},
    }
    overlays = (
        "finding2_overlays.png",
        "images, truth, the top-1 channel's heat map, the masks' outlines, at the best site",
    )
    sections = [
        Section(
            verdict.headline,
            verdict.sentence() + _finding2_text(run, headline, generated.foreground),
            [*figures, overlays],
            table,
        ),
        Section(
            "Which K=2 cluster is the subject",
            _foreground_text(headline, k, fg_numbers, best_rule, generated.foreground),
            [],
            fg_table,
        ),
    ]
    return numbers, sections


def _generated_masks(run: _Run) -> tuple[SegmentResult, torch.Tensor]:
    """K = 2 masks of the prompts' generations (batch b on seed BENCH_SEED + b), with the
    attention baseline, and the world's foreground truth of the images."""
    parts, truths = [], []
    for b, batch in enumerate(run.batches()):
        seg = segment_generated(
            run.pipe,
            SegmentConfig(
                prompts=batch,
                seeds=[BENCH_SEED + b],
                k=run.config.k_segment,
                rules=SEGMENT_RULES,
                generation=run.settings,
                compare_foregrounds=True,
            ),
            attention_positions=[subject_positions(p, run.world) for p in batch],
        )
        parts.append(seg)
        truths.append(run.metrics.foreground_masks(seg.images, batch))
    return SegmentResult.concatenate(parts), torch.cat(truths)


def _render_masks(run: _Run) -> tuple[SegmentResult, torch.Tensor]:
    """K = 2 masks of the prompts' exact renders (`renders_through_model`), and their exact masks."""
    size, c = run.config.batch_size, run.config
    seeds = [run.seeds[i : i + size] for i in range(0, len(run.seeds), size)]
    parts = [
        renders_through_model(run.pipe, batch, SEGMENT_RULES, c.k_segment, c.noise_level, BENCH_SEED + b, seeds[b])
        for b, batch in enumerate(run.batches())
    ]
    return SegmentResult.concatenate(parts), run.metrics.render_masks(run.prompts, run.seeds)


def _mask_tables(
    run: _Run, sets: dict[str, tuple[SegmentResult, torch.Tensor]], groups: dict[str, list[int]]
) -> tuple[dict[str, Any], list[list[str]], list[tuple[str, str]]]:
    """Per image set and group: the numbers, the table rows (with the header) and an mIoU
    figure per site."""
    k = run.config.k_segment
    image_sets: dict[str, Any] = {}
    table = [mask_table_header(sets["generated"][0].foreground)]
    figures = []
    for label, (result, truth) in sets.items():
        all_scores = result.scores(truth)  # every image, once; the groups select from it
        image_sets[label], rows = mask_scores_table(result, truth, groups, label, k, all_scores)
        table += rows
        for group, index in groups.items():
            if not index:
                continue
            name = f"finding2_miou_{label}_{group.split()[0].replace('-', '_')}.png"
            result.plot_scores(
                {r: sc.samples(index) for r, sc in all_scores.items()},
                run.out / name,
                f"{label}, {group}: k={k}, {result.foreground} rule (solid), oracle (dotted)",
            )
            figures.append((name, f"{label}, {group}"))
    return image_sets, table, figures


def _finding2_text(run: _Run, headline: str, foreground: str) -> str:
    """What Finding 2's section says after its verdict: the groups, the scores and the truth
    (the world's)."""
    if run.world is scenes_v1:
        groups = (
            f" The headline is decided on {headline}; split backgrounds (two colours, left and right) give K=2 a "
            "competing split and are reported apart below."
        )
        truth = (
            "Generated images' ground truth = pixels off the prompt's background colour; renders' = exact object masks."
        )
    else:
        groups = (
            f" The headline is decided on {headline}; plain and textured backgrounds are reported apart below (a "
            "background's pattern is a split K=2 can find instead of the objects)."
        )
        truth = (
            "Generated images' ground truth = pixels whose nearest colour band is an object colour's (world v2 draws "
            "every pixel on its colour word's band, and object and background bands lie apart, so textures stay "
            f"background); renders' = exact object masks (render seeds {run.seeds[0]} on)."
        )
    return (
        groups + " mIoU is the two-class (foreground/background) IoU averaged over "
        f"images, of the '{foreground}' rule's labelling; the oracle takes the better labelling of each image (an "
        "upper bound that reads the ground truth); ARI, the adjusted Rand index, scores the split with no labelling "
        f"at all. {truth} The attention baseline labels by its own polarity (high attention to the subject's words)."
    )


def _foreground_text(headline: str, k: int, fg_numbers: dict[str, Any], best: str, default: str) -> str:
    """Which foreground rule most often names the oracle's cluster (`best`), against ditlens' default."""
    return (
        f"On {headline}, the rule that most often names the oracle's cluster on top-{k} masks of generated images is "
        f"'{best}' ({fg_numbers[best]['generated']['agreement']:.3f} of images over every step and site); ditlens' "
        f"default is '{default}' ({fg_numbers[default]['generated']['agreement']:.3f})"
        + (
            ". The measurement agrees with the default."
            if best == default
            else f". The measurement favours '{best}': the default should be reconsidered."
        )
    )
