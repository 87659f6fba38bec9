"""The ladder table of docs/ladder.md, built from the committed bench reports alone.

    python scripts/ladder_table.py            # print the tables (markdown)
    python scripts/ladder_table.py --write    # write them into docs/ladder.md and README.md
    python scripts/ladder_table.py --check    # exit 1 if either does not hold them

Each rung names the folders of its reports under docs/results/: `find` (channels.json of
`ditlens find`), `findings` (findings.json of `ditlens bench findings`) and `transport`
(transport.json of `ditlens bench transport`). A report that is not there is a cell that
says so; no number here is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOC = ROOT / "docs" / "ladder.md"
#: the files that hold the tables, each with the path from it to docs/results/ for the links
HOLDERS = {DOC: "results/", ROOT / "README.md": "docs/results/"}
BEGIN, END = "<!-- ladder-table: scripts/ladder_table.py writes what follows -->", "<!-- /ladder-table -->"
MISSING = "not run"


@dataclass(frozen=True)
class Rung:
    name: str
    world: str
    find: str  # folders under docs/results/
    findings: str
    transport: str


RUNGS = (
    Rung("s (shipped)", "v1", "ladder/v1-s-find", "bench-cpu-findings-quick", "ladder/v1-s-transport"),
    Rung("s", "v2", "ladder/v2-s-find", "ladder/v2-s-findings", "ladder/v2-s-transport"),
    Rung("m", "v2", "ladder/v2-m-find", "ladder/v2-m-findings", "ladder/v2-m-transport"),
    Rung("l", "v2", "ladder/v2-l-find", "ladder/v2-l-findings", "ladder/v2-l-transport"),
)


def _load(folder: str, name: str) -> dict | None:
    path = RESULTS / folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _link(folder: str, name: str, base: str) -> str:
    """The report beside the numbers (report.md, or the command.txt of a find run) where there
    is one, else the numbers' file."""
    shown = next((n for n in ("report.md", "command.txt") if (RESULTS / folder / n).is_file()), name)
    return f"[{folder}]({base}{folder}/{shown})"


def activations_row(rung: Rung, base: str = "results/") -> list[str]:
    found = _load(rung.find, "channels.json")
    if found is None:
        return [rung.name, rung.world, MISSING, MISSING, MISSING, MISSING]
    top1 = [site["ratio_to_median"][0] for site in found["sites"].values()]
    channels = sorted({site["top_channels"][0] for site in found["sites"].values()})
    return [
        rung.name,
        rung.world,
        f"{statistics.median(top1):.1f}x ({min(top1):.1f}-{max(top1):.1f})",
        ", ".join(map(str, channels)),
        f"{len(found['prompts'])} prompts, k = {found['k']}",
        _link(rung.find, "channels.json", base),
    ]


def _random(finding1: dict, k: int, key: str) -> float:
    draws = [row[key] for name, row in finding1.items() if name.startswith(f"random-{k}#")]
    return sum(draws) / len(draws)


def _by_rule(finding1: dict, k: int, key: str) -> list[float]:
    """`key` for no edit, then top-k, bottom-k and random-k (the mean over its draws) zeroing."""
    return [finding1["none"][key], finding1[f"top-{k}"][key], finding1[f"bottom-{k}"][key], _random(finding1, k, key)]


def findings_row(rung: Rung, base: str = "results/") -> list[str]:
    numbers = _load(rung.findings, "findings.json")
    if numbers is None:
        return [rung.name, rung.world, *[MISSING] * 6]
    f1, f2 = numbers["finding1"], numbers["finding2"]
    k = min(numbers["config"]["ks"])
    if "full_object_accuracy" not in f1["none"]:  # a v2 run without a classifier: pixel distances only
        return [
            rung.name,
            rung.world,
            "not measured (no classifier)",
            "not measured (no classifier)",
            f1.get("verdict", {}).get("status", "not decided"),
            *_masks(f2),
            _link(rung.findings, "findings.json", base),
        ]
    fidelity = " / ".join(f"{v:.2f}" for v in _by_rule(f1, k, "full_object_accuracy"))
    frechet = " / ".join(f"{v:.0f}" for v in _by_rule(f1, k, "frechet_distance"))
    return [
        rung.name,
        rung.world,
        f"k = {k}: {fidelity}",
        f"{frechet}",
        f1["verdict"]["status"],
        *_masks(f2),
        _link(rung.findings, "findings.json", base),
    ]


def _masks(f2: dict) -> list[str]:
    """Finding 2's cells: best-site mIoU per rule on generated images, and the verdict."""
    group = f2.get("headline_group", "all images")
    best = f2["image_sets"]["generated"][group]
    miou = " / ".join(f"{best[r]['miou']:.2f}" for r in ("top", "bottom", "random", "all", "attention") if r in best)
    return [f"k = {f2['k']}, {group}: {miou}", f2["verdict"]["status"]]


def transport_row(rung: Rung, base: str = "results/") -> list[str]:
    numbers = _load(rung.transport, "transport.json")
    if numbers is None:
        return [rung.name, rung.world, *[MISSING] * 7]
    curve = numbers["strength_curve"]
    top = max(curve["transport"], key=float)  # the largest alpha: the paper's full replacement
    cells = []
    for key in ("colour_from_source", "shape_from_source", "texture_from_source", "mask_iou_with_target"):
        values = [curve[m][top].get(key) for m in ("transport", "text-embedding interpolation", "pixel blending")]
        cells.append("—" if values[0] is None else " / ".join(f"{v:.2f}" for v in values))
    chosen = numbers["chosen"]
    step_window = chosen.get("step_window", chosen.get("steps"))  # "steps": reports written before the rename
    window = f"steps [{step_window[0]}, {step_window[1]})" if step_window else "all steps"
    setting = f"k = {chosen['k']}, {window}, mask {chosen['mask']}, streams {chosen['streams']}"
    verdict = numbers.get("verdict", {}).get("status", "not decided")
    return [
        rung.name,
        rung.world,
        f"{numbers['config']['n_pairs']} pairs; {setting}",
        *cells,
        verdict,
        _link(rung.transport, "transport.json", base),
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def tables(base: str = "results/") -> str:
    """The three tables, their report links relative to `base` (the path to docs/results/)."""
    parts = [
        "**Massive activations** (`ditlens find`; each run's command.txt names its machine): the top-1 channel's "
        "ratio to the median channel, median over sites (range), and the top-1 channels found.",
        _table(
            ["rung", "world", "top-1 / median", "top-1 channels", "run", "report"],
            [activations_row(r, base) for r in RUNGS],
        ),
        "**Findings 1 and 2** (`ditlens bench findings --quick`): objects fully correct and Frechet distance for no "
        "edit / top-k / bottom-k / random-k zeroing; best-site mIoU of the K = 2 masks on generated images for top-k / "
        "bottom-k / random-k / all channels / attention.",
        _table(
            ["rung", "world", "fully correct", "Frechet distance", "Finding 1", "mIoU", "Finding 2", "report"],
            [findings_row(r, base) for r in RUNGS],
        ),
        "**Finding 3** (`ditlens bench transport`): at alpha = 1, the share of pairs whose colour, shape and texture "
        "come from the source, and the foreground IoU with the target alone (composition kept), for massive-channel "
        "transport / text-embedding interpolation / pixel blending, at the defaults the bench chose on that model.",
        _table(
            [
                "rung",
                "world",
                "pairs; chosen setting",
                "colour from source",
                "shape from source",
                "texture from source",
                "mask IoU with target",
                "Finding 3",
                "report",
            ],
            [transport_row(r, base) for r in RUNGS],
        ),
    ]
    return "\n\n".join(parts)


def _held(path: Path) -> str | None:
    """The block between BEGIN and END in `path`; None where it has none."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the tables into " + ", ".join(_names()))
    mode.add_argument("--check", action="store_true", help="exit 1 unless " + ", ".join(_names()) + " hold them")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(tables())
        return 0
    failed = 0
    for path, base in HOLDERS.items():
        held, text = _held(path), tables(base)
        if held is None:
            print(f"{path} has no {BEGIN} ... {END} block", file=sys.stderr)
            failed = 1
        elif args.write:
            before, rest = path.read_text().split(BEGIN, 1)
            path.write_text(before + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])
        elif held != text:
            print(
                f"{path}'s ladder table differs from the reports; run `python scripts/ladder_table.py --write`",
                file=sys.stderr,
            )
            failed = 1
    return failed


def _names() -> list[str]:
    return [str(path.relative_to(ROOT)) for path in HOLDERS]


if __name__ == "__main__":
    sys.exit(main())
