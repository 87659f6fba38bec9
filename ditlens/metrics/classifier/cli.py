"""`python -m ditlens.metrics.classifier`: train, evaluate and save an attribute classifier
(world v1: the shipped one, by default into its own folder; world v2: into --out)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ditlens.builtin import scenes, scenes_v2

from .training import heldout_report
from .v1 import AttributeClassifier, evaluate, train_classifier
from .v2 import AttributeClassifierV2, evaluate_v2, train_classifier_v2
from .weights import DEFAULT_WEIGHTS

DEFAULT_STEPS = {"v1": 800, "v2": 1500}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ditlens.metrics.classifier",
        description="Attribute classifier for the built-in model's 32x32 scenes.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--train", action="store_true", help="train, evaluate and save")
    action.add_argument("--eval", action="store_true", help="evaluate saved weights")
    parser.add_argument(
        "--world",
        choices=("v1", "v2"),
        default="v1",
        help="v1: the shipped classifier (scenes.py); v2: scenes_v2.py, needs --out",
    )
    parser.add_argument("--steps", type=int, default=None, help="default: 800 (v1), 1500 (v2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"weights folder (v1 default: the shipped {DEFAULT_WEIGHTS}; v2: required)",
    )
    parser.add_argument("--eval-size", type=int, default=4096, help="held-out renders to score")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="world v2: where to train (cpu, cuda)")
    return parser


def _trained(args: argparse.Namespace, out: Path) -> AttributeClassifier | AttributeClassifierV2:
    """Train with the command line's settings, save to `out`."""
    start = time.perf_counter()
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.world]
    model: AttributeClassifier | AttributeClassifierV2
    if args.world == "v1":
        model = train_classifier(steps=steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr)
    else:
        model = train_classifier_v2(
            steps=steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr, device=args.device
        )
    print(f"trained in {time.perf_counter() - start:.0f} s")
    model.save_pretrained(out)
    print(f"saved to {out}")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    v2 = args.world == "v2"
    if v2 and (args.out is None or Path(args.out).resolve() == DEFAULT_WEIGHTS.resolve()):
        parser.error("--world v2 needs --out FOLDER (and never the shipped v1 classifier's folder)")
    out = args.out if args.out is not None else DEFAULT_WEIGHTS
    if args.train:
        model = _trained(args, out)
    else:
        model = AttributeClassifierV2.from_pretrained(out) if v2 else AttributeClassifier.from_pretrained(out)
    world, evaluate_fn = (scenes_v2, evaluate_v2) if v2 else (scenes, evaluate)
    report = {
        **({"world": "v2"} if v2 else {}),
        "params": sum(p.numel() for p in model.parameters()),
        "eval_size": args.eval_size,
        **heldout_report(model, world, evaluate_fn, args.eval_size, args.seed),
    }
    print(json.dumps(report, indent=2))
