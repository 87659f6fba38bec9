"""The subcommands that run one capability: arguments -> config -> capability -> save, plot, print.

Each imports the library inside its body (torch loads only once a command runs).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..io.outputs import output_folder
from . import run
from .options import UsageError, shorten


def cmd_generate(args: argparse.Namespace) -> None:
    from ..generation import generate, to_pil
    from ..reporting.plots import image_grid

    prompts = run.prompts(args)
    images = generate(run.load(args), prompts, args.seeds, run.settings(args), run.prompt_kwargs(args))
    pil = to_pil(images)
    with output_folder(args.out) as tmp:
        for i, image in enumerate(pil):
            image.save(tmp / f"image_{i:03d}.png")
        image_grid(pil, tmp / "grid.png", columns=len(prompts), scale=4 if images.shape[-1] <= 64 else 1)
        run.write_json(
            tmp / "generate.json", {"prompts": prompts, "seeds": args.seeds, "model": args.model or "builtin"}
        )
    run.say(args, f"wrote {len(pil)} images and grid.png to {args.out}/")


def cmd_find(args: argparse.Namespace) -> None:
    from ..find import FindConfig, find_channels

    config = FindConfig(
        prompts=run.prompts(args),
        seeds=args.seeds,
        k=args.k,
        statistic=args.statistic,
        surface_site=args.site,
        surface_step=args.step,
        generation=run.settings(args),
    )
    result = find_channels(run.load(args), config, prompt_kwargs=run.prompt_kwargs(args))
    with output_folder(args.out) as tmp:
        result.save(tmp)
        figures = result.plot(tmp)
    run.say(args, f"wrote {args.out}/: stats.safetensors, channels.json, " + ", ".join(p.name for p in figures))
    for site, info in result.summary()["sites"].items():
        run.say(
            args,
            f"  {site:32s} top channels {info['top_channels']}  x median {info['ratio_to_median']}  "
            f"Jaccard prompts {run.two(info['jaccard_across_prompts'])} steps {run.two(info['jaccard_across_steps'])}",
        )


def cmd_disrupt(args: argparse.Namespace) -> None:
    from ..disrupt import disrupt

    config, scorers = _disrupt_config(args), run.scorers(args)
    with run.condition_progress(args, "conditions") as progress:
        result = disrupt(run.load(args), config, prompt_kwargs=run.prompt_kwargs(args), progress=progress)
    scores = scorers.score(result)
    with output_folder(args.out) as tmp:
        result.save(tmp)
        result.plot_curves(scores, tmp)
        result.plot_grid(tmp / "grid.png")
        run.write_json(tmp / "metrics.json", {"scores": scores, "not_measured": scorers.not_measured()})
    run.say(args, f"wrote {args.out}/: grid.png, metrics.json, disrupt.json, one PNG per condition and image")
    _print_disrupt_scores(args, scores, scorers.not_measured())


def _disrupt_config(args: argparse.Namespace):
    from ..disrupt import DisruptConfig

    prompts = run.prompts(args, captions=True)
    _check_frechet_samples(args, prompts)
    return DisruptConfig(
        prompts=prompts,
        seeds=args.seeds,
        ks=args.ks,
        rules=args.rules,
        factor=args.factor,
        random_draws=args.draws,
        statistic=args.statistic,
        sites=args.sites,
        step_window=run.window(args),
        generation=run.settings(args),
    )


def _check_frechet_samples(args: argparse.Namespace, prompts: list[str]) -> None:
    if run.exact_metrics(args) and len(prompts) * len(args.seeds) < 2:
        raise UsageError(
            "disrupt on the built-in model scores each condition by a Frechet distance over its images, which "
            f"needs at least 2 (prompts x seeds); got 1 (--prompt {shorten(prompts[0])}, --seeds {args.seeds[0]}). "
            "Add a prompt or a seed."
        )


def _print_disrupt_scores(args: argparse.Namespace, scores: dict[str, dict[str, Any]], missing: list[str]) -> None:
    from ..metrics.scores import DISRUPT_COLUMNS, DISRUPT_FORMATS

    for label, row in scores.items():
        shown = [f"PSNR to unedited {row['psnr_db']:6.1f} dB"]
        shown += [f"{DISRUPT_COLUMNS[key]} {row[key]:{fmt}}" for key, fmt in DISRUPT_FORMATS.items() if key in row]
        run.say(args, f"  {label:12s} " + "  ".join(shown))
    for sentence in missing:
        run.say(args, f"  not measured: {sentence}")


def cmd_segment(args: argparse.Namespace) -> None:
    from ..segment import segment_generated

    config = _segment_config(args)
    read_truth, _ = run.truth_reader(args, len(config.prompts) * len(config.seeds))  # before the pipeline loads
    result = segment_generated(run.load(args), config, prompt_kwargs=run.prompt_kwargs(args))
    truth = read_truth(result) if read_truth else _exact_truth(args, result, config.prompts)
    site, step = result.view(args.site, args.step)
    scores = result.scores(truth) if truth is not None else None
    with output_folder(args.out) as tmp:
        result.save(tmp, truth)
        figures = [result.plot_overlays(tmp / "overlays.png", site, step, truth)]
        if scores is not None:
            title = f"K=2 masks vs ground truth (k={args.k}, {args.foreground} rule; dotted: oracle labelling)"
            figures.append(result.plot_scores(scores, tmp / "miou_per_site.png", title))
    _print_segment_scores(args, result.sites, scores)
    run.say(args, f"wrote {args.out}/: masks.safetensors, segment.json, " + ", ".join(p.name for p in figures))


def _segment_config(args: argparse.Namespace):
    from ..segment import SegmentConfig

    return SegmentConfig(
        prompts=run.prompts(args, captions=True),
        seeds=args.seeds,
        k=args.k,
        rules=args.rules,
        statistic=args.statistic,
        foreground=args.foreground,
        generation=run.settings(args),
    )


def _exact_truth(args: argparse.Namespace, result: Any, prompts: list[str]) -> Any:
    """The built-in model's own truth: the pixels off its known flat background (world v1)."""
    if not run.exact_metrics(args):
        return None
    from ..metrics.fidelity import off_background_masks

    return off_background_masks(result.images, prompts * len(args.seeds))


def _print_segment_scores(args: argparse.Namespace, sites: list[str], scores: dict[str, Any] | None) -> None:
    if scores is None:
        run.say(args, "not measured: mIoU (no ground truth: give --truth-dir DIR or --segmenter PATH)")
        return
    run.say(
        args,
        f"mIoU at the best site (mean over steps), '{args.foreground}' rule | oracle labelling | "
        "rule picked the oracle's cluster:",
    )
    for rule, sc in scores.items():
        curves = sc.per_site()
        best = int(curves["miou"].argmax())
        run.say(
            args,
            f"  {rule:8s} {float(curves['miou'][best]):.3f} at {sites[best]} | {float(curves['oracle'][best]):.3f} | "
            f"{float(curves['agreement'][best]):.2f}  (mean over sites {float(curves['miou'].mean()):.3f})",
        )


def cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import DemoConfig, run_demo
    from ..io.outputs import output_lock

    with output_lock(args.out):  # a refused or busy folder is said now, not after the model loads and the demo runs
        index = run_demo(run.load(args), args.out, DemoConfig(seed=args.seed), say=run.sayer(args))
    run.say(args, f"wrote {index} (open it in a browser)")


def cmd_sweep(args: argparse.Namespace) -> None:
    from ..sweep import SweepConfigError, load_config, merge, run_sweep

    try:
        config = load_config(args.config)
        if args.merge:
            merge(config, args.out, say=run.sayer(args))
        else:
            run_sweep(config, args.out, allow_download=args.allow_download, quiet=args.quiet, say=print)
    except (SweepConfigError, ValueError, OSError) as err:
        # under torchrun every rank reads the same config: let rank 0 alone say what is wrong
        if int(os.environ.get("RANK", "0")) > 0 and not os.environ.get("DITLENS_DEBUG"):
            raise SystemExit(2) from err
        raise


def cmd_app(args: argparse.Namespace) -> None:
    if args.embeds:
        raise UsageError(
            "ditlens app sends the typed prompts through the model's text encoders; --embeds is not supported here."
        )
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise UsageError("ditlens app needs Gradio, which is not installed: pip install -e '.[app]'")
    from ..app import check_address, serve

    check_address(args.host, args.port)  # before the model loads
    serve(run.load(args), args.model, host=args.host, port=args.port, quiet=args.quiet)
