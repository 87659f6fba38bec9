"""ditlens.reporting.generated: a script's block between two markers, written or checked."""

from __future__ import annotations

from ditlens.reporting.generated import held_block, sync_block

BEGIN, END = "<!-- table -->", "<!-- /table -->"


def test_write_then_check_and_a_stale_or_missing_block_fails(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    assert not sync_block(doc, BEGIN, END, "new", write=False, fix="make table")
    assert "run `make table`" in capsys.readouterr().err
    assert sync_block(doc, BEGIN, END, "new", write=True, fix="make table")
    assert doc.read_text() == f"intro\n{BEGIN}\nnew\n{END}\noutro\n" and held_block(doc, BEGIN, END) == "new"
    assert sync_block(doc, BEGIN, END, "new", write=False, fix="make table")
    doc.write_text("no markers\n")
    assert held_block(doc, BEGIN, END) is None
    assert not sync_block(doc, BEGIN, END, "new", write=True, fix="make table")
    assert doc.read_text() == "no markers\n" and "has no" in capsys.readouterr().err
