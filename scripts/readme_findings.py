"""Write the README's findings section from the committed bench reports, so that it cannot
say more (or less) than their numbers.

    python scripts/readme_findings.py          # rewrite the section in README.md
    python scripts/readme_findings.py --check  # exit 1 if README.md differs (tests/test_readme.py)

Reads docs/results/bench-gpu-findings/ and docs/results/bench-gpu-transport/ (findings.json,
transport.json and the provenance line of each report.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FINDINGS = ROOT / "docs/results/bench-gpu-findings"
TRANSPORT = ROOT / "docs/results/bench-gpu-transport"
BEGIN = "<!-- findings: written by scripts/readme_findings.py from docs/results/bench-gpu-*; do not edit by hand -->"
END = "<!-- /findings -->"


def provenance(report: Path) -> tuple[str, str]:
    """(command, commit) from a report's first line."""
    line = next(line for line in report.read_text().splitlines() if line.startswith("Command:"))
    return _found(r"Command: `([^`]*)`", line, report), _found(r"commit ([0-9a-f+dirty]+)", line, report)


def _found(pattern: str, line: str, report: Path) -> str:
    match = re.search(pattern, line)
    if match is None:
        raise ValueError(f"{report}'s first line does not match {pattern!r}: {line!r}")
    return match.group(1)


def section() -> str:
    findings = json.loads((FINDINGS / "findings.json").read_text())
    transport = json.loads((TRANSPORT / "transport.json").read_text())
    f_cmd, f_commit = provenance(FINDINGS / "report.md")
    t_cmd, t_commit = provenance(TRANSPORT / "report.md")
    v1, v2, v3 = findings["finding1"]["verdict"], findings["finding2"]["verdict"], transport["verdict"]
    f2 = findings["finding2"]
    rules = f2["foreground_rules"]
    choice = f2["foreground_choice"]
    two = transport["two_object_targets"]
    at_one = {name: table["1.0"] for name, table in two.items() if name != "pairs"}
    locality = "; ".join(f"{name} {m['shape_from_source']:.2f} / {m['others_kept']:.2f}" for name, m in at_one.items())
    image = transport["image_conditioned"]
    lines = [
        BEGIN,
        f"`{f_cmd}` (commit {f_commit}) and `{t_cmd}` (commit {t_commit}), on an NVIDIA H200; the reports, with every "
        "table and figure: [findings](docs/results/bench-gpu-findings/report.md), "
        "[transport](docs/results/bench-gpu-transport/report.md). Each headline is the bench's own verdict "
        "(`ditlens/reporting/verdicts.py`: thresholds fixed before the runs), with the figures it was decided on"
        + _layout_bar_note(transport)
        + ".",
        "",
        f"- **{v1['finding']}: {v1['status']}.** {v1['evidence']}",
        f"- **{v2['finding']}: {v2['status']}.** {v2['evidence']} Which K=2 cluster is the subject: "
        f"'{choice['default']}' (the default) picks the better labelling in "
        f"{rules[choice['default']]['generated']['agreement']:.3f} of {f2['headline_group']} (every step and block), "
        f"'high' (the rule ditlens used before) in {rules['high']['generated']['agreement']:.3f}"
        + (
            ": the higher-valued cluster is mostly the background."
            if rules["high"]["generated"]["agreement"] < 0.5
            else "."
        ),
        f"- **{v3['finding']}: {v3['status']}.** {v3['evidence']} Two-object targets at alpha = 1, shape moved / "
        f"other object kept: {locality}"
        + (
            " (the chosen streams = txt edit no image token, so every mask origin acts alike)"
            if transport["chosen"]["streams"] == "txt"
            else ""
        )
        + f". Image-conditioned (k = {transport['chosen']['k']}): the reference's colour "
        f"{image['renoise']['colour_from_source']:.2f} and shape {image['renoise']['shape_from_source']:.2f} "
        f"re-noised, {image['invert']['colour_from_source']:.2f} and {image['invert']['shape_from_source']:.2f} "
        "ODE-inverted.",
        END,
    ]
    return "\n".join(lines)


def _layout_bar_note(transport: dict) -> str:
    """For a transport report written before Finding 3's layout bar became a share of the
    perfect transfer's IoU: what its numbers say under the current rule."""
    if "perfect_transfer" in transport:
        return ""
    from ditlens.bench.transport import perfect_transfer_of_report, verdict_from_numbers

    now = verdict_from_numbers(transport)
    if now is None:
        return ""
    oracle = perfect_transfer_of_report(transport)["mask_iou_with_target"]
    said = transport["verdict"]["status"]
    return (
        ". Finding 3's layout bar has since become a share of a perfect transfer's foreground IoU "
        f"([docs/transport.md](docs/transport.md#the-verdicts-layout-bar-a-share-of-the-perfect-transfers); "
        f"{oracle:.2f} on these pairs): under it the transport report's numbers "
        + ("give the same verdict" if now.status == said else f"say {now.status!r}, not {said!r}")
    )


def rewrite(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + section() + text[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if README.md's section is not what the reports say"
    )
    args = parser.parse_args()
    text = README.read_text()
    new = rewrite(text)
    if args.check:
        if new != text:
            print(
                "README.md's findings section differs from the reports: run python scripts/readme_findings.py",
                file=sys.stderr,
            )
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
