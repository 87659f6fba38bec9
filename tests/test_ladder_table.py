"""docs/ladder.md's ladder table is what scripts/ladder_table.py reads from the committed reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
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
    rung = table.RUNGS[1]
    assert rung.train, "RUNGS[1] is a ladder run with a training log"
    rows = (
        (table.training_row(rung), 12),
        (table.activations_row(rung), 6),
        (table.findings_row(rung), 8),
        (table.transport_row(rung), 10),
    )
    for row, width in rows:
        assert len(row) == width and row[2:] == [table.MISSING] * (width - 2)


def test_a_training_row_by_hand():
    """v2-l's row against its train.log read here: steps and seconds of the last 'trained' line."""
    import re

    table = _script()
    rung = next(r for r in table.RUNGS if r.train.endswith("v2-l"))
    log = (ROOT / "docs" / "results" / rung.train / "train.log").read_text()
    done, seconds = re.findall(r"trained (\d+) steps in (\d+) s", log)[-1]
    row = table.training_row(rung)
    config = json.loads((ROOT / "docs" / "results" / rung.train / "train_config.json").read_text())
    assert row[3].replace(",", "").startswith(done) and row[6].startswith(f"{seconds} s")
    assert float(row[5]) == config["lr"]
    # fidelity: the full findings bench's no-edit row, where it ran (v2-l's did)
    full = json.loads((ROOT / "docs" / "results" / rung.findings_full / "findings.json").read_text())
    assert row[11] == f"{full['finding1']['none']['full_object_accuracy']:.2f} (64 captions)"


def test_every_report_link_resolves_from_the_file_that_holds_it():
    """docs/ladder.md links results/..., the README docs/results/...: each link opens a committed file."""
    import re

    table = _script()
    for path, base in table.HOLDERS.items():
        links = re.findall(r"\]\((" + re.escape(base) + r"[^)]+)\)", table.tables(base))
        assert links, path
        missing = [link for link in links if not (path.parent / link).is_file()]
        assert not missing, (path, missing)


def test_the_verdicts_row_layout_by_hand():
    """Each verdict cell is that rung's report's own verdict, in RUNGS order; Finding 3's is
    decided again under the current rule (the report's verdict beside it where they differ)."""
    table = _script()
    rows = table.verdicts_rows()
    for column, rung in enumerate(table.RUNGS, start=1):
        findings = json.loads((ROOT / "docs" / "results" / rung.findings / "findings.json").read_text())
        transport = json.loads((ROOT / "docs" / "results" / rung.transport / "transport.json").read_text())
        assert rows[0][column] == findings["finding1"]["verdict"]["status"]
        assert rows[1][column] == findings["finding2"]["verdict"]["status"]
        assert rows[2][column].split(" (report: ")[0] == table.transport_status(transport)


def test_finding_3_re_derived_from_a_report_is_its_own_verdict():
    """The table decides Finding 3 again from each report's numbers under the current rule;
    where the report was written under that rule (it holds the perfect-transfer oracle), the
    two must agree, and where it was not, the table says what the report said."""
    table = _script()
    reports = {folder for r in table.RUNGS for folder in (r.transport, r.transport_full) if folder}
    current = 0
    for folder in sorted(reports):
        numbers = json.loads((ROOT / "docs" / "results" / folder / "transport.json").read_text())
        if "perfect_transfer" in numbers:
            current += 1
            assert table.transport_status(numbers) == numbers["verdict"]["status"], folder
    assert current >= 1, "no report was written under the current rule"
    for rung in table.RUNGS:
        for folder in (rung.transport, rung.transport_full):
            if not folder:
                continue
            numbers = json.loads((ROOT / "docs" / "results" / folder / "transport.json").read_text())
            cell = table.transport_row(replace(rung, transport=folder))[8]
            status = table.transport_status(numbers)
            said = numbers["verdict"]["status"]
            assert cell == (status if status == said else f"{status} (report: {said}, before the oracle)"), folder
