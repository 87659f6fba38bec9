"""What every subcommand does between its arguments and the library: read the prompts, load
the pipeline, build the generation settings and the scorers, print.

torch and diffusers are imported inside the functions, so that importing the CLI stays cheap.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .options import UsageError, generation_settings, read_prompts_file, shorten


def say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message)


def sayer(args: argparse.Namespace):
    """`say` as a one-argument function, for the library's `say=` parameters."""
    return (lambda message: None) if getattr(args, "quiet", False) else print


def progress(args: argparse.Namespace, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=args.quiet, leave=False)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=1, default=str))  # inside an output_folder: whole or not at all
    return path


def prompts(args: argparse.Namespace, captions: bool = False) -> list[str]:
    """--prompt and --prompts-file; the shipped model's example prompts where neither is
    given; labels of the --embeds rows where only embeddings are. On a built-in-family
    model every word is checked, and with `captions` every prompt parsed (the commands
    that score against the caption)."""
    from ..models import is_builtin

    found = list(args.prompt or [])
    if args.prompts_file:
        found += read_prompts_file(args.prompts_file)
    if not found and is_builtin(args.model):  # the shipped model's (not a trained folder's)
        from ..builtin.examples import EXAMPLE_PROMPTS

        found = list(EXAMPLE_PROMPTS)
    embeds = prompt_kwargs(args) if not found else None
    if embeds is not None:
        rows = embeds["prompt_embeds"].shape[0]
        found = [f"<embeds row {i}>" for i in range(rows)]  # labels only: the embeddings condition
    if not found:
        raise UsageError("Give prompts with --prompt or --prompts-file (or --embeds).")
    check_builtin_words(args, found, captions)
    return found


def check_builtin_words(args: argparse.Namespace, texts: list[str], captions: bool = False) -> None:
    """On a built-in-family model: every word known, and with `captions`, every prompt a
    caption its world's grammar parses."""
    world = builtin_world(args)
    if world is None:
        return
    from ..builtin.scenes import CaptionError, UnknownWordError
    from ..builtin.text_encoder import scenes_of

    scenes = scenes_of(world)  # the grammar of the model's world; its errors subclass v1's
    for text in texts:
        try:
            scenes.parse_caption(text) if captions else scenes.check_words(text)
        except (UnknownWordError, CaptionError) as err:
            if len(text) > 80:  # the message echoes the prompt: name it shortened
                raise UsageError(str(err).replace(repr(text), shorten(text))) from None
            raise


def builtin_world(args: argparse.Namespace) -> str | None:
    """The world of a built-in-family model ("v1", "v2"), None for any other model."""
    from ..models import builtin_world as world_of

    return world_of(args.model)


def exact_metrics(args: argparse.Namespace) -> bool:
    """The built-in exact metrics (classifier, renders, off-background truth) apply: world v1 only."""
    return builtin_world(args) == "v1"


def load(args: argparse.Namespace) -> Any:
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


def prompt_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    """--embeds: the tensors of the safetensors file, checked, on the device."""
    if not getattr(args, "embeds", None):
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


def settings(args: argparse.Namespace):
    """The `GenerationSettings` the generation options describe."""
    return generation_settings(args)


def window(args: argparse.Namespace) -> tuple[int, int] | None:
    return (args.window[0], args.window[1]) if args.window else None


def scorers(args: argparse.Namespace):
    """The built-in metrics on the built-in model, and the CLIP of --clip on any model; loaded
    once, before the pipeline (a CLIP that fails to load costs no generation)."""
    from ..metrics.scores import load_scorers

    if not hasattr(args, "loaded_scorers"):
        args.loaded_scorers = load_scorers(getattr(args, "clip", None), exact_metrics(args), args.device)
    return args.loaded_scorers


def print_table(args: argparse.Namespace, rows: dict[str, dict[str, float]], columns: dict[str, str]) -> None:
    """`rows` (name -> key -> value) under the headers of `columns` (key -> header) they hold;
    "-" where a row lacks a value."""
    shown = [key for key in columns if any(key in row for row in rows.values())]
    say(args, "  " + " | ".join(["image".ljust(14)] + [columns[key] for key in shown]))
    for name, row in rows.items():
        cells = [f"{row[key]:.3f}" if key in row else "-" for key in shown]
        say(args, "  " + " | ".join([name.ljust(14)] + [c.rjust(len(columns[key])) for c, key in zip(cells, shown)]))


def two(value: float | None) -> str:
    """Two decimals, or "n/a" where a score has nothing to compare (a single prompt or seed)."""
    return "n/a" if value is None else f"{value:.2f}"


@contextmanager
def condition_progress(args: argparse.Namespace, desc: str) -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar for the library's `progress(i, n, label)` callbacks, closed after."""
    bar = progress(args, 0, desc)

    def update(i: int, n: int, label: str) -> None:
        bar.total = n
        bar.set_postfix_str(label)
        bar.update(1 if i else 0)

    try:
        yield update
    finally:
        bar.close()


def truth_reader(args: argparse.Namespace, count: int) -> tuple[Callable[[Any], Any] | None, str]:
    """Where the ground-truth masks of `count` generated images come from: --truth-dir (its
    masks counted and read now, sized once the images exist) or --segmenter (loaded now,
    before the pipeline). Returns (result -> (n, H, W) masks, a description), or (None, "none")."""
    if getattr(args, "truth_dir", None):
        from ..io.images import check_mask_folder, load_mask_folder

        check_mask_folder(args.truth_dir, count)
        return (
            lambda result: load_mask_folder(args.truth_dir, count, result.image_size)
        ), f"the masks in {args.truth_dir}"
    if getattr(args, "segmenter", None):
        from ..metrics.segmenter import Segmenter

        segmenter = Segmenter.from_pretrained(args.segmenter, args.device, args.background_labels)
        labels = ", ".join(args.background_labels)
        return (
            lambda result: segmenter.foreground(result.images)
        ), f"the segmenter {args.segmenter} (background: {labels})"
    return None, "none"
