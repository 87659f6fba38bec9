"""Re-reading a transport report's defaults sweep under the current score (first_changed_choice)."""

from __future__ import annotations

import json
from pathlib import Path

from ditlens.bench.transport import first_changed_choice

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def _row(shape: float, iou: float = 0.5, ghosting: float = 0.1, background: float = 1.0) -> dict[str, float]:
    return {
        "colour_from_source": 0.0,
        "shape_from_source": shape,
        "mask_iou_with_target": iou,
        "ghosting": ghosting,
        "background_kept": background,
    }


def _report(mask_all_background: float, chosen_mask: str) -> dict:
    """A sweep whose k, window and sites stages are plain and whose mask stage turns on the
    background: mask = all moves more shape (0.6 against 0.5) at the same IoU."""
    rows = {
        "k=2": _row(0.0),
        "k=32": _row(0.5),
        "random k=32 (control)": _row(0.0),  # a control, not a candidate
        "window=all": _row(0.5),
        "window=[0,2)": _row(0.1),
        "sites=all": _row(0.5),
        "sites=double": _row(0.2),
        "mask=source": _row(0.5),
        "mask=all": _row(0.6, background=mask_all_background),
        "streams=both": _row(0.6, background=mask_all_background),
        "streams=img": _row(0.1),
    }
    chosen = {"k": 32, "step_window": None, "blocks": "all", "mask": chosen_mask, "streams": "both"}
    return {"defaults_sweep": rows, "chosen": {**chosen, "by_measurement": True}}


def test_a_choice_the_current_score_makes_too_is_left_alone():
    assert first_changed_choice(_report(mask_all_background=1.0, chosen_mask="all")) is None


def test_the_first_stage_the_current_score_decides_otherwise_is_named():
    """mask = all redraws the background in 9 of 10 images: the current score takes the source's
    mask, where a score without the background took mask = all. The streams stage ran under
    mask = all and is not read."""
    assert first_changed_choice(_report(mask_all_background=0.1, chosen_mask="all")) == (
        "mask",
        "mask=all",
        "mask=source",
    )


def test_a_report_that_chose_nothing_by_measurement_has_nothing_to_re_read():
    report = _report(mask_all_background=0.1, chosen_mask="all")
    report["chosen"]["by_measurement"] = False
    assert first_changed_choice(report) is None


def test_the_committed_reports():
    """The shipped model's 32-pair run chose what the current score chooses (TransportConfig's
    defaults stand); v2 l's 32-pair run at 6e-4 chose mask = all, which the current score does
    not (docs/transport.md, "Why the background factor")."""
    shipped = json.loads((RESULTS / "bench-gpu-transport" / "transport.json").read_text())
    assert first_changed_choice(shipped) is None
    v2_l = json.loads((RESULTS / "ladder" / "v2-l-transport-full" / "transport.json").read_text())
    assert first_changed_choice(v2_l) == ("mask", "mask=all", "mask=source")
