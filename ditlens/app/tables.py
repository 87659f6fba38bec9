"""The tabs' score tables: the numbers each `ditlens` command prints, as rows for the page
(rounded as the command prints them; a score that is not finite is shown as its text)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics.scores import DISRUPT_COLUMNS, DISRUPT_FORMATS, TRANSPORT_COLUMNS
from ..segment import MaskScores

FIND_HEADERS = ["site", "top channels", "x median", "Jaccard prompts", "Jaccard steps"]
SEGMENT_HEADERS = [
    "rule",
    "mIoU at the best site",
    "best site",
    "oracle labelling",
    "rule picked the oracle's cluster",
    "mIoU, mean over sites",
]
IDENTICAL_DB = 99  # a PSNR above this is two identical images (the library caps it at 100 dB): shown as inf


def score_cell(value: float, fmt: str) -> float | str:
    """A score rounded as `fmt` (".3f") says, or its text (nan, inf) where it is not finite."""
    return round(float(value), int(fmt[1:-1])) if np.isfinite(value) else str(value)


def psnr_cell(value: float, fmt: str) -> float | str:
    return "inf" if value > IDENTICAL_DB else score_cell(value, fmt)


def _two(value: float | None) -> str:
    """As `ditlens find` prints a Jaccard index: two decimals, or n/a with nothing to compare."""
    return "n/a" if value is None else f"{value:.2f}"


def find_table(summary: dict[str, Any]) -> list[list[Any]]:
    """Per site of `FindResult.summary()`: top channels, ratio to median, stability."""
    return [
        [
            site,
            ", ".join(map(str, info["top_channels"])),
            ", ".join(f"{r:g}" for r in info["ratio_to_median"]),
            _two(info["jaccard_across_prompts"]),
            _two(info["jaccard_across_steps"]),
        ]
        for site, info in summary["sites"].items()
    ]


def disrupt_table(scores: dict[str, dict[str, float]]) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) per condition of `disrupt_scores`: PSNR to unedited, then the scores measured."""
    columns = [key for key in DISRUPT_FORMATS if any(key in row for row in scores.values())]
    headers = ["condition", "PSNR to unedited (dB)"] + [DISRUPT_COLUMNS[key] for key in columns]
    rows = [
        [label, psnr_cell(row["psnr_db"], ".1f")]
        + [score_cell(row[key], DISRUPT_FORMATS[key]) if key in row else "" for key in columns]
        for label, row in scores.items()
    ]
    return headers, rows


def segment_table(scores: dict[str, MaskScores], sites: list[str]) -> list[list[Any]]:
    """Per rule of `SegmentResult.scores`: the best site's mIoU and the mean over sites (`SEGMENT_HEADERS`)."""
    rows = []
    for rule, sc in scores.items():
        curves = sc.per_site()
        best = int(curves["miou"].argmax())
        rows.append(
            [
                rule,
                round(float(curves["miou"][best]), 3),
                sites[best],
                round(float(curves["oracle"][best]), 3),
                round(float(curves["agreement"][best]), 2),
                round(float(curves["miou"].mean()), 3),
            ]
        )
    return rows


def transport_table(scores: dict[str, dict[str, float]]) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) per image of `transport_scores`, three decimals each."""
    columns = [key for key in TRANSPORT_COLUMNS if any(key in row for row in scores.values())]

    def cell(row: dict[str, float], key: str) -> float | str:
        if key not in row:
            return ""
        return psnr_cell(row[key], ".3f") if key.startswith("psnr") else score_cell(row[key], ".3f")

    headers = ["image"] + [TRANSPORT_COLUMNS[key] for key in columns]
    return headers, [[name, *(cell(row, key) for key in columns)] for name, row in scores.items()]
