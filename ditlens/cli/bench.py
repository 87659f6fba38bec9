"""`ditlens bench findings|transport`: the built-in bench on a built-in-family model, the
paper's protocol on a real pipeline (--model M). Options that the chosen bench does not use
are refused, not ignored."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..io.outputs import output_folder
from . import run
from .options import UsageError, read_prompts_file

#: options only the real-model benches read: the built-in bench has exact ground truth and
#: its own held-out prompts
REAL_MODEL_OPTIONS = (
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
)


def cmd_bench(args: argparse.Namespace) -> None:
    from ..models import is_builtin, is_builtin_family

    folder = None if is_builtin(args.model) else args.model
    if folder is not None and Path(folder).is_dir() and not (Path(folder) / "model_index.json").is_file():
        from ..bench.builtin_model import check_model_folder

        check_model_folder(folder)  # no model folder at all: say so here, naming what to give instead
    if is_builtin_family(args.model):
        report = _bench_builtin(args, folder)
    else:
        _refuse(
            args,
            "classifier",
            "is for a built-in-family model (the shipped one or a folder `python -m ditlens.builtin.train` wrote); "
            "a real model's bench scores with --clip",
        )
        report = _bench_transport_any(args) if args.suite == "transport" else _bench_findings_any(args)
    run.say(args, f"wrote {report}")


def _refuse(args: argparse.Namespace, option: str, reason: str) -> None:
    if getattr(args, option, None):
        raise UsageError(f"--{option.replace('_', '-')} {reason}.")


def bench_into(out: str | Path, write: Callable[[Path], Path]) -> Path:
    """Run a bench into a staging folder that replaces `out` as a whole once the report is
    written (docs/outputs.md): an error or Ctrl+C part-way leaves `out` as it was."""
    with output_folder(out) as folder:
        report = write(folder)
    return Path(out) / report.relative_to(folder)


def _bench_builtin(args: argparse.Namespace, folder: str | None) -> Path:
    """The built-in bench: every input checked before anything loads or is written (the
    folder's files and world, the classifier's world)."""
    from ..bench.builtin_model import check_model_folder
    from ..bench.configs import FindingsConfig, TransportBenchConfig
    from ..bench.findings import bench_findings
    from ..bench.transport import bench_transport
    from ..metrics.classifier import load_classifier

    for option in REAL_MODEL_OPTIONS:
        if getattr(args, option) is not None:
            raise UsageError(
                f"--{option.replace('_', '-')} is for a real model (--model M); the built-in bench has exact "
                "ground truth and its own held-out prompts."
            )
    if args.n is not None and args.n < 2:
        raise ValueError(f"--n must be >= 2 (the Frechet distance needs two samples); got {args.n}.")
    classifier = load_classifier(args.classifier, check_model_folder(folder) if folder is not None else "v1")
    options = [
        ("--model", folder),
        ("--quick", args.quick),
        ("--device", args.device if args.device != "cpu" else None),
    ]
    options += [("--classifier", args.classifier), ("--n", args.n)]
    command = f"ditlens bench {args.suite}" + "".join(_option(o, v) for o, v in options)
    pipe = run.load(args)
    say = run.sayer(args)
    if args.suite == "findings":
        findings = FindingsConfig.quick() if args.quick else FindingsConfig()
        findings.n_prompts = args.n or findings.n_prompts
        return bench_into(
            args.out, lambda out: bench_findings(pipe, out, findings, command, say, classifier=classifier)
        )
    transport = TransportBenchConfig.quick() if args.quick else TransportBenchConfig()
    transport.n_pairs = args.n or transport.n_pairs
    return bench_into(args.out, lambda out: bench_transport(pipe, out, transport, command, say, classifier=classifier))


def _option(name: str, value: object) -> str:
    """` --name value` for the command line a report records; a flag as ` --name`; nothing where unset."""
    if value is None or value is False:
        return ""
    return f" {name}" if value is True else f" {name} {value}"


def _refuse_unused_by_real_bench(args: argparse.Namespace) -> None:
    for option in ("quick", "n", "embeds"):
        _refuse(
            args,
            option,
            "is not used by the bench on a real model: it runs the prompts or pairs file you give, "
            "through the model's own text encoders",
        )
    args.seeds = args.seeds or [0]  # the real-model default (None: so that the built-in bench can refuse them)


def _bench_findings_any(args: argparse.Namespace) -> Path:
    """bench findings on a real pipeline: the paper's protocol (ditlens/bench/real_findings.py)."""
    from ..bench.real_findings import ProtocolConfig, bench_findings_any, split_subjects

    _refuse_unused_by_real_bench(args)
    for option in ("pairs", "alphas"):
        _refuse(args, option, "is for bench transport; bench findings reads --prompts FILE")
    if not args.prompts:
        raise UsageError("bench findings on a real model needs --prompts FILE (one prompt per line).")
    prompts, subjects = split_subjects(read_prompts_file(args.prompts))  # `prompt | subject words`: attention
    truth, source = run.truth_reader(args, len(prompts) * len(args.seeds))
    config = ProtocolConfig(
        prompts=prompts,
        seeds=args.seeds,
        k_segment=4 if args.k is None else args.k,
        generation=run.settings(args),
        subjects=subjects,
        **({"ks": args.ks} if args.ks else {}),  # else ProtocolConfig's
    )
    options = [(f"--{o.replace('_', '-')}", getattr(args, o)) for o in ("truth_dir", "segmenter", "clip")]
    command = f"ditlens bench findings --model {args.model} --prompts {args.prompts}"
    command += "".join(_option(o, v) for o, v in options)
    scorers, pipe, say = run.scorers(args), run.load(args), run.sayer(args)
    return bench_into(
        args.out,
        lambda out: bench_findings_any(
            pipe, out, config, command, scorers=scorers, truth=truth, truth_source=source, say=say
        ),
    )


def _bench_transport_any(args: argparse.Namespace) -> Path:
    """bench transport on a real pipeline (ditlens/bench/real_transport.py): the pairs file and
    the options are checked, and the CLIP loaded, before the pipeline loads."""
    from ..bench.real_transport import bench_transport_any

    _refuse_unused_by_real_bench(args)
    for option, reason in (
        ("prompts", "bench transport reads --pairs FILE"),
        ("truth_dir", "bench transport scores no masks"),
        ("ks", "bench transport moves --k channels (--ks is findings' zeroing sweep)"),
        ("segmenter", "bench transport scores no masks"),
    ):
        _refuse(args, option, f"is not used by bench transport: {reason}")
    config = _transport_protocol_config(args)
    options = [("--seeds", " ".join(map(str, config.seeds))), ("--k", config.transport.k)]
    options += [("--alphas", " ".join(f"{a:g}" for a in config.alphas))]
    options += [(f"--{o}", getattr(args, o)) for o in ("clip", "steps", "guidance", "height", "width")]
    options += [("--device", None if args.device == "cpu" else args.device)]
    options += [("--dtype", None if args.dtype == "float32" else args.dtype), ("--out", args.out)]
    command = f"ditlens bench transport --model {args.model} --pairs {args.pairs}"
    command += "".join(_option(o, v) for o, v in options)
    scorers, pipe, say = run.scorers(args), run.load(args), run.sayer(args)
    return bench_into(args.out, lambda out: bench_transport_any(pipe, out, config, command, scorers=scorers, say=say))


def _transport_protocol_config(args: argparse.Namespace):
    from ..bench.real_transport import TransportProtocolConfig, read_pairs
    from ..transport import TransportConfig

    if not args.pairs:
        raise UsageError(
            "bench transport on a real model needs --pairs FILE (one pair per line: source prompt | target prompt)."
        )
    try:
        config = TransportProtocolConfig(
            pairs=read_pairs(args.pairs),
            seeds=args.seeds,
            transport=TransportConfig(k=TransportConfig.k if args.k is None else args.k, generation=run.settings(args)),
        )
        if args.alphas is not None:
            config.alphas = args.alphas
        config.validate()
    except ValueError as err:
        raise UsageError(str(err)) from None
    return config
