"""The README's findings section is what the committed bench reports say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_findings_section_is_generated_from_the_reports():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/readme_findings.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_section_changes_when_a_verdict_does(tmp_path, monkeypatch):
    """A failing finding is worded as failing: the generator reads the verdict, not fixed text."""
    import importlib.util
    import json
    import shutil

    spec = importlib.util.spec_from_file_location("readme_findings", ROOT / "scripts/readme_findings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    findings = tmp_path / "findings"
    shutil.copytree(module.FINDINGS, findings)
    numbers = json.loads((findings / "findings.json").read_text())
    numbers["finding2"]["verdict"] |= {
        "status": "does not hold",
        "evidence": "Best-site mIoU: top-2 0.100 vs random-2 0.700.",
    }
    (findings / "findings.json").write_text(json.dumps(numbers))
    monkeypatch.setattr(module, "FINDINGS", findings)
    assert "**Finding 2 (spatially organised): does not hold.** Best-site mIoU: top-2 0.100" in module.section()
