"""`ditlens demo`: all five capabilities on the built-in model, on a CPU, with a report.

find -> disrupt -> segment -> text transport (an interpolation strip) -> image transport,
each writing its pictures and numbers under one folder with an index.html. The folder is
written like every command's: whole at the end, or not at all (ditlens.io.outputs).
"""

from __future__ import annotations

import functools
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .builtin.examples import EXAMPLE_PROMPTS, EXAMPLE_TRANSPORT_PAIRS
from .disrupt import DisruptConfig, disrupt
from .find import FindConfig, find_channels
from .io.outputs import output_folder, write_atomic
from .metrics.classifier import AttributeClassifier
from .metrics.fidelity import builtin_scores, off_background_masks, renders, transport_scores
from .reporting.report import Section, commit, write_html
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
    started = time.perf_counter()
    numbers: dict[str, Any] = {}
    sections = []
    for i, (title, write_section) in enumerate(SECTIONS, start=1):
        say(f"{i}/{len(SECTIONS)} {title}")
        section, numbers[write_section.__name__.removeprefix("_")] = write_section(pipe, out, config)
        sections.append(section)
    elapsed = time.perf_counter() - started
    numbers["meta"] = {
        "seconds": round(elapsed, 1),
        "commit": commit(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    write_atomic(out / "report.json", json.dumps(numbers, indent=1, default=str))
    intro = (
        f"Built-in model, seed {config.seed}, commit {numbers['meta']['commit']}, {elapsed:.0f} s on "
        f"{platform.machine()} ({torch.get_num_threads()} threads). Reproduce: ditlens demo --out {shown}"
    )
    write_html(out / "index.html", "ditlens demo", intro, sections)


def _find(pipe: Any, out: Path, config: DemoConfig) -> tuple[Section, dict[str, Any]]:
    prompts = config.prompts
    found = find_channels(pipe, FindConfig(prompts=prompts, seeds=[config.seed], k=config.k))
    found.save(out / "find")
    found.plot(out / "find")
    summary = found.summary()
    top1 = found.samples.ratio_to_median().amax(-1)  # (steps, sites, samples): each prompt's conditional row
    table = [["site", "top channels", "top-1 / median (mean)", "Jaccard prompts", "Jaccard steps"]]
    for s, (site, info) in enumerate(summary["sites"].items()):
        jaccards = [_two(info["jaccard_across_prompts"]), _two(info["jaccard_across_steps"])]
        table.append([site, str(info["top_channels"]), f"{float(top1[:, s].mean()):.1f}", *jaccards])
    per_site = top1.mean((0, 2))  # (sites,)
    section = Section(
        f"1. Find: the top-1 channel is {float(per_site.min()):.0f}x to {float(per_site.max()):.0f}x the median "
        "channel",
        f"Per site, the k={config.k} largest |mean over tokens| channels against the median channel, over "
        f"{len(prompts)} prompts and every denoising step (the title's range: the per-site mean over steps and "
        "prompts).",
        [
            ("find/top_vs_median.png", "top-1/2/3 vs median"),
            ("find/channel_atlas.png", "top-1 channel per site and step"),
            ("find/surface.png", "|x| over tokens x channels"),
        ],
        table,
    )
    return section, {"top1_over_median_mean": float(top1.mean()), "sites": summary["sites"]}


def _disrupt(pipe: Any, out: Path, config: DemoConfig) -> tuple[Section, dict[str, Any]]:
    prompts = config.prompts
    dconfig = DisruptConfig(prompts=prompts, seeds=[config.seed], ks=config.disrupt_ks, random_draws=1)
    result = disrupt(pipe, dconfig)
    result.save(out / "disrupt")
    result.plot_grid(out / "disrupt" / "grid.png")
    table = [["condition", "objects fully correct", "Frechet distance to renders", "PSNR to unedited (dB)"]]
    numbers: dict[str, Any] = {}
    by_rule: dict[str, dict[int, dict[str, float]]] = {}
    for condition, images in result.images.items():
        scores = builtin_scores(images, prompts)
        accuracy, frechet = scores["full_object_accuracy"], scores["frechet_distance"]
        psnr = result.distances()[condition.label]["psnr_db"]
        numbers[condition.label] = {"full_object_accuracy": accuracy, "frechet_distance": frechet, "psnr_db": psnr}
        table.append([condition.label, f"{accuracy:.2f}", f"{frechet:.1f}", "inf" if psnr > 99 else f"{psnr:.1f}"])
        if condition.label != "none":
            by_rule.setdefault(condition.rule, {})[condition.k] = {"accuracy": accuracy, "frechet": frechet}
    base = numbers["none"]
    verdict = disruption_verdict(
        {"accuracy": base["full_object_accuracy"], "frechet": base["frechet_distance"]}, by_rule
    )
    numbers["verdict"] = verdict.as_dict()
    section = Section(
        f"2. Disrupt: on these {len(prompts)} prompts, {verdict.headline.lower()}",
        verdict.sentence() + " Same noise for every condition; channels re-selected per site, step and sample; one "
        "random draw. Few images: `ditlens bench findings` is the measurement.",
        [("disrupt/grid.png", "rows: rule, columns: k")],
        table,
    )
    return section, numbers


def _segment(pipe: Any, out: Path, config: DemoConfig) -> tuple[Section, dict[str, Any]]:
    prompts = config.prompts
    seg = segment_generated(pipe, SegmentConfig(prompts=prompts, seeds=[config.seed], k=config.k))
    assert seg.images is not None  # a generated segment keeps its images
    truth = off_background_masks(seg.images, prompts)
    seg.save(out / "segment", truth)
    scores = seg.scores(truth)
    curves = {r: sc.per_site() for r, sc in scores.items()}
    best_site = seg.sites[int(curves["top"]["miou"].argmax())]
    seg.plot_overlays(out / "segment" / "overlays.png", best_site, seg.steps // 2, truth)
    seg.plot_scores(scores, out / "segment" / "miou_per_site.png", f"{seg.foreground} rule (solid), oracle (dotted)")
    numbers: dict[str, Any] = {
        r: {
            "best_site_miou": float(c["miou"].max()),
            "oracle_at_best_site": float(c["oracle"][int(c["miou"].argmax())]),
            "mean_over_sites": float(c["miou"].mean()),
        }
        for r, c in curves.items()
    }
    best = {r: v["best_site_miou"] for r, v in numbers.items()}
    verdict = segmentation_verdict({f"these {len(prompts)} images": best}, config.k)
    table = [["channels", "mIoU at best site", "oracle labelling there", "mIoU mean over sites"]] + [
        [r, f"{v['best_site_miou']:.3f}", f"{v['oracle_at_best_site']:.3f}", f"{v['mean_over_sites']:.3f}"]
        for r, v in numbers.items()
    ]
    numbers["verdict"] = verdict.as_dict()
    section = Section(
        f"3. Segment: on these {len(prompts)} images, {verdict.headline.lower()}",
        verdict.sentence() + f" K=2 k-means on image tokens restricted to the channels; the '{seg.foreground}' "
        "rule names the subject; the oracle takes the better labelling of each image (an upper bound). Ground "
        "truth = pixels off the prompt's background colour (split backgrounds included here).",
        [
            ("segment/overlays.png", "images, truth, the top-1 channel's heat map and the masks' outlines"),
            ("segment/miou_per_site.png", "mIoU per site"),
        ],
        table,
    )
    return section, numbers


@functools.cache
def _classifier() -> AttributeClassifier:
    """The shipped attribute classifier, loaded once for both transport sections."""
    return AttributeClassifier.from_pretrained()


def _moved(alpha: float, m: dict[str, Any], whose: str) -> str:
    colour, shape = ("" if m["colour_from_source"] else "not "), ("" if m["shape_from_source"] else "not ")
    found = f"{whose} colour {colour}and its shape {shape}"
    return f"At alpha = {alpha:g} the classifier finds {found}at the target's position"


def _transport_text(pipe: Any, out: Path, config: DemoConfig) -> tuple[Section, dict[str, Any]]:
    source, target = EXAMPLE_TRANSPORT_PAIRS[0]
    tconfig = TransportConfig(k=config.transport_k)
    strip = transport_text(
        pipe, source, target, tconfig, alphas=config.alphas, source_seed=config.seed, target_seed=config.seed + 1
    )
    strip.save(out / "transport_text")
    strip.plot_strip(out / "transport_text" / "strip.png")
    assert strip.target is not None  # include_target is on by default
    moved = transport_scores(strip.transported, source, target, strip.target, _classifier())
    full = moved[-1]
    table = [["alpha", "source's colour", "source's shape", "foreground IoU with the target alone"]]
    for a, m in zip(strip.alphas, moved):
        yes = ["yes" if m["colour_from_source"] else "no", "yes" if m["shape_from_source"] else "no"]
        table.append([f"{a:g}", *yes, f"{m['mask_iou_with_target']:.2f}"])
    section = Section(
        "4. Transport (text): the source's massive channels into the target's generation",
        f"Source: '{source}'. Target: '{target}' (another seed). Top-{config.transport_k} channels of the source, "
        f"spatial mask '{tconfig.mask}' (the measured default, docs/transport.md), at every site and step, with "
        f"strength alpha. {_moved(strip.alphas[-1], full, 'the source' + chr(39) + 's')} (foreground IoU with the "
        f"target alone {full['mask_iou_with_target']:.2f}). One pair: `ditlens bench transport` is the measurement.",
        [("transport_text/strip.png", "interpolation strip")],
        table,
    )
    return section, {"source": source, "target": target, "alphas": strip.alphas, "scores": moved}


def _transport_image(pipe: Any, out: Path, config: DemoConfig) -> tuple[Section, dict[str, Any]]:
    ref_prompt, new_prompt = EXAMPLE_TRANSPORT_PAIRS[1]
    reference = renders([ref_prompt])[0]
    tconfig = TransportConfig(k=config.transport_k)
    ires = transport_image(
        pipe, reference, new_prompt, tconfig, reference_prompt=ref_prompt, alphas=[0.5, 1.0], seed=config.seed
    )
    ires.save(out / "transport_image")
    ires.plot_strip(out / "transport_image" / "strip.png")
    assert ires.target is not None  # include_target is on by default
    took = transport_scores(ires.transported, ref_prompt, new_prompt, ires.target, _classifier())
    section = Section(
        "5. Transport (image): a reference's massive channels into a new prompt's generation",
        f"Reference: a render of '{ref_prompt}', re-noised to each step's level. Target: '{new_prompt}'. "
        + " ".join(_moved(a, m, "the reference" + chr(39) + "s") + "." for a, m in zip(ires.alphas, took)),
        [("transport_image/strip.png", "reference, target alone, transported")],
    )
    return section, {"reference_prompt": ref_prompt, "target_prompt": new_prompt, "alphas": ires.alphas, "scores": took}


#: the demo's sections, in order: (what the progress line says, the function that writes it)
SECTIONS: list[tuple[str, Callable[[Any, Path, DemoConfig], tuple[Section, dict[str, Any]]]]] = [
    ("find: recording channel statistics", _find),
    ("disrupt: zeroing top-k, bottom-k and random-k channels", _disrupt),
    ("segment: K=2 masks from the massive channels", _segment),
    ("transport (text): prompt interpolation strip", _transport_text),
    ("transport (image): a reference's subject into a new prompt", _transport_image),
]


def _two(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"  # None: a single prompt or step, nothing to compare
