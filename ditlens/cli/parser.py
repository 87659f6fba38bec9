"""The `ditlens` argument parser: one function per subcommand, each adding its options.

Torch-free, like everything the parser imports: the subcommand functions import the library
only when they run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..choices import CHANNELS_FROM, REFERENCE_PATHS, STREAMS
from ..config import DisruptConfig, FindConfig, SegmentConfig, TransportConfig, default
from .bench import cmd_bench
from .commands import cmd_app, cmd_demo, cmd_disrupt, cmd_find, cmd_generate, cmd_segment, cmd_sweep
from .examples import EXAMPLES
from .options import (
    add_cfg_options,
    add_clip_option,
    add_foreground_option,
    add_generation_options,
    add_model_options,
    add_out_option,
    add_prompt_options,
    add_statistic_option,
    add_window_option,
)
from .transport import cmd_interpolate, cmd_transport

OUTPUT_FOLDERS = """output folders (--out of demo, generate, find, disrupt, segment, transport, interpolate):
  A run writes into a temporary sibling, .tmp-NAME-PID, and replaces the folder as a whole
  when it is done: a rerun never mixes old and new files, and a run that fails or is
  interrupted leaves the previous results as they were. While a run holds NAME.lock beside
  the folder, a second run on it stops at once (exit 2). What a killed run left (.tmp-NAME-*)
  the next run on the same folder removes. Only a folder that is empty or that ditlens wrote
  (its .ditlens-output lists every file in it) is replaced; any other folder, '', '.', a
  folder above the current one and the home folder are refused (exit 2), nothing deleted.
  More in docs/outputs.md."""

Adder = Callable[[str, str, Callable[[argparse.Namespace], None]], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditlens",
        description="Reveal and use massive activations inside diffusion transformers.",
        epilog="Run 'ditlens COMMAND --help' for each command's options and examples.\n\n" + OUTPUT_FOLDERS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    for add_command in (
        _add_demo,
        _add_generate,
        _add_disrupt,
        _add_segment,
        _add_transport,
        _add_interpolate,
        _add_bench,
        _add_sweep,
        _add_find,
        _add_app,
    ):
        add_command(add)
    return parser


def _words(values: list) -> str:
    return " ".join(str(v) for v in values)


def _add_with_prompts(add: Adder, name: str, help_text: str, func: Callable) -> argparse.ArgumentParser:
    """A subcommand that generates from prompts: the model's and the prompts' options first."""
    p = add(name, help_text, func)
    add_model_options(p)
    add_prompt_options(p)
    return p


def _add_k(g: argparse._ActionsContainer, k: int, what: str) -> None:
    g.add_argument("--k", type=int, default=k, help=f"{what} (default: {k})")


def _add_demo(add: Adder) -> None:
    p = add("demo", "run all five capabilities on the built-in model and write an HTML report", cmd_demo)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    add_out_option(p, "demo")


def _add_generate(add: Adder) -> None:
    p = _add_with_prompts(add, "generate", "generate images (built-in model by default)", cmd_generate)
    add_out_option(p, "generate")


def _add_find(add: Adder) -> None:
    p = _add_with_prompts(
        add, "find", "record channel statistics and find the massive channels per site and step", cmd_find
    )
    _add_k(p, FindConfig.k, "channels to select per site and step")
    add_statistic_option(p)
    p.add_argument("--site", default=None, help="site for the token x channel surface (default: middle block)")
    p.add_argument("--step", type=int, default=FindConfig.surface_step, help="step for the surface plot (default: 0)")
    add_out_option(p, "find")


def _add_disrupt(add: Adder) -> None:
    p = _add_with_prompts(
        add, "disrupt", "zero (or scale) top-k vs bottom-k vs random-k channels and compare the images", cmd_disrupt
    )
    ks = default(DisruptConfig, "ks")
    p.add_argument("--ks", type=int, nargs="+", default=ks, help=f"channel counts to sweep (default: {_words(ks)})")
    rules = default(DisruptConfig, "rules")
    p.add_argument("--rules", nargs="+", default=rules, help=f"{', '.join(rules)} (default: all)")
    p.add_argument(
        "--factor",
        type=float,
        default=DisruptConfig.factor,
        help="multiply the channels by this (default 0: zero them)",
    )
    draws = DisruptConfig.random_draws
    p.add_argument("--draws", type=int, default=draws, help=f"random-k draws (default: {draws})")
    add_statistic_option(p)
    p.add_argument("--sites", nargs="+", default=None, help="sites to edit (default: all)")
    add_window_option(p)
    add_clip_option(p)
    add_out_option(p, "disrupt")


def _add_segment(add: Adder) -> None:
    p = _add_with_prompts(
        add, "segment", "K=2 masks from the massive channels per site and step, with baselines and mIoU", cmd_segment
    )
    _add_k(p, SegmentConfig.k, "massive channels to cluster on")
    rules = default(SegmentConfig, "rules")
    p.add_argument("--rules", nargs="+", default=rules, help=f"{', '.join(rules)} (default: all)")
    add_statistic_option(p)
    p.add_argument("--site", default=None, help="site for the overlays (default: middle block)")
    p.add_argument("--step", type=int, default=None, help="step for the overlays (default: middle step)")
    _add_truth_options(
        p, "a local transformers semantic-segmentation folder: its foreground on each generated image is the truth"
    )
    add_foreground_option(p)
    add_out_option(p, "segment")


def _add_truth_options(g: argparse._ActionsContainer, segmenter_help: str) -> None:
    truth = g.add_mutually_exclusive_group()
    truth.add_argument("--truth-dir", default=None, help="folder of ground-truth masks (one per image, sorted names)")
    truth.add_argument("--segmenter", default=None, metavar="PATH", help=segmenter_help)
    g.add_argument(
        "--background-labels",
        nargs="+",
        default=["background"],
        metavar="LABEL",
        help="the segmenter's classes that are background (default: background; e.g. wall floor sky for ADE20K)",
    )


def _add_transport(add: Adder) -> None:
    p = add("transport", "move a source's massive activations into a target prompt's generation", cmd_transport)
    _add_transport_options(p, "strength in [0, 1] (default 1: the paper's rule)")
    add_out_option(p, "transport")


def _add_interpolate(add: Adder) -> None:
    p = add("interpolate", "strip over transport strength between two prompts (or a reference image)", cmd_interpolate)
    g = _add_transport_options(p, "strength in [0, 1] (default 1: the paper's rule); for --over k or window")
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
    add_out_option(p, "interpolate")


def _add_transport_options(p: argparse.ArgumentParser, alpha_help: str) -> argparse._ArgumentGroup:
    add_model_options(p)
    g = p.add_argument_group("transport")
    g.add_argument("--source", default=None, help="source prompt (text-conditioned)")
    g.add_argument("--target", required=True, help="target prompt")
    g.add_argument("--reference", default=None, help="reference image (image-conditioned transport)")
    g.add_argument("--reference-prompt", default=None, help="caption of the reference (default: empty)")
    g.add_argument(
        "--reference-path",
        choices=list(REFERENCE_PATHS),
        default="renoise",
        help="how the reference reaches each step's noise level: "
        + "; ".join(f"{k}: {v}" for k, v in REFERENCE_PATHS.items())
        + " (default: renoise)",
    )
    g.add_argument("--alpha", type=float, default=TransportConfig.alpha, help=alpha_help)
    _add_k(g, TransportConfig.k, "channels moved per site and step, measured: docs/transport.md")
    g.add_argument(
        "--mask",
        default=TransportConfig.mask,
        help=f"spatial mask: source, target or union (that row's K=2 foreground), all (every token), "
        f"user (--mask-image) (default: {TransportConfig.mask}, measured: docs/transport.md)",
    )
    g.add_argument("--mask-image", default=None, help="mask image for --mask user (white = edit)")
    add_foreground_option(g)
    g.add_argument(
        "--streams",
        choices=list(STREAMS),
        default=TransportConfig.streams,
        help="which streams move: "
        + "; ".join(f"{k}: {v}" for k, v in STREAMS.items())
        + f" (default: {TransportConfig.streams})",
    )
    g.add_argument(
        "--channels-from",
        choices=list(CHANNELS_FROM),
        default=TransportConfig.channels_from,
        help=f"whose top-k channels are moved: the source's, those of both rows, or the target's "
        f"(default: {TransportConfig.channels_from})",
    )
    add_statistic_option(g)
    g.add_argument("--sites", nargs="+", default=None, help="sites to edit (default: all)")
    add_window_option(g)
    g.add_argument("--source-seed", type=int, default=0, help="seed of the source trajectory (default: 0)")
    g.add_argument("--target-seed", type=int, default=0, help="seed of the target trajectory (default: 0)")
    add_generation_options(g)
    add_cfg_options(g)
    add_clip_option(g)
    return g


def _add_bench(add: Adder) -> None:
    p = add(
        "bench",
        "reproduce the findings (findings) or transport and its defaults (transport) on the built-in model; "
        "the paper's protocol on a real one (--model M)",
        cmd_bench,
    )
    p.add_argument("suite", choices=["findings", "transport"], help="which benchmark")
    add_model_options(p)
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
    _add_real_bench_options(p)


def _add_real_bench_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "a real model (--model M): the paper's protocol for findings 1 and 2, and for transport (docs/scores.md)"
    )
    g.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="findings: prompts, one per line; `prompt | subject words` (comma-separated) on every line adds the "
        "attention baseline",
    )
    g.add_argument(
        "--pairs",
        default=None,
        metavar="FILE",
        help="transport: prompt pairs, one per line: `source prompt | target prompt` (# comments and blank lines "
        "skipped)",
    )
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="generator seeds (default: 0)")
    g.add_argument("--ks", type=int, nargs="+", default=None, help="findings: channel counts zeroed (default: 1 4 16)")
    g.add_argument(
        "--k",
        type=int,
        default=None,
        help=f"findings: channels the K=2 masks cluster on (default: 4); transport: channels moved "
        f"(default: {TransportConfig.k})",
    )
    g.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=None,
        metavar="ALPHA",
        help="transport: strengths in [0, 1], for transport and both baselines alike (default: 0.5 1)",
    )
    _add_truth_options(g, "a local transformers semantic-segmentation folder")
    add_clip_option(g)
    add_generation_options(g)


def _add_sweep(add: Adder) -> None:
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


def _add_app(add: Adder) -> None:
    p = add("app", "a local web app: find, disrupt, segment and transport in the browser", cmd_app)
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
