"""Result folders that appear whole or not at all.

    with output_folder("runs/find") as tmp:     # write everything into tmp
        stats.save(tmp / "stats.safetensors")
        ...                                     # on success tmp becomes runs/find

A new folder is written as a hidden temporary sibling (`.tmp-NAME-PID`) and renamed into
place when the block finishes. An existing folder is never deleted (it may be `.` or hold
the user's own files): the new files are written into a temporary folder inside it and
then moved in, replacing files of the same name and keeping the rest, as before. On any
error the temporary folder is removed, so a full disk or a crash mid-way leaves no partial
result; an OSError comes back as one that names the output folder.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"  # the prefix sweep.py uses too: one rule for "half-written, ignore"

_writing: set[Path] = set()  # temporary folders of the output_folder blocks now open


@contextmanager
def output_folder(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to write into; it becomes `out` when the block finishes."""
    out = Path(out)
    if any(p in _writing for p in (out.absolute(), *out.absolute().parents)):
        # inside an open output_folder (e.g. a result's save() called by the CLI): that one
        # renames everything at the end, and removes it on error
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    existed = out.is_dir()
    created: list[Path] = []  # parent folders made here, removed again on error
    try:
        nearest = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
        if not nearest.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{str(nearest)!r} is a file, not a folder")
        if existed:
            tmp = out / f"{TMP_PREFIX}{os.getpid()}"
        else:
            created = [p for p in reversed(out.absolute().parents) if not p.exists()]
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f"{TMP_PREFIX}{out.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of an earlier process with this pid
        tmp.mkdir()
    except OSError as err:
        _remove_created(created)
        raise _naming(err, out, "nothing was written") from None
    _writing.add(tmp.absolute())
    kept = "the folder was left as it was" if existed else "nothing was written"
    try:
        yield tmp
        if existed:
            kept = "some files in it may already be replaced"  # renames within one folder: unlikely to fail
            _move_into(tmp, out)
            tmp.rmdir()
        else:
            os.replace(tmp, out)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        if isinstance(err, OSError) and err.errno is not None:  # not e.g. FileNotFoundError("Prompts file ...")
            raise _naming(err, out, kept) from None
        raise
    finally:
        _writing.discard(tmp.absolute())


def _move_into(src: Path, dst: Path) -> None:
    """Move the contents of src into dst, merging subfolders that exist in both."""
    for path in sorted(src.iterdir()):
        target = dst / path.name
        if path.is_dir() and target.is_dir() and not target.is_symlink():
            _move_into(path, target)
            path.rmdir()
        else:
            os.replace(path, target)


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            break  # not empty (someone else writes there too) or already gone


def _naming(err: OSError, out: Path, kept: str) -> OSError:
    """The same kind of OSError (PermissionError, ...), its one-line message naming the
    output folder and what became of it."""
    message = f"Cannot write the output folder {str(out)!r}: {err.strerror or err}; {kept}."
    return OSError(err.errno, message)
