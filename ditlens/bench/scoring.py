"""The scoring that the built-in and the real-model findings benches share: Finding 2's mask
tables (per image group and channel rule, and per foreground rule) and Finding 1's curves over k.

A mask table row reads: the foreground rule's best-site mIoU, and at that site the oracle
labelling's mIoU (an upper bound: it reads the truth), the share of images where the rule
picked the oracle's cluster, and the adjusted Rand index (the split with no labelling).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..segment import MaskScores, SegmentResult

RULES = ("top", "bottom", "random")  # the zeroing rules of Finding 1, in the tables' order
Curves = dict[str, tuple[list[int], list[float], list[float] | None]]  # rule -> (ks, means, spread or None)


def batch_progress(say: Callable[[str], None], batch: int) -> Callable[[int, int, str], None]:
    """A `progress` callback for `disrupt` that names the batch (counted from 1)."""
    return lambda i, n, label: say(f"  batch {batch}: {i + 1}/{n} {label}")


def mask_table_header(foreground: str) -> list[str]:
    """The header of `mask_scores_table`'s rows."""
    return [
        "images (count)",
        "channels",
        f"mIoU, {foreground} rule (best site)",
        "oracle at that site",
        "picks the oracle's cluster",
        "ARI",
        "oracle, best site",
        "mIoU mean over sites",
    ]


def mask_scores_table(
    result: SegmentResult,
    truth: torch.Tensor,
    groups: dict[str, list[int]],
    label: str,
    k: int,
    scores: dict[str, MaskScores] | None = None,
) -> tuple[dict[str, Any], list[list[str]]]:
    """Per image group and channel rule: the foreground rule's best-site mIoU, and at that
    site the oracle labelling's mIoU, the share of images where the rule picked the oracle's
    cluster and the adjusted Rand index; plus the oracle's own best site. Returns the
    numbers and the table rows (header: `mask_table_header`). scores: `result.scores(truth)`,
    if already computed."""
    numbers: dict[str, Any] = {}
    rows = []
    scores = scores if scores is not None else result.scores(truth)
    for group, index in groups.items():
        if not index:
            continue
        numbers[group] = {"images": len(index)}
        for rule, sc in scores.items():
            n = _best_site(result.sites, sc.samples(index))
            numbers[group][rule] = n
            name = rule if rule in ("all", "attention") else f"{rule}-{k}"
            rows.append(
                [
                    f"{label}, {group} ({len(index)})",
                    name,
                    f"{n['miou']:.3f} ({n['best_site']})",
                    f"{n['oracle']:.3f}",
                    f"{n['agreement']:.2f}",
                    f"{n['ari']:.3f}",
                    f"{n['oracle_best']:.3f} ({n['oracle_best_site']})",
                    f"{n['miou_mean_over_sites']:.3f}",
                ]
            )
    return numbers, rows


def _best_site(sites: list[str], scores: MaskScores) -> dict[str, Any]:
    """One rule's numbers on some images: at the site of its best mIoU, and the oracle's best."""
    curves = scores.per_site()
    b, o = int(curves["miou"].argmax()), int(curves["oracle"].argmax())
    return {
        "best_site": sites[b],
        "miou": float(curves["miou"][b]),
        "oracle": float(curves["oracle"][b]),
        "agreement": float(curves["agreement"][b]),
        "ari": float(curves["ari"][b]),
        "oracle_best": float(curves["oracle"][o]),
        "oracle_best_site": sites[o],
        "miou_mean_over_sites": float(curves["miou"].mean()),
        "curves": {name: c.tolist() for name, c in curves.items()},
    }


def foreground_rule_table(
    results: dict[str, tuple[SegmentResult, torch.Tensor, list[int]]], k: int
) -> tuple[dict[str, Any], list[list[str]]]:
    """For each foreground rule, on the top-k masks of each image set: the share of images
    (over every step and site) where it picks the oracle's cluster, and its best-site mIoU."""
    from ..core.masks import FOREGROUND_RULES

    numbers: dict[str, Any] = {}
    rows = [
        [
            "foreground rule",
            *[f"{name}: picks the oracle's cluster" for name in results],
            *[f"{name}: top-{k} best-site mIoU" for name in results],
        ]
    ]
    for fg in FOREGROUND_RULES:
        numbers[fg] = {}
        for name, (result, truth, index) in results.items():
            sc = result.scores(truth, fg)["top"].samples(index)
            numbers[fg][name] = {
                "agreement": float(sc.agrees.float().mean()),
                "best_site_miou": float(sc.per_site()["miou"].max()),
            }
        rows.append(
            [
                fg,
                *[f"{numbers[fg][n]['agreement']:.3f}" for n in results],
                *[f"{numbers[fg][n]['best_site_miou']:.3f}" for n in results],
            ]
        )
    return numbers, rows


def mask_verdict_input(found: dict[str, Any]) -> dict[str, float]:
    """One image group of `mask_scores_table`'s numbers as `segmentation_verdict` reads it:
    rule -> best-site mIoU."""
    return {rule: v["miou"] for rule, v in found.items() if rule != "images"}


def over_k(scores: dict[str, dict[str, Any]], key: str, ks: list[int]) -> Curves:
    """Per rule, the mean of `key` over the rule's conditions at each k (random-k: over its
    draws, with their spread). scores: condition label (`top-2`, `random-2#0`) -> scores."""
    curves: Curves = {}
    for rule in RULES:
        means, spread = [], []
        for k in ks:
            labels = [
                lbl for lbl in scores if lbl.startswith(f"{rule}-{k}") and lbl.split("-")[1].split("#")[0] == str(k)
            ]
            values = torch.tensor([scores[lbl][key] for lbl in labels])
            means.append(float(values.mean()))
            spread.append(float(values.std()) if len(values) > 1 else 0.0)
        curves[rule] = (ks, means, spread if rule == "random" else None)
    return curves


def over_k_rows(curves: Curves, ks: list[int], fmt: str) -> list[list[str]]:
    """Table cells per (rule, k): the mean, and for random-k its spread."""
    rows = []
    for rule in RULES:
        for i, k in enumerate(ks):
            value, spread = curves[rule][1][i], (curves[rule][2] or [0.0] * len(ks))[i]
            rows.append([rule, str(k), f"{value:{fmt}}" + (f" ± {spread:{fmt}}" if rule == "random" else "")])
    return rows
