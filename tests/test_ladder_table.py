"""docs/ladder.md's ladder table is what scripts/ladder_table.py reads from the committed reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("ladder_table", ROOT / "scripts" / "ladder_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_the_docs_table_is_the_reports():
    assert _script().main(["--check"]) == 0


def test_a_findings_row_by_hand():
    """The shipped model's row, computed here from its findings.json without the script's helpers."""
    table = _script()
    rung = table.RUNGS[0]
    numbers = json.loads((ROOT / "docs" / "results" / rung.findings / "findings.json").read_text())
    f1 = numbers["finding1"]
    k = min(numbers["config"]["ks"])
    randoms = [f1[name]["full_object_accuracy"] for name in f1 if name.startswith(f"random-{k}#")]
    expected = (
        f"k = {k}: {f1['none']['full_object_accuracy']:.2f} / {f1[f'top-{k}']['full_object_accuracy']:.2f} / "
        f"{f1[f'bottom-{k}']['full_object_accuracy']:.2f} / {sum(randoms) / len(randoms):.2f}"
    )
    row = table.findings_row(rung)
    assert (
        row[2] == expected and row[4] == f1["verdict"]["status"] and row[6] == numbers["finding2"]["verdict"]["status"]
    )


def test_a_missing_report_says_so(tmp_path, monkeypatch):
    table = _script()
    monkeypatch.setattr(table, "RESULTS", tmp_path)
    rung = table.RUNGS[0]
    for row, width in ((table.activations_row(rung), 6), (table.findings_row(rung), 8), (table.transport_row(rung), 9)):
        assert len(row) == width and row[2:] == [table.MISSING] * (width - 2)


def test_every_report_link_resolves_from_the_file_that_holds_it():
    """docs/ladder.md links results/..., the README docs/results/...: each link opens a committed file."""
    import re

    table = _script()
    for path, base in table.HOLDERS.items():
        links = re.findall(r"\]\((" + re.escape(base) + r"[^)]+)\)", table.tables(base))
        assert links, path
        missing = [link for link in links if not (path.parent / link).is_file()]
        assert not missing, (path, missing)
