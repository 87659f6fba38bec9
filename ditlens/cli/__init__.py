"""`ditlens` command line: thin subcommands over the library.

Bad input exits with code 2 and a one-paragraph message (no traceback); set DITLENS_DEBUG=1
to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io.outputs import output_folder

EXAMPLES = {
    "generate": """examples:
  ditlens generate --prompt "a large red circle in the center on a gray background" --seeds 0 1 2 3
  ditlens generate --prompts-file prompts.txt --steps 24 --guidance 5 --out runs/gen

prompts.txt (one prompt per line):
  a large red circle in the center on a gray background
  a small blue square on the left and a large yellow triangle on the right on a black and white background""",
    "disrupt": """examples:
  ditlens disrupt                                   # built-in model: top/bottom/random-k, k = 1 2 4 8
  ditlens disrupt --ks 1 2 4 --rules top random --draws 5 --window 0 4
  ditlens disrupt --model ./flux-schnell --dtype bfloat16 --device cuda --prompt "a corgi" --steps 4""",
    "segment": """examples:
  ditlens segment                                   # built-in model, mIoU against exact ground truth
  ditlens segment --k 2 --site single_transformer_blocks.2 --step 4
  ditlens segment --model ./flux-dev --device cuda --dtype bfloat16 --prompts-file p.txt --truth-dir masks/""",
    "transport": """examples:
  ditlens transport --source "a large red circle in the center on a gray background" \\
                    --target "a large blue square in the center on a gray background"
  ditlens transport --source "a large red circle in the center on a gray background" \\
                    --target "a large blue square in the center on a gray background" \\
                    --alpha 0.5 --mask union --window 0 4
  ditlens transport --reference runs/transport/source.png --out runs/transport-image \\
                    --reference-prompt "a large red circle in the center on a gray background" \\
                    --target "a large blue square in the center on a black background"   # the first run's source
  ditlens transport --reference runs/transport/source.png --reference-path invert --out runs/transport-invert \\
                    --target "a large blue square in the center on a gray background"   # ODE inversion""",
    "interpolate": """examples:
  ditlens interpolate --source "a large red circle in the center on a gray background" \\
                      --target "a large blue square in the center on a gray background" --alphas 0 0.25 0.5 0.75 1
  ditlens interpolate --source "a large red circle in the center on a gray background" \\
                      --target "a large blue square in the center on a gray background" \\
                      --over k --ks 2 8 32 64   # at alpha 1
  ditlens interpolate --source "a large red circle in the center on a gray background" \\
                      --target "a large blue square in the center on a gray background" \\
                      --over window --windows 0:2 0:4 4:8""",
    "demo": """examples:
  ditlens demo                      # writes runs/demo/index.html (open it in a browser)
  ditlens demo --out /tmp/demo --seed 3""",
    "sweep": """examples:
  ditlens sweep study.toml                                  # one process; rerun to finish after a crash
  torchrun --nproc-per-node 4 -m ditlens.cli sweep study.toml   # 4 processes (GPUs with device = "cuda")
  ditlens sweep study.toml --merge                          # tables (CSV, JSON) and a figure in OUT/summary/

study.toml (TOML; every key in docs/scale.md):
  seeds = [0, 1]
  prompts = ["a large red circle in the center on a gray background"]
  [model]
  name = "builtin"
  [generation]
  steps = 8
  [[jobs]]
  command = "disrupt"
  rule = ["top", "random"]
  k = [1, 4]""",
    "bench": """examples:
  ditlens bench findings --quick          # findings 1 and 2 on the built-in model, < 10 min on a 2-core CPU
  ditlens bench transport --quick         # finding 3, both uses and the chosen defaults
  ditlens bench findings --device cuda    # the full run (GPU recommended)
  ditlens bench findings --quick --model runs/v2-s/model --classifier shipped
                                          # a model `python -m ditlens.builtin.train` wrote (world v1 or v2)
  ditlens bench findings --model ./flux-schnell --prompts prompts.txt --segmenter ./segformer --clip ./clip
                                          # the paper's protocol on a real pipeline (docs/scores.md)
  ditlens bench transport --model ./flux-schnell --pairs pairs.txt --clip ./clip --seeds 0 1
                                          # transport vs random-k, text-embedding interpolation, pixel blending

pairs.txt (one pair per line, source prompt | target prompt):
  a red sports car on a street | a bicycle on a street
  a corgi on a sofa | a cat on a sofa""",
    "app": """examples:
  ditlens app                                    # built-in model at http://127.0.0.1:7860
  ditlens app --port 8080
  ditlens app --model black-forest-labs/FLUX.1-schnell --dtype bfloat16 --device cuda""",
    "find": """examples:
  ditlens find                                   # built-in model, example prompts
  ditlens find --prompt "a large red circle on the left on a gray background" --seeds 0 1 2 --k 2
  ditlens find --model black-forest-labs/FLUX.1-schnell --dtype bfloat16 --device cuda \\
      --prompt "a photo of a corgi" --steps 4 --out runs/flux-find""",
}


class UsageError(ValueError):
    """Bad command-line input that the library could not see (e.g. a missing prompt)."""


# ---- shared options --------------------------------------------------------------------------


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="'builtin' (default), a local diffusers folder, or a hub id")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    g.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    g.add_argument("--allow-download", action="store_true", help="allow fetching a hub id (offline by default)")
    g.add_argument("--cpu-offload", action="store_true", help="diffusers model CPU offload (large models)")
    g.add_argument(
        "--embeds",
        default=None,
        help="safetensors file of precomputed prompt embeddings (keys are pipeline arguments, "
        "e.g. prompt_embeds, pooled_prompt_embeds) used instead of the text encoders",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_prompt_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable)")
    g.add_argument("--prompts-file", default=None, help="text file, one prompt per line")
    g.add_argument("--seeds", type=int, nargs="+", default=[0], help="generator seeds (default: 0)")
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
    g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    g.add_argument("--height", type=int, default=None, help="image height in pixels (default: the pipeline's)")
    g.add_argument("--width", type=int, default=None, help="image width in pixels (default: the pipeline's)")
    _add_cfg_options(g)


def _add_cfg_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--true-cfg",
        type=float,
        default=None,
        metavar="SCALE",
        help="FLUX.1 / Qwen-Image true CFG: > 1 adds a separate unconditional call per step (needs --negative-prompt)",
    )
    g.add_argument("--negative-prompt", default=None, help="negative prompt (default: the pipeline's)")


def _add_clip_option(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--clip",
        default=None,
        metavar="PATH",
        help="a local CLIPModel folder: adds CLIP score and CLIP-I to the scores (any model; nothing is downloaded)",
    )


def shorten(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters with the full length named (a 10,000-word
    prompt is not echoed whole)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}... ({len(str(value)):,} characters)"


#: bounds of the generation options, checked before anything loads: wide enough for every
#: supported model (FLUX.1 at 2048 px, 50-step schedules), narrow enough that a typo such
#: as --height 100000 is an error, not an hour of allocation
MAX_STEPS = 1000
MAX_SIDE = 8192
MAX_SEED = 2**63 - 1  # torch.Generator takes 64 bits; JSON and numpy keep 63 exactly


def _check_generation_args(args: argparse.Namespace) -> None:
    """The options every generating command shares, checked before any model loads."""
    import math

    k = getattr(args, "k", None)  # its upper bound, the model's hidden size, is checked once the model is known
    if k is not None and k < 1:
        raise UsageError(f"--k must be a whole number from 1 to the model's hidden size; got {k}.")
    ks = getattr(args, "ks", None)
    if ks is not None and any(value < 0 for value in ks):
        raise UsageError(
            f"--ks must be whole numbers from 0 (the unedited run) to the model's hidden size; got {min(ks)}."
        )
    steps = getattr(args, "steps", None)
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"--steps must be a whole number from 1 to {MAX_STEPS}; got {steps}.")
    for name in ("height", "width"):
        value = getattr(args, name, None)
        if value is not None and not 1 <= value <= MAX_SIDE:
            raise UsageError(
                f"--{name} must be from 1 to {MAX_SIDE} pixels (leave it out for the pipeline's default); got {value}."
            )
    guidance = getattr(args, "guidance", None)
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise UsageError(f"--guidance must be a finite number >= 0; got {guidance}.")
    true_cfg = getattr(args, "true_cfg", None)
    if true_cfg is not None and not (math.isfinite(true_cfg) and true_cfg >= 1):
        raise UsageError(f"--true-cfg must be a finite number >= 1 (1 = off); got {true_cfg}.")
    seeds = getattr(args, "seeds", None)
    if seeds is not None:
        _check_seeds("--seeds", seeds)
    from ..metrics.folders import check_clip_folder, check_segmenter_folder

    for name, check in (("clip", check_clip_folder), ("segmenter", check_segmenter_folder)):
        if getattr(args, name, None):
            check(getattr(args, name))
    for name in ("seed", "source_seed", "target_seed"):
        if getattr(args, name, None) is not None:
            _check_seeds(f"--{name.replace('_', '-')}", [getattr(args, name)])
    if getattr(args, "mask_image", None) and getattr(args, "mask", "user") != "user":
        raise UsageError(
            f"--mask-image is used with --mask user only; got --mask {args.mask}. Add --mask user, or leave --mask-image out."
        )
    for name in ("prompt", "negative_prompt", "source", "target", "reference_prompt"):
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and not value.strip() and name not in ("negative_prompt", "reference_prompt"):
                raise UsageError(f"--{name.replace('_', '-')} is empty; give a prompt with at least one word.")


def _check_seeds(option: str, seeds: list[int]) -> None:
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise UsageError(f"{option}: seeds are whole numbers from 0 to 2**63 - 1; got {shorten(bad[0])}.")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UsageError(f"{option}: seed {twice[0]} is given twice; each seed is one sample.")


def _read_prompts_file(name: str) -> list[str]:
    path = Path(name)
    if path.is_dir():
        raise UsageError(f"--prompts-file {name!r} is a folder; give a text file with one prompt per line.")
    if not path.is_file():
        raise FileNotFoundError(f"Prompts file {name!r} does not exist.")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no part of the first prompt
    except UnicodeDecodeError as err:
        raise UsageError(
            f"--prompts-file {name!r} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8."
        ) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"--prompts-file {name!r} holds no prompts (one per line).")
    return prompts


def _prompts(args: argparse.Namespace, model: str | None) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += _read_prompts_file(args.prompts_file)
    if not prompts and model in (None, "builtin"):  # the shipped model's example prompts (not a trained folder's)
        from ..builtin.examples import EXAMPLE_PROMPTS

        prompts = list(EXAMPLE_PROMPTS)
    if not prompts and args.embeds:
        rows = _prompt_kwargs(args)["prompt_embeds"].shape[0]
        prompts = [f"<embeds row {i}>" for i in range(rows)]  # labels only: the embeddings condition
    if not prompts:
        raise UsageError("Give prompts with --prompt or --prompts-file (or --embeds).")
    return prompts


def _load(args: argparse.Namespace) -> Any:
    from diffusers.utils import logging as diffusers_logging

    from ..models import load_pipeline

    diffusers_logging.set_verbosity_error()  # e.g. the accelerate notice: not actionable here
    if args.quiet:
        diffusers_logging.disable_progress_bar()

    pipe = load_pipeline(
        args.model,
        dtype=args.dtype,
        device=args.device,
        allow_download=args.allow_download,
        cpu_offload=args.cpu_offload,
        without_text_encoders=bool(args.embeds),
    )
    pipe.set_progress_bar_config(disable=args.quiet, leave=False)
    return pipe


def _prompt_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.embeds:
        return None
    from safetensors.torch import load_file

    path = Path(args.embeds)
    if not path.is_file():
        raise FileNotFoundError(f"Embeddings file {args.embeds!r} does not exist.")
    try:
        tensors = load_file(str(path), device=args.device)
    except Exception as err:
        raise ValueError(f"Embeddings file {args.embeds!r} is not a readable safetensors file ({err}).") from None
    if "prompt_embeds" not in tensors:
        raise ValueError(
            f"Embeddings file {args.embeds!r} has no 'prompt_embeds' tensor; it holds: {', '.join(tensors)}."
        )
    return tensors


def _check_builtin_words(args: argparse.Namespace, prompts: list[str], captions: bool = False) -> None:
    """On the built-in model: every word known, and with `captions`, every prompt a caption
    its grammar parses (the commands that score against the caption: disrupt, segment)."""
    world = _builtin_world(args)
    if world is not None:
        from ..builtin.scenes import CaptionError, UnknownWordError
        from ..builtin.text_encoder import scenes_of

        scenes = scenes_of(world)  # the grammar of the model's world; its errors subclass v1's
        for prompt in prompts:
            try:
                scenes.parse_caption(prompt) if captions else scenes.check_words(prompt)
            except (UnknownWordError, CaptionError) as err:
                if len(prompt) > 80:  # the message echoes the prompt: name it shortened
                    raise UsageError(str(err).replace(repr(prompt), shorten(prompt))) from None
                raise


def _two(value: float | None) -> str:
    """Two decimals, or "n/a" where a score has nothing to compare (a single prompt or seed)."""
    return "n/a" if value is None else f"{value:.2f}"


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message)


def _settings(args: argparse.Namespace):
    from ..generation import GenerationSettings

    return GenerationSettings(
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        height=getattr(args, "height", None),
        width=getattr(args, "width", None),
        true_cfg_scale=getattr(args, "true_cfg", None),
        negative_prompt=getattr(args, "negative_prompt", None),
    )


def _window(args: argparse.Namespace) -> tuple[int, int] | None:
    return tuple(args.window) if args.window else None


def _is_builtin(args: argparse.Namespace) -> bool:
    """The built-in model, or a folder of its family (written by `python -m ditlens.builtin.train`)."""
    from ..models import is_builtin_family

    return is_builtin_family(args.model)


def _builtin_world(args: argparse.Namespace) -> str | None:
    """The world of a built-in-family model ("v1", "v2"), None for any other model."""
    from ..models import builtin_world

    return builtin_world(args.model)


def _exact_metrics(args: argparse.Namespace) -> bool:
    """The built-in exact metrics (classifier, renders, off-background truth) apply: world v1 only."""
    return _builtin_world(args) == "v1"


def _scorers(args: argparse.Namespace):
    """The built-in metrics on the built-in model, and the CLIP of --clip on any model; loaded
    once, before the pipeline (a CLIP that fails to load costs no generation)."""
    from ..metrics.scores import load_scorers

    if not hasattr(args, "loaded_scorers"):
        args.loaded_scorers = load_scorers(getattr(args, "clip", None), _exact_metrics(args), args.device)
    return args.loaded_scorers


def _write_json(path: Path, data: Any) -> Path:
    import json

    path.write_text(json.dumps(data, indent=1, default=str))  # inside an output_folder: whole or not at all
    return path


def _progress(args: argparse.Namespace, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=args.quiet, leave=False)


# ---- subcommands -------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> None:
    from ..generation import generate, to_pil
    from ..reporting.plots import image_grid

    prompts = _prompts(args, args.model)
    _check_builtin_words(args, prompts)
    pipe = _load(args)
    images = generate(pipe, prompts, args.seeds, _settings(args), _prompt_kwargs(args))
    out = Path(args.out)
    pil = to_pil(images)
    with output_folder(out) as tmp:
        for i, image in enumerate(pil):
            image.save(tmp / f"image_{i:03d}.png")
        image_grid(pil, tmp / "grid.png", columns=len(prompts), scale=4 if images.shape[-1] <= 64 else 1)
        _write_json(tmp / "generate.json", {"prompts": prompts, "seeds": args.seeds, "model": args.model or "builtin"})
    _say(args, f"wrote {len(pil)} images and grid.png to {out}/")


def cmd_disrupt(args: argparse.Namespace) -> None:
    from ..disrupt import DisruptConfig, disrupt
    from ..metrics.scores import DISRUPT_COLUMNS, DISRUPT_CURVES, DISRUPT_FORMATS, disrupt_scores, score_curves
    from ..reporting.plots import plot_image_table, plot_metric_over_k

    prompts = _prompts(args, args.model)
    _check_builtin_words(args, prompts, captions=True)
    if _exact_metrics(args) and len(prompts) * len(args.seeds) < 2:
        raise UsageError(
            "disrupt on the built-in model scores each condition by a Frechet distance over its images, which "
            f"needs at least 2 (prompts x seeds); got 1 (--prompt {shorten(prompts[0])}, --seeds {args.seeds[0]}). "
            "Add a prompt or a seed."
        )
    config = DisruptConfig(
        prompts=prompts,
        seeds=args.seeds,
        ks=args.ks,
        rules=args.rules,
        factor=args.factor,
        random_draws=args.draws,
        statistic=args.statistic,
        sites=args.sites,
        steps=_window(args),
        generation=_settings(args),
    )
    scorers = _scorers(args)
    pipe = _load(args)
    bar = _progress(args, 0, "conditions")

    def progress(i: int, n: int, label: str) -> None:
        bar.total = n
        bar.set_postfix_str(label)
        bar.update(1 if i else 0)

    result = disrupt(pipe, config, prompt_kwargs=_prompt_kwargs(args), progress=progress)
    bar.close()
    scores = disrupt_scores(result, scorers)
    out = Path(args.out)
    rules, ks, cells = result.grid_rows(0)
    with output_folder(out) as tmp:
        result.save(tmp)
        for key, (label, title) in DISRUPT_CURVES.items():
            curves = score_curves(scores, key, config.rules)
            if curves:
                plot_metric_over_k(curves, tmp / f"{key}_over_k.png", label, title)
        _write_json(tmp / "metrics.json", {"scores": scores, "not_measured": scorers.not_measured()})
        plot_image_table(
            [[result.baseline[0]] + row for row in cells],
            tmp / "grid.png",
            [f"{r}-k" for r in rules],
            ["none"] + [f"k={k}" for k in ks],
            title=f"zeroing channels: {prompts[0]}" if len(prompts[0]) < 90 else "zeroing channels",
        )
    _say(args, f"wrote {out}/: grid.png, metrics.json, disrupt.json, one PNG per condition and image")
    for label, row in scores.items():
        shown = [f"PSNR to unedited {row['psnr_db']:6.1f} dB"]
        shown += [f"{DISRUPT_COLUMNS[key]} {row[key]:{fmt}}" for key, fmt in DISRUPT_FORMATS.items() if key in row]
        _say(args, f"  {label:12s} " + "  ".join(shown))
    for missing in scorers.not_measured():
        _say(args, f"  not measured: {missing}")


def cmd_segment(args: argparse.Namespace) -> None:
    from ..io.images import load_mask_folder
    from ..reporting.plots import plot_miou_curves, plot_segment_overlays
    from ..segment import SegmentConfig, segment_generated

    prompts = _prompts(args, args.model)
    _check_builtin_words(args, prompts, captions=True)
    config = SegmentConfig(
        prompts=prompts,
        seeds=args.seeds,
        k=args.k,
        rules=args.rules,
        statistic=args.statistic,
        foreground=args.foreground,
        generation=_settings(args),
    )
    if args.truth_dir:  # count and readability now; their size once the images exist
        from ..io.images import check_mask_folder

        check_mask_folder(args.truth_dir, len(prompts) * len(args.seeds))
    segmenter = None
    if args.segmenter:  # loaded (and its labels checked) before the pipeline
        from ..metrics.segmenter import Segmenter

        segmenter = Segmenter.from_pretrained(args.segmenter, args.device, args.background_labels)
    pipe = _load(args)
    result = segment_generated(pipe, config, prompt_kwargs=_prompt_kwargs(args))
    n = result.images.shape[0]
    truth = None
    if args.truth_dir:
        truth = load_mask_folder(args.truth_dir, n, result.image_size)
    elif segmenter is not None:  # the truth is the segmenter's reading of the generated images
        truth = segmenter.foreground(result.images)
    elif _exact_metrics(args):
        from ..metrics.fidelity import off_background_masks

        truth = off_background_masks(result.images, prompts * len(args.seeds))
    site = args.site or result.sites[len(result.sites) // 2]
    if site not in result.sites:
        raise ValueError(f"Unknown site {site!r}. Sites of this model: {', '.join(result.sites)}.")
    step = result.steps // 2 if args.step is None else args.step
    if not 0 <= step < result.steps:
        raise ValueError(f"Step {step} is outside the schedule: 0..{result.steps - 1}.")
    out = Path(args.out)
    scores = result.scores(truth) if truth is not None else None
    with output_folder(out) as tmp:
        result.save(tmp, truth)
        plot_segment_overlays(result, tmp / "overlays.png", site, step, truth)
        if scores is not None:
            plot_miou_curves(
                {r: sc.miou.mean(-1) for r, sc in scores.items()},
                result.sites,
                tmp / "miou_per_site.png",
                f"K=2 masks vs ground truth (k={args.k}, {args.foreground} rule; dotted: oracle labelling)",
                oracle={r: sc.oracle.mean(-1) for r, sc in scores.items()},
            )
    if scores is not None:
        _say(
            args,
            f"mIoU at the best site (mean over steps), '{args.foreground}' rule | oracle labelling | rule picked the oracle's cluster:",
        )
        for rule, sc in scores.items():
            curves = sc.per_site()
            best = int(curves["miou"].argmax())
            _say(
                args,
                f"  {rule:8s} {float(curves['miou'][best]):.3f} at {result.sites[best]} | {float(curves['oracle'][best]):.3f} | "
                f"{float(curves['agreement'][best]):.2f}  (mean over sites {float(curves['miou'].mean()):.3f})",
            )
    if truth is None:
        _say(args, "not measured: mIoU (no ground truth: give --truth-dir DIR or --segmenter PATH)")
    _say(
        args,
        f"wrote {out}/: masks.safetensors, segment.json, overlays.png"
        + (", miou_per_site.png" if truth is not None else ""),
    )


def _transport_config(args: argparse.Namespace):
    from ..transport import TransportConfig

    return TransportConfig(
        k=args.k,
        alpha=args.alpha if hasattr(args, "alpha") else 1.0,
        mask=args.mask,
        foreground=args.foreground,
        streams=args.streams,
        channels_from=args.channels_from,
        statistic=args.statistic,
        sites=tuple(args.sites) if args.sites else None,
        steps=_window(args),
        generation=_settings(args),
    )


def _mask_image(args: argparse.Namespace, pipe: Any):
    if not args.mask_image:
        return None
    from ..generation import image_size
    from ..io.images import load_mask

    return load_mask(args.mask_image, image_size(pipe, _settings(args))).float()


def _run_transport(args: argparse.Namespace, alphas: list[float], configs: list | None = None) -> list:
    """One TransportResult per config (default: the one the options describe), the pipeline
    loaded once; every config is checked against the model before the first one runs."""
    from ..adapters import adapter_for
    from ..generation import default_steps, image_size
    from ..io.images import load_image
    from ..transport import transport_image, transport_text

    configs = configs or [_transport_config(args)]
    config = configs[0]
    if args.reference:
        texts = [args.target] + ([args.reference_prompt] if args.reference_prompt else [])
    else:
        if not args.source:
            raise UsageError("Give --source PROMPT (text-conditioned) or --reference IMAGE (image-conditioned).")
        texts = [args.source, args.target]
    _check_builtin_words(args, texts)
    from ..io.images import check_image_file

    for option, path in (("--reference", args.reference), ("--mask-image", args.mask_image)):
        if path:  # missing, corrupt or oversized: said before the model loads
            check_image_file(path, "Mask" if option == "--mask-image" else "Image")
    if args.reference and args.reference_path == "invert":  # before loading: the index names the scheduler
        from ..models import model_index, scheduler_class
        from ..transport import check_invertible

        scheduler = scheduler_class(args.model)
        if scheduler is not None:
            check_invertible(scheduler, (model_index(args.model) or {}).get("_class_name", "the built-in pipeline"))
    _scorers(args)  # the CLIP loads before the pipeline
    pipe = _load(args)
    adapter = adapter_for(pipe)
    for c in configs:
        c.validate(
            adapter.hidden_size,
            [s.name for s in adapter.sites()],
            c.generation.num_inference_steps or default_steps(pipe),
        )
    mask_image = _mask_image(args, pipe)
    embeds = _transport_embeds(args, 2 + len(alphas))
    if args.reference:
        reference, note = load_image(args.reference, image_size(pipe, config.generation))
        if note:
            _say(args, f"note: {note}")
        return [
            transport_image(
                pipe,
                reference,
                args.target,
                c,
                reference_prompt=args.reference_prompt or "",
                alphas=alphas,
                seed=args.target_seed,
                mask_image=mask_image,
                prompt_embeds=embeds,
                reference_path=args.reference_path,
            )
            for c in configs
        ]
    return [
        transport_text(
            pipe,
            args.source,
            args.target,
            c,
            alphas=alphas,
            source_seed=args.source_seed,
            target_seed=args.target_seed,
            mask_image=mask_image,
            prompt_embeds=embeds,
        )
        for c in configs
    ]


def _transport_embeds(args: argparse.Namespace, rows: int) -> dict[str, Any] | None:
    """--embeds for transport: row 0 conditions the source (or reference), row 1 the target;
    the batch [source, target alone, transported...] repeats row 1."""
    tensors = _prompt_kwargs(args)
    if tensors is None:
        return None
    if tensors["prompt_embeds"].shape[0] != 2:
        raise ValueError(
            f"For transport, --embeds must hold 2 rows (source, target); {args.embeds!r} holds "
            f"{tensors['prompt_embeds'].shape[0]}."
        )
    import torch

    index = torch.tensor([0] + [1] * (rows - 1), device=tensors["prompt_embeds"].device)
    return {name: t.index_select(0, index) for name, t in tensors.items()}


def _transport_scores(args: argparse.Namespace, results: list, labels: list[str] | None = None) -> dict[str, Any]:
    """scores.json of transport and interpolate: one row for the target alone, then one per
    transported image (labelled a=ALPHA, or by `labels`, one per result), and what this run
    could not measure. Printed as a table unless --quiet."""
    from ..metrics.scores import TRANSPORT_COLUMNS, transport_scores

    scorers = _scorers(args)
    source = args.source if not args.reference else (args.reference_prompt or None)
    rows: dict[str, dict[str, float]] = {}
    for i, result in enumerate(results):
        found = transport_scores(result, source, args.target, scorers)
        if labels is not None:  # one transported image per result; the target alone is the same in each
            found = {name if name == "target alone" else labels[i]: row for name, row in found.items()}
        rows |= found if i == 0 else {name: row for name, row in found.items() if name != "target alone"}
    columns = [key for key in TRANSPORT_COLUMNS if any(key in row for row in rows.values())]
    _say(args, "  " + " | ".join(["image".ljust(14)] + [TRANSPORT_COLUMNS[key] for key in columns]))
    for name, row in rows.items():
        _say(
            args,
            "  "
            + " | ".join(
                [name.ljust(14)]
                + [
                    f"{row[key]:.3f}".rjust(len(TRANSPORT_COLUMNS[key]))
                    if key in row
                    else "-".rjust(len(TRANSPORT_COLUMNS[key]))
                    for key in columns
                ]
            ),
        )
    for missing in scorers.not_measured():
        _say(args, f"  not measured: {missing}")
    return {"images": rows, "not_measured": scorers.not_measured()}


def cmd_transport(args: argparse.Namespace) -> None:
    from ..reporting.plots import plot_image_table

    (result,) = _run_transport(args, [args.alpha])
    scores = _transport_scores(args, [result])
    out = Path(args.out)
    cells = [[result.source, result.target, result.transported[0]]]
    source_label = "reference" if args.reference else "source"
    with output_folder(out) as tmp:
        paths = result.save(tmp)
        _write_json(tmp / "scores.json", scores)
        plot_image_table(
            cells,
            tmp / "strip.png",
            [""],
            [source_label, "target alone", f"transported a={args.alpha:g}"],
            cell_inches=1.8,
        )
    _say(args, f"wrote {out}/: {', '.join(p.name for p in paths.values())}, scores.json, strip.png")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from ..generation import to_pil
    from ..reporting.plots import plot_image_table

    for a in [*args.alphas, args.alpha]:
        if not 0 <= a <= 1:
            raise ValueError(f"alpha must be within [0, 1]; got {a!r}.")
    base = _transport_config(args)
    if args.over == "alpha":
        (result,) = _run_transport(args, list(args.alphas))
        frames = [(f"a={a:g}", f"alpha{a:.2f}", image) for a, image in zip(result.alphas, result.transported)]
        results = [result]
    else:  # one generation per value: (column label, frame name, config)
        if args.over == "k":
            values = [(f"k={k}", f"k{k}", replace(base, k=k)) for k in args.ks]
        else:
            values = [
                (f"steps [{a},{b})", f"window{a}-{b}", replace(base, steps=(a, b)))
                for a, b in map(_parse_window, args.windows)
            ]
        results = _run_transport(args, [args.alpha], [config for _, _, config in values])
        frames = [(label, name, r.transported[0]) for (label, name, _), r in zip(values, results)]
    first = results[0]
    scores = _transport_scores(args, results, None if args.over == "alpha" else [label for label, _, _ in frames])
    out = Path(args.out)
    with output_folder(out) as tmp:
        _write_json(tmp / "scores.json", scores)
        if args.over == "alpha":
            first.save(tmp)
        else:  # source and target are the same in every result; settings, one entry per frame
            for name, image in (("source", first.source), ("target", first.target)):
                to_pil(image[None])[0].save(tmp / f"{name}.png")
            _write_json(tmp / "settings.json", {"over": args.over, "frames": [r.settings for r in results]})
        (tmp / "frames").mkdir(exist_ok=True)
        for i, (_, name, image) in enumerate(frames):
            to_pil(image[None])[0].save(tmp / "frames" / f"frame_{i:03d}_{name}.png")
        cells = [[first.source, first.target] + [image for _, _, image in frames]]
        source_label = "reference" if args.reference else "source"
        plot_image_table(
            cells,
            tmp / "strip.png",
            [""],
            [source_label, "target alone"] + [label for label, _, _ in frames],
            title=f"{args.target}  <-  {args.source or args.reference}",
        )
    _say(args, f"wrote {out}/strip.png, scores.json and {len(frames)} frames in {out / 'frames'}/")


def _parse_window(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    if not sep or not start.strip().isdigit() or not stop.strip().isdigit():
        raise UsageError(f"A step window is START:STOP with whole numbers, e.g. 0:4; got {text!r}.")
    return int(start), int(stop)


def cmd_sweep(args: argparse.Namespace) -> None:
    from ..sweep import SweepConfigError, load_config, merge, run_sweep

    try:
        config = load_config(args.config)
        if args.merge:
            merge(config, args.out, say=lambda message: _say(args, message))
        else:
            run_sweep(config, args.out, allow_download=args.allow_download, quiet=args.quiet, say=print)
    except (SweepConfigError, ValueError, OSError) as err:
        # under torchrun every rank reads the same config: let rank 0 alone say what is wrong
        if int(os.environ.get("RANK", "0")) > 0 and not os.environ.get("DITLENS_DEBUG"):
            raise SystemExit(2) from err
        raise


def cmd_find(args: argparse.Namespace) -> None:
    from ..find import FindConfig, find_channels
    from ..reporting.plots import image_grid, plot_channel_atlas, plot_magnitude_surface, plot_top_vs_median

    prompts = _prompts(args, args.model)
    _check_builtin_words(args, prompts)
    out = Path(args.out)
    config = FindConfig(
        prompts=prompts,
        seeds=args.seeds,
        k=args.k,
        statistic=args.statistic,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        surface_site=args.site,
        surface_step=args.step,
        height=args.height,
        width=args.width,
        true_cfg_scale=args.true_cfg,
        negative_prompt=args.negative_prompt,
    )
    pipe = _load(args)
    result = find_channels(pipe, config, prompt_kwargs=_prompt_kwargs(args))
    summary = result.summary()
    with output_folder(out) as tmp:
        result.save(tmp)
        plot_top_vs_median(result.samples, tmp / "top_vs_median.png", args.statistic)
        plot_channel_atlas(result.samples, tmp / "channel_atlas.png", args.statistic)
        if result.surface is not None:
            site = result.stats.meta["surface_site"]
            plot_magnitude_surface(result.surface, tmp / "surface.png", f"|x| at {site}, step {args.step}")
        if result.images:
            image_grid(result.images, tmp / "images.png", columns=len(prompts), scale=4)
    _say(
        args,
        f"wrote {out}/: stats.safetensors, channels.json, top_vs_median.png, channel_atlas.png, surface.png, images.png",
    )
    for site, info in summary["sites"].items():
        _say(
            args,
            f"  {site:32s} top channels {info['top_channels']}  x median {info['ratio_to_median']}  "
            f"Jaccard prompts {_two(info['jaccard_across_prompts'])} steps {_two(info['jaccard_across_steps'])}",
        )


def cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import DemoConfig, run_demo
    from ..io.outputs import output_lock

    with output_lock(args.out):  # a refused or busy folder is said now, not after the model loads and the demo runs
        pipe = _load(args)
        say = (lambda message: None) if args.quiet else print
        index = run_demo(pipe, args.out, DemoConfig(seed=args.seed), say=say)
    _say(args, f"wrote {index} (open it in a browser)")


def cmd_bench(args: argparse.Namespace) -> None:
    from ..bench.builtin import (
        FindingsConfig,
        TransportBenchConfig,
        bench_findings,
        bench_transport,
        check_model_folder,
    )
    from ..metrics.classifier import load_classifier
    from ..models import BUILTIN

    folder = args.model if args.model not in (None, BUILTIN) else None
    if folder is not None and Path(folder).is_dir() and not (Path(folder) / "model_index.json").is_file():
        check_model_folder(folder)  # no model folder at all: say so here, naming what to give instead
    if not _is_builtin(args):
        if args.classifier is not None:
            raise UsageError(
                "--classifier is for a built-in-family model (the shipped one or a folder `python -m "
                "ditlens.builtin.train` wrote); a real model's bench scores with --clip."
            )
        return _bench_any(args)
    for option in (
        "prompts",
        "pairs",
        "seeds",
        "ks",
        "alphas",
        "k",
        "truth_dir",
        "segmenter",
        "clip",
        "steps",
        "guidance",
        "height",
        "width",
    ):
        if getattr(args, option) is not None:
            raise UsageError(
                f"--{option.replace('_', '-')} is for a real model (--model M); the built-in bench has exact "
                "ground truth and its own held-out prompts."
            )
    if args.n is not None and args.n < 2:
        raise ValueError(f"--n must be >= 2 (the Frechet distance needs two samples); got {args.n}.")
    # every input is checked before anything loads or is written: the folder's files and world, the classifier's world
    world = check_model_folder(folder) if folder is not None else "v1"
    classifier = load_classifier(args.classifier, world)
    command = (
        "ditlens bench "
        + args.suite
        + (f" --model {folder}" if folder else "")
        + (" --quick" if args.quick else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --classifier {args.classifier}" if args.classifier else "")
    )
    out = Path(args.out)
    pipe = _load(args)
    say = (lambda message: None) if args.quiet else print
    if args.suite == "findings":
        config = FindingsConfig.quick() if args.quick else FindingsConfig()
        if args.n:
            config.n_prompts = args.n
        report = _bench_into(
            out,
            lambda folder: bench_findings(
                pipe, folder, config, command + (f" --n {args.n}" if args.n else ""), say, classifier=classifier
            ),
        )
    else:
        config = TransportBenchConfig.quick() if args.quick else TransportBenchConfig()
        if args.n:
            config.n_pairs = args.n
        report = _bench_into(
            out,
            lambda folder: bench_transport(
                pipe, folder, config, command + (f" --n {args.n}" if args.n else ""), say, classifier=classifier
            ),
        )
    _say(args, f"wrote {report}")


def _bench_into(out: Path, write: Callable[[Path], Path]) -> Path:
    """Run a bench into a staging folder that replaces `out` as a whole once the report is
    written (docs/outputs.md): an error or Ctrl+C part-way leaves `out` as it was."""
    with output_folder(out) as folder:
        report = write(folder)
    return out / report.relative_to(folder)


def _bench_any(args: argparse.Namespace) -> None:
    """bench findings or transport on a real pipeline: the paper's protocol (ditlens/bench/real_findings.py,
    ditlens/bench/real_transport.py)."""
    from ..bench.real_findings import ProtocolConfig, bench_findings_any, split_subjects

    for option, value in (("quick", args.quick), ("n", args.n), ("embeds", getattr(args, "embeds", None))):
        if value:
            raise UsageError(
                f"--{option} is not used by the bench on a real model: it runs the prompts or pairs file you give, "
                "through the model's own text encoders."
            )
    args.seeds = args.seeds or [0]  # the real-model defaults (None: so that the built-in bench can refuse them)
    if args.suite == "transport":
        return _bench_transport_any(args)
    for option in ("pairs", "alphas"):
        if getattr(args, option) is not None:
            raise UsageError(f"--{option} is for bench transport; bench findings reads --prompts FILE.")
    if not args.prompts:
        raise UsageError("bench findings on a real model needs --prompts FILE (one prompt per line).")
    prompts, subjects = split_subjects(
        _read_prompts_file(args.prompts)
    )  # `prompt | subject words`: the attention baseline
    if args.truth_dir:
        from ..io.images import check_mask_folder

        check_mask_folder(args.truth_dir, len(prompts) * len(args.seeds))
    config = ProtocolConfig(
        prompts=prompts,
        seeds=args.seeds,
        k_segment=4 if args.k is None else args.k,
        generation=_settings(args),
        subjects=subjects,
        **({"ks": args.ks} if args.ks else {}),
    )  # else ProtocolConfig's
    command = f"ditlens bench findings --model {args.model} --prompts {args.prompts}" + "".join(
        f" --{o.replace('_', '-')} {getattr(args, o)}" for o in ("truth_dir", "segmenter", "clip") if getattr(args, o)
    )
    truth, source = None, "none"
    if args.truth_dir:
        from ..io.images import load_mask_folder

        truth, source = (
            (lambda seg: load_mask_folder(args.truth_dir, seg.images.shape[0], seg.image_size)),
            f"the masks in {args.truth_dir}",
        )
    elif args.segmenter:
        from ..metrics.segmenter import Segmenter

        segmenter = Segmenter.from_pretrained(args.segmenter, args.device, args.background_labels)
        truth = lambda seg: segmenter.foreground(seg.images)  # noqa: E731
        source = f"the segmenter {args.segmenter} (background: {', '.join(args.background_labels)})"
    scorers = _scorers(args)
    pipe = _load(args)
    say = (lambda message: None) if args.quiet else print
    out = Path(args.out)
    report = _bench_into(
        out,
        lambda folder: bench_findings_any(
            pipe, folder, config, command, scorers=scorers, truth=truth, truth_source=source, say=say
        ),
    )
    _say(args, f"wrote {report}")


def _bench_transport_any(args: argparse.Namespace) -> None:
    """bench transport on a real pipeline (ditlens/bench/real_transport.py): the pairs file and
    the options are checked, and the CLIP loaded, before the pipeline loads."""
    from ..bench.real_transport import TransportProtocolConfig, bench_transport_any, read_pairs
    from ..choices import TRANSPORT_K
    from ..transport import TransportConfig

    for option, reason in (
        ("prompts", "bench transport reads --pairs FILE"),
        ("truth_dir", "bench transport scores no masks"),
        ("ks", "bench transport moves --k channels (--ks is findings' zeroing sweep)"),
        ("segmenter", "bench transport scores no masks"),
        ("embeds", "bench transport encodes the pairs' prompts with the model's text encoders"),
    ):
        if getattr(args, option):
            raise UsageError(f"--{option.replace('_', '-')} is not used by bench transport: {reason}.")
    if not args.pairs:
        raise UsageError(
            "bench transport on a real model needs --pairs FILE (one pair per line: source prompt | target prompt)."
        )
    try:
        pairs = read_pairs(args.pairs)
        config = TransportProtocolConfig(
            pairs=pairs,
            seeds=args.seeds,
            transport=TransportConfig(k=TRANSPORT_K if args.k is None else args.k, generation=_settings(args)),
        )
        if args.alphas is not None:
            config.alphas = args.alphas
        config.validate()
    except ValueError as err:
        raise UsageError(str(err)) from None
    options = [
        ("--seeds", " ".join(map(str, config.seeds))),
        ("--k", config.transport.k),
        ("--alphas", " ".join(f"{a:g}" for a in config.alphas)),
    ]
    options += [
        (f"--{o}", getattr(args, o))
        for o in ("clip", "steps", "guidance", "height", "width", "device", "dtype", "out")
        if getattr(args, o) is not None and (o, getattr(args, o)) not in (("device", "cpu"), ("dtype", "float32"))
    ]
    command = f"ditlens bench transport --model {args.model} --pairs {args.pairs}" + "".join(
        f" {o} {v}" for o, v in options
    )
    scorers = _scorers(args)
    pipe = _load(args)
    say = (lambda message: None) if args.quiet else print
    report = _bench_into(
        Path(args.out), lambda folder: bench_transport_any(pipe, folder, config, command, scorers=scorers, say=say)
    )
    _say(args, f"wrote {report}")


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
    serve(_load(args), args.model, host=args.host, port=args.port, quiet=args.quiet)


# ---- parser and entry point --------------------------------------------------------------------


def _add_foreground_option(p: argparse._ActionsContainer) -> None:
    from ..choices import DEFAULT_FOREGROUND, FOREGROUND_RULES

    p.add_argument(
        "--foreground",
        choices=list(FOREGROUND_RULES),
        default=DEFAULT_FOREGROUND,
        help="which K=2 cluster is the subject: "
        + "; ".join(f"{k}: {v}" for k, v in FOREGROUND_RULES.items())
        + f" (default: {DEFAULT_FOREGROUND}, measured: docs/segment.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    from ..choices import (
        CHANNELS_FROM,
        STREAMS,
        TRANSPORT_CHANNELS_FROM,
        TRANSPORT_K,
        TRANSPORT_MASK,
        TRANSPORT_STREAMS,
    )

    parser = argparse.ArgumentParser(
        prog="ditlens",
        description="Reveal and use massive activations inside diffusion transformers.",
        epilog="Run 'ditlens COMMAND --help' for each command's options and examples.\n\n"
        "output folders (--out of demo, generate, find, disrupt, segment, transport, interpolate):\n"
        "  A run writes into a temporary sibling, .tmp-NAME-PID, and replaces the folder as a whole\n"
        "  when it is done: a rerun never mixes old and new files, and a run that fails or is\n"
        "  interrupted leaves the previous results as they were. While a run holds NAME.lock beside\n"
        "  the folder, a second run on it stops at once (exit 2). What a killed run left (.tmp-NAME-*)\n"
        "  the next run on the same folder removes. Only a folder that is empty or that ditlens wrote\n"
        "  (its .ditlens-output lists every file in it) is replaced; any other folder, '', '.', a\n"
        "  folder above the current one and the home folder are refused (exit 2), nothing deleted.\n"
        "  More in docs/outputs.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    p = add("demo", "run all five capabilities on the built-in model and write an HTML report", cmd_demo)
    _add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--out", default="runs/demo", help="output folder, replaced as a whole (default: runs/demo)")

    p = add("generate", "generate images (built-in model by default)", cmd_generate)
    _add_model_options(p)
    _add_prompt_options(p)
    p.add_argument("--out", default="runs/generate", help="output folder, replaced as a whole (default: runs/generate)")

    p = add("disrupt", "zero (or scale) top-k vs bottom-k vs random-k channels and compare the images", cmd_disrupt)
    _add_model_options(p)
    _add_prompt_options(p)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="channel counts to sweep (default: 1 2 4 8)")
    p.add_argument(
        "--rules", nargs="+", default=["top", "bottom", "random"], help="top, bottom, random (default: all three)"
    )
    p.add_argument("--factor", type=float, default=0.0, help="multiply the channels by this (default 0: zero them)")
    p.add_argument("--draws", type=int, default=3, help="random-k draws (default: 3)")
    p.add_argument("--statistic", default="abs_mean", help="selection statistic (default: abs_mean)")
    p.add_argument("--sites", nargs="+", default=None, help="sites to edit (default: all)")
    p.add_argument(
        "--window",
        type=int,
        nargs=2,
        default=None,
        metavar=("START", "STOP"),
        help="steps [START, STOP) (default: all)",
    )
    _add_clip_option(p)
    p.add_argument("--out", default="runs/disrupt", help="output folder, replaced as a whole (default: runs/disrupt)")

    p = add("segment", "K=2 masks from the massive channels per site and step, with baselines and mIoU", cmd_segment)
    _add_model_options(p)
    _add_prompt_options(p)
    p.add_argument("--k", type=int, default=4, help="massive channels to cluster on (default: 4)")
    p.add_argument("--rules", nargs="+", default=["top", "bottom", "random", "all"], help="top, bottom, random, all")
    p.add_argument("--statistic", default="abs_mean", help="selection statistic (default: abs_mean)")
    p.add_argument("--site", default=None, help="site for the overlays (default: middle block)")
    p.add_argument("--step", type=int, default=None, help="step for the overlays (default: middle step)")
    truth = p.add_mutually_exclusive_group()
    truth.add_argument("--truth-dir", default=None, help="folder of ground-truth masks (one per image, sorted names)")
    truth.add_argument(
        "--segmenter",
        default=None,
        metavar="PATH",
        help="a local transformers semantic-segmentation folder: its foreground on each generated image is the truth",
    )
    p.add_argument(
        "--background-labels",
        nargs="+",
        default=["background"],
        metavar="LABEL",
        help="the segmenter's classes that are background (default: background; e.g. wall floor sky for ADE20K)",
    )
    _add_foreground_option(p)
    p.add_argument("--out", default="runs/segment", help="output folder, replaced as a whole (default: runs/segment)")

    for name, help_text, func in (
        ("transport", "move a source's massive activations into a target prompt's generation", cmd_transport),
        ("interpolate", "strip over transport strength between two prompts (or a reference image)", cmd_interpolate),
    ):
        p = add(name, help_text, func)
        _add_model_options(p)
        g = p.add_argument_group("transport")
        g.add_argument("--source", default=None, help="source prompt (text-conditioned)")
        g.add_argument("--target", required=True, help="target prompt")
        g.add_argument("--reference", default=None, help="reference image (image-conditioned transport)")
        g.add_argument("--reference-prompt", default=None, help="caption of the reference (default: empty)")
        g.add_argument(
            "--reference-path",
            choices=["renoise", "invert"],
            default="renoise",
            help="how the reference reaches each step's noise level: fixed noise (default) or "
            "its inversion along the flow ODE (one more generation's time)",
        )
        g.add_argument(
            "--alpha",
            type=float,
            default=1.0,
            help="strength in [0, 1] (default 1: the paper's rule)"
            + ("" if name == "transport" else "; for --over k or window"),
        )
        if name == "interpolate":
            g.add_argument(
                "--over",
                choices=["alpha", "k", "window"],
                default="alpha",
                help="what changes along the strip (default: alpha)",
            )
            g.add_argument(
                "--alphas",
                type=float,
                nargs="+",
                default=[0.0, 0.25, 0.5, 0.75, 1.0],
                help="strengths for --over alpha (default: 0 0.25 0.5 0.75 1; one batch)",
            )
            g.add_argument(
                "--ks",
                type=int,
                nargs="+",
                default=[2, 8, 32, 64],
                help="channel counts for --over k (default: 2 8 32 64; one generation each)",
            )
            g.add_argument(
                "--windows",
                nargs="+",
                default=["0:2", "0:4", "4:8"],
                metavar="START:STOP",
                help="step windows for --over window (default: 0:2 0:4 4:8; one generation each)",
            )
        g.add_argument(
            "--k",
            type=int,
            default=TRANSPORT_K,
            help=f"channels moved per site and step (default: {TRANSPORT_K}, measured: docs/transport.md)",
        )
        g.add_argument(
            "--mask",
            default=TRANSPORT_MASK,
            help=f"spatial mask: source, target or union (that row's K=2 foreground), all (every token), "
            f"user (--mask-image) (default: {TRANSPORT_MASK}, measured: docs/transport.md)",
        )
        g.add_argument("--mask-image", default=None, help="mask image for --mask user (white = edit)")
        _add_foreground_option(g)
        g.add_argument(
            "--streams",
            choices=list(STREAMS),
            default=TRANSPORT_STREAMS,
            help="which streams move: "
            + "; ".join(f"{k}: {v}" for k, v in STREAMS.items())
            + f" (default: {TRANSPORT_STREAMS})",
        )
        g.add_argument(
            "--channels-from",
            choices=list(CHANNELS_FROM),
            default=TRANSPORT_CHANNELS_FROM,
            help=f"whose top-k channels are moved: the source's, those of both rows, or the target's "
            f"(default: {TRANSPORT_CHANNELS_FROM})",
        )
        g.add_argument("--statistic", default="abs_mean", help="selection statistic (default: abs_mean)")
        g.add_argument("--sites", nargs="+", default=None, help="sites to edit (default: all)")
        g.add_argument(
            "--window", type=int, nargs=2, default=None, metavar=("START", "STOP"), help="steps [START, STOP)"
        )
        g.add_argument("--source-seed", type=int, default=0, help="seed of the source trajectory (default: 0)")
        g.add_argument("--target-seed", type=int, default=0, help="seed of the target trajectory (default: 0)")
        g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
        g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
        g.add_argument("--height", type=int, default=None, help="image height in pixels (default: the pipeline's)")
        g.add_argument("--width", type=int, default=None, help="image width in pixels (default: the pipeline's)")
        _add_cfg_options(g)
        _add_clip_option(g)
        p.add_argument(
            "--out", default=f"runs/{name}", help=f"output folder, replaced as a whole (default: runs/{name})"
        )

    p = add(
        "bench",
        "reproduce the findings (findings) or transport and its defaults (transport) on the built-in model; "
        "the paper's protocol on a real one (--model M)",
        cmd_bench,
    )
    p.add_argument("suite", choices=["findings", "transport"], help="which benchmark")
    _add_model_options(p)
    p.add_argument("--quick", action="store_true", help="fewer prompts and settings (CPU, minutes)")
    p.add_argument(
        "--n", type=int, default=None, help="prompts (findings) or prompt pairs (transport); default by --quick"
    )
    p.add_argument("--out", default=None, help="output folder (default: runs/bench-SUITE)")
    p.add_argument(
        "--classifier",
        default=None,
        metavar="FOLDER",
        help="built-in family: the attribute classifier of the model's world (default: the shipped one for world v1; "
        "none for v2, whose fidelity and transfer scores need one: `shipped` for the package's own, or a folder "
        "`python -m ditlens.metrics.classifier --train --world v2 --out FOLDER` wrote)",
    )
    g = p.add_argument_group(
        "a real model (--model M): the paper's protocol for findings 1 and 2, and for transport (docs/scores.md)"
    )
    g.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="findings: prompts, one per line; `prompt | subject words` (comma-separated) on every line adds the attention baseline",
    )
    g.add_argument(
        "--pairs",
        default=None,
        metavar="FILE",
        help="transport: prompt pairs, one per line: `source prompt | target prompt` (# comments and blank lines skipped)",
    )
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="generator seeds (default: 0)")
    g.add_argument("--ks", type=int, nargs="+", default=None, help="findings: channel counts zeroed (default: 1 4 16)")
    g.add_argument(
        "--k",
        type=int,
        default=None,
        help=f"findings: channels the K=2 masks cluster on (default: 4); transport: channels moved (default: {TRANSPORT_K})",
    )
    g.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=None,
        metavar="ALPHA",
        help="transport: strengths in [0, 1], for transport and both baselines alike (default: 0.5 1)",
    )
    truth = g.add_mutually_exclusive_group()
    truth.add_argument("--truth-dir", default=None, help="folder of ground-truth masks (one per image, sorted names)")
    truth.add_argument(
        "--segmenter", default=None, metavar="PATH", help="a local transformers semantic-segmentation folder"
    )
    g.add_argument(
        "--background-labels",
        nargs="+",
        default=["background"],
        metavar="LABEL",
        help="the segmenter's background classes (default: background)",
    )
    _add_clip_option(g)
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
    g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    g.add_argument("--height", type=int, default=None, help="image height in pixels (default: the pipeline's)")
    g.add_argument("--width", type=int, default=None, help="image width in pixels (default: the pipeline's)")

    p = add(
        "sweep", "run prompts x seeds x settings of find / disrupt / segment / transport: sharded, resumable", cmd_sweep
    )
    p.add_argument("config", help="sweep config: .toml (or .yaml with PyYAML installed)")
    p.add_argument("--merge", action="store_true", help="build summary tables and a figure from the finished items")
    p.add_argument(
        "--out", default=None, help="output folder (default: the config's 'out', else runs/sweep-CONFIGNAME)"
    )
    p.add_argument("--allow-download", action="store_true", help="allow fetching a hub id (offline by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary line")

    p = add("find", "record channel statistics and find the massive channels per site and step", cmd_find)
    _add_model_options(p)
    _add_prompt_options(p)
    p.add_argument("--k", type=int, default=4, help="channels to select per site and step (default: 4)")
    p.add_argument("--statistic", default="abs_mean", help="abs_mean (default, the paper's), mean_abs or max_abs")
    p.add_argument("--site", default=None, help="site for the token x channel surface (default: middle block)")
    p.add_argument("--step", type=int, default=0, help="step for the surface plot (default: 0)")
    p.add_argument("--out", default="runs/find", help="output folder, replaced as a whole (default: runs/find)")

    p = add("app", "a local web app: find, disrupt, segment and transport in the browser", cmd_app)
    _add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    return parser


#: commands whose --out folder is replaced as a whole under a lock (docs/outputs.md); sweep
#: resumes into its folder
REPLACED_OUTPUTS = ("demo", "generate", "find", "disrupt", "segment", "transport", "interpolate", "bench")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench" and args.out is None:
        args.out = f"runs/bench-{args.suite}"  # held under the lock like every replaced output
    try:
        _check_generation_args(args)
        from contextlib import nullcontext

        from ..io.outputs import output_lock

        # the output folder is checked and locked before any work: a refused or busy --out is
        # said at once, and a second run on it cannot start while this one works
        with output_lock(args.out) if args.command in REPLACED_OUTPUTS else nullcontext():
            args.func(args)
    except (ValueError, OSError) as err:  # OSError: missing file, disk full, unwritable folder, ...
        if os.environ.get("DITLENS_DEBUG"):
            raise
        print(f"ditlens {args.command}: error: {_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("DITLENS_DEBUG"):
            raise
        kept = (
            "finished items are kept; run it again to resume"
            if args.command == "sweep"
            else "nothing of this run was written; an earlier result in its output folder is kept"
        )
        print(f"ditlens {args.command}: interrupted (Ctrl+C): {kept}.", file=sys.stderr)
        return 130
    return 0


def _error_message(err: Exception) -> str:
    """One paragraph; an OSError in its own words and the path it names, not "[Errno 28] ..."."""
    if not isinstance(err, OSError) or err.strerror is None:
        return str(err)
    if err.filename is None or str(err.filename) in err.strerror:
        return err.strerror
    return f"{err.strerror}: {str(err.filename)!r}"


if __name__ == "__main__":
    sys.exit(main())
