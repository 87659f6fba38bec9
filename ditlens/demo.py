"""`ditlens demo`: all five capabilities on the built-in model, on a CPU, with a report.

find -> disrupt -> segment -> text transport (an interpolation strip) -> image transport,
each writing its pictures and numbers under one folder with an index.html. The folder is
written like every command's: whole at the end, or not at all (ditlens.io.outputs).
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .builtin.examples import EXAMPLE_PROMPTS, EXAMPLE_TRANSPORT_PAIRS
from .disrupt import DisruptConfig, disrupt
from .find import FindConfig, find_channels
from .generation import GenerationSettings
from .io.outputs import output_folder
from .metrics.classifier import AttributeClassifier
from .metrics.fidelity import builtin_scores, off_background_masks, renders, transport_scores
from .reporting.plots import (
    plot_channel_atlas,
    plot_image_table,
    plot_magnitude_surface,
    plot_miou_curves,
    plot_segment_overlays,
    plot_top_vs_median,
)
from .reporting.report import Section, write_html
from .reporting.verdicts import disruption_verdict, segmentation_verdict
from .segment import SegmentConfig, segment_generated
from .transport import TransportConfig, transport_image, transport_text


@dataclass
class DemoConfig:
    prompts: list[str] = field(default_factory=lambda: list(EXAMPLE_PROMPTS))  # cover 1-2 objects, split backgrounds
    seed: int = 0
    k: int = 2  # the built-in model's massive channels number one or two per site (docs/builtin-model.md)
    transport_k: int = TransportConfig.k  # measured by `ditlens bench transport` (docs/transport.md)
    disrupt_ks: list[int] = field(default_factory=lambda: [1, 4, 16])  # small, medium, large edits
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # the interpolation strip


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def run_demo(
    pipe: Any, out_dir: str | Path, config: DemoConfig | None = None, say: Callable[[str], None] = print
) -> Path:
    """Run the five sections and write the report; the path of its index.html. The folder
    appears whole when the demo is done, or not at all (ditlens.io.outputs): an interrupted
    demo leaves the previous one as it was."""
    out = Path(out_dir)
    with output_folder(out) as tmp:
        _write_demo(pipe, tmp, out, config or DemoConfig(), say)
    return out / "index.html"


def _write_demo(pipe: Any, out: Path, shown: Path, config: DemoConfig, say: Callable[[str], None]) -> None:
    """Everything into `out` (a temporary folder); `shown` is the folder the user asked for."""
    settings = GenerationSettings()
    sections: list[Section] = []
    numbers: dict[str, Any] = {}
    started = time.perf_counter()
    prompts = config.prompts

    # 1. find ---------------------------------------------------------------------------------
    say("1/5 find: recording channel statistics")
    found = find_channels(pipe, FindConfig(prompts=prompts, seeds=[config.seed], k=config.k))
    found.save(out / "find")
    plot_top_vs_median(found.samples, out / "find" / "top_vs_median.png")
    plot_channel_atlas(found.samples, out / "find" / "channel_atlas.png")
    if found.surface is not None:
        plot_magnitude_surface(
            found.surface, out / "find" / "surface.png", f"|x| at {found.stats.meta['surface_site']}, step 0"
        )
    summary = found.summary()
    ratio = found.samples.ratio_to_median()  # each prompt's conditional row (ditlens.core.rows)
    top1 = ratio.amax(-1)  # (steps, sites, samples)
    table = [["site", "top channels", "top-1 / median (mean)", "Jaccard prompts", "Jaccard steps"]]
    for s, (site, info) in enumerate(summary["sites"].items()):
        table.append(
            [
                site,
                str(info["top_channels"]),
                f"{float(top1[:, s].mean()):.1f}",
                _two(info["jaccard_across_prompts"]),
                _two(info["jaccard_across_steps"]),
            ]
        )
    numbers["find"] = {"top1_over_median_mean": float(top1.mean()), "sites": summary["sites"]}
    per_site = top1.mean((0, 2))  # (sites,)
    sections.append(
        Section(
            f"1. Find: the top-1 channel is {float(per_site.min()):.0f}x to {float(per_site.max()):.0f}x the median channel",
            f"Per site, the k={config.k} largest |mean over tokens| channels against the median channel, over "
            f"{len(prompts)} prompts and every denoising step (the title's range: the per-site mean over steps and prompts).",
            [
                ("find/top_vs_median.png", "top-1/2/3 vs median"),
                ("find/channel_atlas.png", "top-1 channel per site and step"),
                ("find/surface.png", "|x| over tokens x channels"),
            ],
            table,
        )
    )

    # 2. disrupt ------------------------------------------------------------------------------
    say("2/5 disrupt: zeroing top-k, bottom-k and random-k channels")
    dconfig = DisruptConfig(
        prompts=prompts, seeds=[config.seed], ks=config.disrupt_ks, random_draws=1, generation=settings
    )
    result = disrupt(pipe, dconfig)
    result.save(out / "disrupt")
    rules, ks, cells = result.grid_rows(0)
    plot_image_table(
        [[result.baseline[0]] + row for row in cells],
        out / "disrupt" / "grid.png",
        [f"{r}-k" for r in rules],
        ["none"] + [f"k={k}" for k in ks],
        title=prompts[0],
    )
    table = [["condition", "objects fully correct", "Frechet distance to renders", "PSNR to unedited (dB)"]]
    numbers["disrupt"] = {}
    by_rule: dict[str, dict[int, dict[str, float]]] = {}
    for condition, images in result.images.items():
        scores = builtin_scores(images, prompts)
        psnr = result.distances()[condition.label]["psnr_db"]
        numbers["disrupt"][condition.label] = {
            "full_object_accuracy": scores["full_object_accuracy"],
            "frechet_distance": scores["frechet_distance"],
            "psnr_db": psnr,
        }
        table.append(
            [
                condition.label,
                f"{scores['full_object_accuracy']:.2f}",
                f"{scores['frechet_distance']:.1f}",
                "inf" if psnr > 99 else f"{psnr:.1f}",
            ]
        )
        if condition.label != "none":
            by_rule.setdefault(condition.rule, {})[condition.k] = {
                "accuracy": scores["full_object_accuracy"],
                "frechet": scores["frechet_distance"],
            }
    base = numbers["disrupt"]["none"]
    verdict1 = disruption_verdict(
        {"accuracy": base["full_object_accuracy"], "frechet": base["frechet_distance"]}, by_rule
    )
    numbers["disrupt"]["verdict"] = verdict1.as_dict()
    sections.append(
        Section(
            f"2. Disrupt: on these {len(prompts)} prompts, {verdict1.headline.lower()}",
            verdict1.sentence()
            + " Same noise for every condition; channels re-selected per site, step and sample; one random "
            "draw. Few images: `ditlens bench findings` is the measurement.",
            [("disrupt/grid.png", "rows: rule, columns: k")],
            table,
        )
    )

    # 3. segment ------------------------------------------------------------------------------
    say("3/5 segment: K=2 masks from the massive channels")
    seg = segment_generated(pipe, SegmentConfig(prompts=prompts, seeds=[config.seed], k=config.k, generation=settings))
    truth = off_background_masks(seg.images, prompts)
    seg.save(out / "segment", truth)
    scores = seg.scores(truth)
    curves = {r: sc.per_site() for r, sc in scores.items()}
    best_site = seg.sites[int(curves["top"]["miou"].argmax())]
    plot_segment_overlays(seg, out / "segment" / "overlays.png", best_site, seg.steps // 2, truth)
    plot_miou_curves(
        {r: sc.miou.mean(-1) for r, sc in scores.items()},
        seg.sites,
        out / "segment" / "miou_per_site.png",
        f"{seg.foreground} rule (solid), oracle labelling (dotted)",
        oracle={r: sc.oracle.mean(-1) for r, sc in scores.items()},
    )
    numbers["segment"] = {
        r: {
            "best_site_miou": float(c["miou"].max()),
            "oracle_at_best_site": float(c["oracle"][int(c["miou"].argmax())]),
            "mean_over_sites": float(c["miou"].mean()),
        }
        for r, c in curves.items()
    }
    verdict2 = segmentation_verdict(
        {f"these {len(prompts)} images": {r: v["best_site_miou"] for r, v in numbers["segment"].items()}}, config.k
    )
    numbers["segment"]["verdict"] = verdict2.as_dict()
    table = [["channels", "mIoU at best site", "oracle labelling there", "mIoU mean over sites"]] + [
        [r, f"{v['best_site_miou']:.3f}", f"{v['oracle_at_best_site']:.3f}", f"{v['mean_over_sites']:.3f}"]
        for r, v in numbers["segment"].items()
        if r != "verdict"
    ]
    sections.append(
        Section(
            f"3. Segment: on these {len(prompts)} images, {verdict2.headline.lower()}",
            verdict2.sentence()
            + f" K=2 k-means on image tokens restricted to the channels; the '{seg.foreground}' rule names the "
            "subject; the oracle takes the better labelling of each image (an upper bound). Ground truth = pixels off the prompt's "
            "background colour (split backgrounds included here).",
            [
                ("segment/overlays.png", "images, truth, the top-1 channel's heat map and the masks' outlines"),
                ("segment/miou_per_site.png", "mIoU per site"),
            ],
            table,
        )
    )

    # 4. transport, text ----------------------------------------------------------------------
    say("4/5 transport (text): prompt interpolation strip")
    source, target = EXAMPLE_TRANSPORT_PAIRS[0]
    tconfig = TransportConfig(k=config.transport_k, generation=settings)
    strip = transport_text(
        pipe, source, target, tconfig, alphas=config.alphas, source_seed=config.seed, target_seed=config.seed + 1
    )
    strip.save(out / "transport_text")
    plot_image_table(
        [[strip.source, strip.target] + list(strip.transported)],
        out / "transport_text" / "strip.png",
        [""],
        ["source", "target", *[f"a={a:g}" for a in strip.alphas]],
    )
    classifier = AttributeClassifier.from_pretrained()  # loaded once for both transport sections
    moved = transport_scores(strip.transported, source, target, strip.target, classifier)
    numbers["transport_text"] = {"source": source, "target": target, "alphas": strip.alphas, "scores": moved}
    full = moved[-1]
    sections.append(
        Section(
            "4. Transport (text): the source's massive channels into the target's generation",
            f"Source: '{source}'. Target: '{target}' (another seed). Top-{config.transport_k} channels of the source, spatial mask "
            f"'{tconfig.mask}' (the measured default, docs/transport.md), at every site and step, with strength alpha. At alpha = "
            f"{strip.alphas[-1]:g} the classifier finds the source's colour {'' if full['colour_from_source'] else 'not '}and its shape "
            f"{'' if full['shape_from_source'] else 'not '}at the target's position (foreground IoU with the target alone "
            f"{full['mask_iou_with_target']:.2f}). One pair: `ditlens bench transport` is the measurement.",
            [("transport_text/strip.png", "interpolation strip")],
            [["alpha", "source's colour", "source's shape", "foreground IoU with the target alone"]]
            + [
                [
                    f"{a:g}",
                    "yes" if m["colour_from_source"] else "no",
                    "yes" if m["shape_from_source"] else "no",
                    f"{m['mask_iou_with_target']:.2f}",
                ]
                for a, m in zip(strip.alphas, moved)
            ],
        )
    )

    # 5. transport, image ---------------------------------------------------------------------
    say("5/5 transport (image): a reference's subject into a new prompt")
    ref_prompt, new_prompt = EXAMPLE_TRANSPORT_PAIRS[1]
    reference = renders([ref_prompt])[0]
    ires = transport_image(
        pipe, reference, new_prompt, tconfig, reference_prompt=ref_prompt, alphas=[0.5, 1.0], seed=config.seed
    )
    ires.save(out / "transport_image")
    plot_image_table(
        [[ires.source, ires.target] + list(ires.transported)],
        out / "transport_image" / "strip.png",
        [""],
        ["reference", "target alone", *[f"a={a:g}" for a in ires.alphas]],
    )
    took = transport_scores(ires.transported, ref_prompt, new_prompt, ires.target, classifier)
    numbers["transport_image"] = {
        "reference_prompt": ref_prompt,
        "target_prompt": new_prompt,
        "alphas": ires.alphas,
        "scores": took,
    }
    sections.append(
        Section(
            "5. Transport (image): a reference's massive channels into a new prompt's generation",
            f"Reference: a render of '{ref_prompt}', re-noised to each step's level. Target: '{new_prompt}'. "
            + " ".join(
                f"At alpha = {a:g} the classifier finds the reference's colour {'' if m['colour_from_source'] else 'not '}and its "
                f"shape {'' if m['shape_from_source'] else 'not '}at the target's position."
                for a, m in zip(ires.alphas, took)
            ),
            [("transport_image/strip.png", "reference, target alone, transported")],
        )
    )

    elapsed = time.perf_counter() - started
    numbers["meta"] = {
        "seconds": round(elapsed, 1),
        "commit": _commit(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out / "report.json").write_text(json.dumps(numbers, indent=1, default=str))
    intro = (
        f"Built-in model, seed {config.seed}, commit {numbers['meta']['commit']}, {elapsed:.0f} s on {platform.machine()} "
        f"({torch.get_num_threads()} threads). Reproduce: ditlens demo --out {shown}"
    )
    write_html(out / "index.html", "ditlens demo", intro, sections)


def _two(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"  # None: a single prompt or step, nothing to compare
