"""Text files a user gives (prompts, prompt pairs): read as UTF-8, with one message for each
way the path can be wrong, naming the file and what it should hold."""

from __future__ import annotations

from pathlib import Path


def check_user_file(path: Path, what: str, wanted: str) -> None:
    """A file the user named is there: not a folder (`wanted` says what to give instead, "an
    image file"), not missing. `what` names it in messages ("--prompts-file", "Pairs file")."""
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give {wanted}.")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")


def read_user_text(path: str | Path, what: str, holds: str) -> str:
    """The text of the file at `path`, named `what` in messages; `holds` says what it should
    hold ("one prompt per line")."""
    path = Path(path)
    check_user_file(path, what, f"a text file with {holds}")
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark is no part of the first line
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8."
        ) from None
