"""The ladder table of docs/ladder.md, built from the committed bench reports alone.

    python scripts/ladder_table.py            # print the tables (markdown)
    python scripts/ladder_table.py --write    # write them into docs/ladder.md and README.md
    python scripts/ladder_table.py --check    # exit 1 if either does not hold them

Each rung names the folders of its reports under docs/results/: `train` (train.log and
train_config.json of `python -m ditlens.builtin.train`), `find` (channels.json of `ditlens
find`), `findings` (findings.json of `ditlens bench findings`) and `transport`
(transport.json of `ditlens bench transport`). A report that is not there is a cell that
says so; no number here is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ditlens.bench.transport import first_changed_choice, perfect_transfer_of_report, verdict_from_numbers
from ditlens.builtin.train_log import Change, doubling_change, finished, logged_losses, window_change
from ditlens.reporting.generated import sync_block
from ditlens.reporting.verdicts import LAYOUT_KEPT

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOC = ROOT / "docs" / "ladder.md"
#: the files that hold the tables, each with the path from it to docs/results/ for the links
HOLDERS = {DOC: "results/", ROOT / "README.md": "docs/results/"}
BEGIN, END = "<!-- ladder-table: scripts/ladder_table.py writes what follows -->", "<!-- /ladder-table -->"
MISSING = "not run"


#: the shipped model's run: its log is not in the repo, its figures are in builtin-model.md's Training section
SHIPPED_LOG = "builtin-model.md#training"
PLATEAU_WINDOW = 1000  # steps over which the constant-rate change of the loss is read (train_log.window_change)


@dataclass(frozen=True)
class Rung:
    name: str
    world: str
    train: str  # folders under docs/results/ ("" = none committed)
    find: str
    findings: str  # the --quick runs, which every rung has
    transport: str
    findings_full: str = ""  # the full benches (64 captions, 32 pairs), where they ran
    transport_full: str = ""


def _if_run(folder: str) -> str:
    """The folder where it is committed, else "" (the bench did not run on that rung)."""
    return folder if (RESULTS / folder).is_dir() else ""


def _ladder_rung(world: str, size: str) -> Rung:
    stem = f"ladder/{world}-{size}"
    return Rung(
        size,
        world,
        stem,
        f"{stem}-find",
        f"{stem}-findings",
        f"{stem}-transport",
        findings_full=_if_run(f"{stem}-findings-full"),
        transport_full=_if_run(f"{stem}-transport-full"),
    )


RUNGS = (
    Rung(
        "s (shipped)",
        "v1",
        "",
        "ladder/v1-s-find",
        "bench-cpu-findings-quick",
        "ladder/v1-s-transport",
        findings_full="bench-gpu-findings",
        transport_full="bench-gpu-transport",
    ),
    _ladder_rung("v1", "m"),
    _ladder_rung("v1", "l"),
    _ladder_rung("v2", "s"),
    _ladder_rung("v2", "m"),
    _ladder_rung("v2", "l"),
)


def _load(folder: str, name: str) -> dict | None:
    path = RESULTS / folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _link(folder: str, name: str, base: str) -> str:
    """The report beside the numbers (report.md, or the command.txt of a find run) where there
    is one, else the numbers' file."""
    shown = next((n for n in ("report.md", "command.txt") if (RESULTS / folder / n).is_file()), name)
    return f"[{folder}]({base}{folder}/{shown})"


def _change(change: Change | None) -> str:
    return MISSING if change is None else f"{change.relative:+.1%} ({change.first_step:,} to {change.last_step:,})"


def training_row(rung: Rung, base: str = "results/") -> list[str]:
    log_path = RESULTS / rung.train / "train.log"
    if not rung.train:
        shipped = f"[not in the repo]({base.removesuffix('results/')}{SHIPPED_LOG})"
        return [rung.name, rung.world, *["not in the repo"] * 8, shipped, fidelity(rung)]
    if not log_path.is_file():
        return [rung.name, rung.world, *[MISSING] * 10]
    log = log_path.read_text()
    config = json.loads((RESULTS / rung.train / "train_config.json").read_text())
    params = int(re.findall(r"'transformer': (\d+)", log)[-1])
    trained = finished(log)
    chunks = len(re.findall(r"^device: ", log, flags=re.MULTILINE))
    losses = logged_losses(log)
    if trained is None:
        steps, seconds = f"{losses[-1].step:,} (run not finished)", MISSING
    else:
        done, elapsed = trained
        steps = f"{done:,}" + (f" (of {config['steps']:,}: time limit)" if done < config["steps"] else "")
        seconds = f"{elapsed} s" + (f" in {chunks} chunks" if chunks > 1 else "")
    window = window_change(losses, config["warmup_steps"], PLATEAU_WINDOW)
    doubling = doubling_change(losses, config["warmup_steps"])
    return [
        rung.name,
        rung.world,
        f"{params / 1e6:.1f} M",
        steps,
        str(config["batch_size"]),
        f"{config['lr']:.0e}".replace("e-0", "e-"),
        seconds,
        f"{losses[-1].loss:.4f}",
        _change(window),
        _change(doubling),
        f"[{rung.train}]({base}{rung.train}/train.log)",
        fidelity(rung),
    ]


def fidelity(rung: Rung) -> str:
    """The objects fully correct with no edit (Finding 1's baseline row) of the rung's findings
    bench, full where it ran, else quick, with its caption count."""
    for folder in (rung.findings_full, rung.findings):
        numbers = _load(folder, "findings.json") if folder else None
        if numbers is not None and "full_object_accuracy" in numbers["finding1"]["none"]:
            accuracy = numbers["finding1"]["none"]["full_object_accuracy"]
            return f"{accuracy:.2f} ({numbers['config']['n_prompts']} captions)"
    return MISSING


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


def transport_status(numbers: dict) -> str:
    """Finding 3's verdict on a report's numbers under the current rule ("not decided" where
    the report decided none): `verdict_from_numbers`."""
    verdict = verdict_from_numbers(numbers)
    return "not decided" if verdict is None else verdict.status


def transport_row(rung: Rung, base: str = "results/") -> list[str]:
    numbers = _load(rung.transport, "transport.json")
    if numbers is None:
        return [rung.name, rung.world, *[MISSING] * 8]
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
    if changed := first_changed_choice(numbers):
        stage, reported, current = changed
        setting += (
            f" (chosen by the earlier score, which did not count the background: the current one takes {current} "
            f"over {reported} at the {stage} stage)"
        )
    verdict = transport_status(numbers)
    if "perfect_transfer" not in numbers and verdict != numbers.get("verdict", {}).get("status", "not decided"):
        verdict += f" (report: {numbers['verdict']['status']}, before the oracle)"
    return [
        rung.name,
        rung.world,
        f"{numbers['config']['n_pairs']} pairs; {setting}",
        *cells,
        f"{perfect_transfer_of_report(numbers)['mask_iou_with_target']:.2f}",
        verdict,
        _link(rung.transport, "transport.json", base),
    ]


def verdicts_rows() -> list[list[str]]:
    """Each finding's verdict on every rung, one row per finding: the table's verdict cells side
    by side, so that a world's rungs read across (scale) and a size's two worlds read apart (data)."""
    findings = [findings_row(r) for r in RUNGS]
    transport = [transport_row(r) for r in RUNGS]
    return [
        ["Finding 1 (functionally critical)", *[row[4] for row in findings]],
        ["Finding 2 (spatially organised)", *[row[6] for row in findings]],
        ["Finding 3 (transferable)", *[row[8] for row in transport]],
    ]


FINDINGS_HEADER = ["rung", "world", "fully correct", "Frechet distance", "Finding 1", "mIoU", "Finding 2", "report"]
TRANSPORT_HEADER = [
    "rung",
    "world",
    "pairs; chosen setting",
    "colour from source",
    "shape from source",
    "texture from source",
    "mask IoU with target",
    "perfect transfer's IoU",
    "Finding 3",
    "report",
]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def tables(base: str = "results/") -> str:
    """The three tables, their report links relative to `base` (the path to docs/results/)."""
    parts = [
        "**Verdicts** of the benches below, by world and size (the `--quick` runs; docs/ladder.md names the full "
        "ones):",
        _table(["finding", *[f"{r.world} {r.name}" for r in RUNGS]], verdicts_rows()),
        "**Training** (`python -m ditlens.builtin.train`, read from each run's train.log): transformer parameters, "
        "steps trained, batch, peak learning rate, GPU seconds (every chunk), the last logged loss (the mean "
        "rectified-flow loss of the last logged steps), the loss's change at the constant peak rate, before the "
        f"decay: over its last {PLATEAU_WINDOW:,} steps, and per doubling of the step count (a least-squares line "
        "through log loss against log step over the second half of that phase; it stays put along a power law, and "
        "only a loss that levels off brings it near 0: the plateau), and fidelity: the share of objects fully "
        "correct in the images of held-out captions, no edit (the findings bench's baseline: its full run where "
        "there is one).",
        _table(
            [
                "rung",
                "world",
                "transformer",
                "steps",
                "batch",
                "peak rate",
                "GPU time",
                "last loss",
                f"loss change, last {PLATEAU_WINDOW:,} constant-rate steps",
                "loss change per doubling of steps",
                "log",
                "fidelity",
            ],
            [training_row(r, base) for r in RUNGS],
        ),
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
            FINDINGS_HEADER,
            [findings_row(r, base) for r in RUNGS],
        ),
        "**Finding 3** (`ditlens bench transport`): at alpha = 1, the share of pairs whose colour, shape and texture "
        "come from the source, and the foreground IoU with the target alone (composition kept), for massive-channel "
        "transport / text-embedding interpolation / pixel blending, at the defaults the bench chose on that model; "
        "the foreground IoU a perfect transfer keeps on the same pairs (the oracle: the target's renders with the "
        "source's object drawn in); and the verdict under the current rule (layout kept: IoU >= "
        f"{LAYOUT_KEPT:.2f} of the perfect transfer's), decided here from the report's numbers.",
        _table(
            TRANSPORT_HEADER,
            [transport_row(r, base) for r in RUNGS],
        ),
        "**Full benches**, where they ran (`ditlens bench findings` on 64 held-out captions, `ditlens bench "
        "transport` on 32 held-out pairs; the same columns as above):",
        _table(
            FINDINGS_HEADER,
            [findings_row(replace(r, findings=r.findings_full), base) for r in RUNGS if r.findings_full],
        ),
        _table(
            TRANSPORT_HEADER,
            [transport_row(replace(r, transport=r.transport_full), base) for r in RUNGS if r.transport_full],
        ),
    ]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the tables into " + ", ".join(_names()))
    mode.add_argument("--check", action="store_true", help="exit 1 unless " + ", ".join(_names()) + " hold them")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(tables())
        return 0
    fix = "python scripts/ladder_table.py --write"
    synced = [sync_block(path, BEGIN, END, tables(base), write=args.write, fix=fix) for path, base in HOLDERS.items()]
    return 0 if all(synced) else 1


def _names() -> list[str]:
    return [str(path.relative_to(ROOT)) for path in HOLDERS]


if __name__ == "__main__":
    sys.exit(main())
