"""docs/real-models.md's family x capability table says what tests/test_cli_families.py runs."""

from __future__ import annotations

from pathlib import Path

from .full_pipelines import FAMILIES, PIPELINE_CLASSES
from .test_cli_families import NON_SQUARE, NOT_INVERTIBLE, ROWS_PER_CALL

DOC = Path(__file__).resolve().parent.parent / "docs" / "real-models.md"


def _rows() -> dict[str, list[str]]:
    lines = DOC.read_text().split("## Family x capability x guidance layout", 1)[1].splitlines()
    table = [line for line in lines if line.startswith("| ") and "`" in line]
    return {
        next(cls for cls in PIPELINE_CLASSES.values() if f"`{cls.__name__}`" in line).__name__: [
            cell.strip() for cell in line.strip("|").split("|")
        ]
        for line in table
    }


def test_one_row_per_tested_family_with_its_layout_and_sizes():
    rows = _rows()
    assert set(rows) == {PIPELINE_CLASSES[f].__name__ for f in FAMILIES}
    for family in FAMILIES:
        cells = rows[PIPELINE_CLASSES[family].__name__]
        assert cells[1].startswith(str(ROWS_PER_CALL[family]) + ":"), (family, cells[1])
        h, w = NON_SQUARE[family]
        assert f"32x32, {h}x{w}" in cells[4], (family, cells[4])


def test_every_capability_is_supported_or_refused_with_a_reason():
    for family in FAMILIES:
        cells = _rows()[PIPELINE_CLASSES[family].__name__]
        for column, cell in enumerate(cells[2:], start=2):
            invert = column == 8
            if invert and family in NOT_INVERTIBLE:
                assert cell.startswith("refused") and len(cell) > 40, cell  # a reason, not a bare "no"
            else:
                assert cell.startswith("yes"), (family, column, cell)
