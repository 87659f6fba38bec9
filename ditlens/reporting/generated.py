"""Blocks of generated markdown kept inside hand-written files (docs/ladder.md, the README):
the text between a BEGIN and an END marker belongs to a script, which writes it or checks it."""

from __future__ import annotations

import sys
from pathlib import Path


def held_block(path: Path, begin: str, end: str) -> str | None:
    """The text between `begin` and `end` in `path`, stripped; None where it has no such block."""
    text = path.read_text()
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def sync_block(path: Path, begin: str, end: str, body: str, *, write: bool, fix: str) -> bool:
    """Write `body` between the markers (write=True) or check that it is there; False, with a
    message on stderr naming `fix` (the command that writes it), where the file has no block or
    holds another text."""
    held = held_block(path, begin, end)
    if held is None:
        print(f"{path} has no {begin} ... {end} block", file=sys.stderr)
        return False
    if write:
        before, rest = path.read_text().split(begin, 1)
        path.write_text(before + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1])
    elif held != body:
        print(f"{path}'s generated block differs from what it is made of; run `{fix}`", file=sys.stderr)
        return False
    return True
