"""`ditlens` command line: thin subcommands over the library.

Bad input exits with code 2 and a one-paragraph message (no traceback); set DITLENS_DEBUG=1
to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXAMPLES = {
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


def _prompts(args: argparse.Namespace, model: str | None) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"Prompts file {args.prompts_file!r} does not exist.")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts and model in (None, "builtin"):
        from .builtin import EXAMPLE_PROMPTS

        prompts = list(EXAMPLE_PROMPTS)
    if not prompts and not args.embeds:
        raise UsageError("Give prompts with --prompt or --prompts-file (or --embeds).")
    return prompts


def _load(args: argparse.Namespace) -> Any:
    from .models import load_pipeline

    pipe = load_pipeline(
        args.model, dtype=args.dtype, device=args.device, allow_download=args.allow_download, cpu_offload=args.cpu_offload
    )
    if args.quiet:
        pipe.set_progress_bar_config(disable=True)
    return pipe


def _prompt_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.embeds:
        return None
    from safetensors.torch import load_file

    path = Path(args.embeds)
    if not path.is_file():
        raise FileNotFoundError(f"Embeddings file {args.embeds!r} does not exist.")
    try:
        return load_file(str(path), device=args.device)
    except Exception as err:
        raise ValueError(f"Embeddings file {args.embeds!r} is not a readable safetensors file ({err}).") from None


def _check_builtin_words(args: argparse.Namespace, prompts: list[str]) -> None:
    if args.model in (None, "builtin"):
        from .builtin.scenes import check_words

        for prompt in prompts:
            check_words(prompt)


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message)


# ---- subcommands -------------------------------------------------------------------------------


def cmd_find(args: argparse.Namespace) -> None:
    from .find import FindConfig, find_channels
    from .plots import image_grid, plot_channel_atlas, plot_magnitude_surface, plot_top_vs_median

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
    )
    pipe = _load(args)
    result = find_channels(pipe, config, prompt_kwargs=_prompt_kwargs(args))
    paths = result.save(out)
    paths["top_vs_median"] = plot_top_vs_median(result.stats, out / "top_vs_median.png", args.statistic)
    paths["atlas"] = plot_channel_atlas(result.stats, out / "channel_atlas.png", args.statistic)
    if result.surface is not None:
        site = result.stats.meta["surface_site"]
        paths["surface"] = plot_magnitude_surface(result.surface, out / "surface.png", f"|x| at {site}, step {args.step}")
    if result.images:
        paths["images"] = image_grid(result.images, out / "images.png", columns=len(prompts), scale=4)
    summary = result.summary()
    _say(args, f"wrote {out}/: stats.safetensors, channels.json, top_vs_median.png, channel_atlas.png, surface.png, images.png")
    for site, info in summary["sites"].items():
        _say(
            args,
            f"  {site:32s} top channels {info['top_channels']}  x median {info['ratio_to_median']}  "
            f"Jaccard prompts {info['jaccard_across_prompts']:.2f} steps {info['jaccard_across_steps']:.2f}",
        )


# ---- parser and entry point --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditlens",
        description="Reveal and use massive activations inside diffusion transformers.",
        epilog="Run 'ditlens COMMAND --help' for each command's options and examples.",
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

    p = add("find", "record channel statistics and find the massive channels per site and step", cmd_find)
    _add_model_options(p)
    _add_prompt_options(p)
    p.add_argument("--k", type=int, default=4, help="channels to select per site and step (default: 4)")
    p.add_argument("--statistic", default="abs_mean", help="abs_mean (default, the paper's), mean_abs or max_abs")
    p.add_argument("--site", default=None, help="site for the token x channel surface (default: middle block)")
    p.add_argument("--step", type=int, default=0, help="step for the surface plot (default: 0)")
    p.add_argument("--out", default="runs/find", help="output folder (default: runs/find)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        if os.environ.get("DITLENS_DEBUG"):
            raise
        print(f"ditlens {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, unwritable folder, ...
        if os.environ.get("DITLENS_DEBUG"):
            raise
        print(f"ditlens {args.command}: error: {err.strerror or err} ({err.filename or ''})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
