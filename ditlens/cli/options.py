"""The options the subcommands share, and the checks made on them before anything loads.

Plain Python, no torch: `ditlens --help` and a bad option are answered in a fraction of a
second. Defaults come from the capability configs and `ditlens.choices`, never from here.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..choices import DEFAULT_FOREGROUND, DEFAULT_STATISTIC, FOREGROUND_RULES
from ..config import GenerationSettings

#: GenerationSettings' fields as the generation options name them, for its messages
GENERATION_OPTIONS = {
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "height": "--height",
    "width": "--width",
    "true_cfg_scale": "--true-cfg",
}
MAX_SEED = 2**63 - 1  # torch.Generator takes 64 bits; JSON and numpy keep 63 exactly


class UsageError(ValueError):
    """Bad command-line input that the library could not see (e.g. a missing prompt)."""


def shorten(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters with the full length named (a 10,000-word
    prompt is not echoed whole)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}... ({len(str(value)):,} characters)"


# ---- option groups ----------------------------------------------------------------------------


def add_model_options(p: argparse.ArgumentParser) -> None:
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


def add_generation_options(g: argparse._ActionsContainer) -> None:
    """The pipeline settings (`GenerationSettings`); None leaves each to the pipeline."""
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
    g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    g.add_argument("--height", type=int, default=None, help="image height in pixels (default: the pipeline's)")
    g.add_argument("--width", type=int, default=None, help="image width in pixels (default: the pipeline's)")


def add_cfg_options(g: argparse._ActionsContainer) -> None:
    g.add_argument(
        "--true-cfg",
        type=float,
        default=None,
        metavar="SCALE",
        help="FLUX.1 / Qwen-Image true CFG: > 1 adds a separate unconditional call per step (needs --negative-prompt)",
    )
    g.add_argument("--negative-prompt", default=None, help="negative prompt (default: the pipeline's)")


def add_prompt_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable)")
    g.add_argument("--prompts-file", default=None, help="text file, one prompt per line")
    g.add_argument("--seeds", type=int, nargs="+", default=[0], help="generator seeds (default: 0)")
    add_generation_options(g)
    add_cfg_options(g)


def add_clip_option(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--clip",
        default=None,
        metavar="PATH",
        help="a local CLIPModel folder: adds CLIP score and CLIP-I to the scores (any model; nothing is downloaded)",
    )


def add_statistic_option(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--statistic",
        default=DEFAULT_STATISTIC,
        help=f"selection statistic: abs_mean (the paper's), mean_abs or max_abs (default: {DEFAULT_STATISTIC})",
    )


def add_foreground_option(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--foreground",
        choices=list(FOREGROUND_RULES),
        default=DEFAULT_FOREGROUND,
        help="which K=2 cluster is the subject: "
        + "; ".join(f"{k}: {v}" for k, v in FOREGROUND_RULES.items())
        + f" (default: {DEFAULT_FOREGROUND}, measured: docs/segment.md)",
    )


def add_window_option(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--window",
        type=int,
        nargs=2,
        default=None,
        metavar=("START", "STOP"),
        help="edit steps [START, STOP) only (default: every step)",
    )


def add_out_option(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", default=f"runs/{name}", help=f"output folder, replaced as a whole (default: runs/{name})")


# ---- checks before anything loads ---------------------------------------------------------------


def check_args(args: argparse.Namespace) -> None:
    """The options every generating command shares, checked before any model loads."""
    _check_channel_counts(args)
    _check_generation(args)
    if getattr(args, "seeds", None) is not None:
        check_seeds("--seeds", args.seeds)
    for name in ("seed", "source_seed", "target_seed"):
        if getattr(args, name, None) is not None:
            check_seeds(f"--{name.replace('_', '-')}", [getattr(args, name)])
    _check_model_folders(args)
    if getattr(args, "mask_image", None) and getattr(args, "mask", "user") != "user":
        raise UsageError(
            f"--mask-image is used with --mask user only; got --mask {args.mask}. "
            "Add --mask user, or leave --mask-image out."
        )
    for name in ("prompt", "source", "target"):  # a negative or reference prompt may be empty
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and not value.strip():
                raise UsageError(f"--{name} is empty; give a prompt with at least one word.")


def _check_channel_counts(args: argparse.Namespace) -> None:
    k = getattr(args, "k", None)  # its upper bound, the model's hidden size, is checked once the model is known
    if k is not None and k < 1:
        raise UsageError(f"--k must be a whole number from 1 to the model's hidden size; got {k}.")
    ks = getattr(args, "ks", None)
    if ks is not None and any(value < 0 for value in ks):
        raise UsageError(
            f"--ks must be whole numbers from 0 (the unedited run) to the model's hidden size; got {min(ks)}."
        )


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    """The `GenerationSettings` the generation options describe (None where an option is unset)."""
    return GenerationSettings(
        num_inference_steps=getattr(args, "steps", None),
        guidance_scale=getattr(args, "guidance", None),
        height=getattr(args, "height", None),
        width=getattr(args, "width", None),
        true_cfg_scale=getattr(args, "true_cfg", None),
        negative_prompt=getattr(args, "negative_prompt", None),
    )


def _check_generation(args: argparse.Namespace) -> None:
    """GenerationSettings' own check, before the model loads, in the options' names."""
    try:
        generation_settings(args).validate(GENERATION_OPTIONS)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _check_model_folders(args: argparse.Namespace) -> None:
    """--clip and --segmenter: folders that hold what they should, before the pipeline loads."""
    from ..metrics.folders import check_clip_folder, check_segmenter_folder

    for name, check in (("clip", check_clip_folder), ("segmenter", check_segmenter_folder)):
        if getattr(args, name, None):
            check(getattr(args, name))


def check_seeds(option: str, seeds: list[int]) -> None:
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise UsageError(f"{option}: seeds are whole numbers from 0 to 2**63 - 1; got {shorten(bad[0])}.")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UsageError(f"{option}: seed {twice[0]} is given twice; each seed is one sample.")


def read_prompts_file(name: str) -> list[str]:
    from ..io.text import read_user_text

    text = read_user_text(name, "--prompts-file", "one prompt per line")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"--prompts-file {name!r} holds no prompts (one per line).")
    return prompts


def parse_window(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    if not sep or not start.strip().isdigit() or not stop.strip().isdigit():
        raise UsageError(f"A step window is START:STOP with whole numbers, e.g. 0:4; got {text!r}.")
    return int(start), int(stop)
