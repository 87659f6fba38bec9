"""Output folders: replaced whole, by one run at a time, and never a folder of the user's.

    with output_folder("runs/find") as tmp:     # write everything into tmp
        stats.save(tmp / "stats.safetensors")
        ...                                     # on success tmp replaces runs/find as a whole

The rule (also in `ditlens --help` and docs/outputs.md):

- A run writes into a temporary sibling, `.tmp-NAME-PID`, and replaces the folder as a whole
  when it is done: a rerun never mixes old and new files, and a run that fails or is
  interrupted leaves the previous results as they were.
- A lock file beside the folder, `NAME.lock` (`fcntl.flock`, not waiting), is held for the
  whole run: a second run on the same folder stops at once with a message, exit code 2.
- Holding the lock, a run first removes the temporary folders that killed runs left beside
  the folder (a one-line note on stderr says so).
- A folder is replaced only if it is empty or ditlens wrote it: the marker file
  `.ditlens-output` lists every file ditlens put there. A folder without one (the user's, or
  one written by ditlens before output folders were marked) and a marked folder that holds
  files not on its list are refused, not touched. So are '' and '.', the current folder and
  any folder above it, and the home folder.

One file, whole or not at all (a figure, a JSON summary, a safetensors file written outside
an output folder, a sweep item): `write_atomic(path, data)` with bytes or text, or
`write_atomic(path, lambda tmp: fig.savefig(tmp))` for writers that take a path.

`output_lock(out)` takes the lock and makes the checks without writing; a command that
holds it from its start is refused before its work, not after, and `output_folder(out)`
inside reuses it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"  # the prefix sweep.py uses too: one rule for "half-written, ignore"
MARKER = ".ditlens-output"
_MARKER_NOTE = (
    "Written by ditlens. The next run with this folder as its output folder replaces the whole "
    "folder; a file that is not listed here makes that run stop instead, leaving the folder as it is."
)

_local = threading.local()  # per thread: two threads on one folder are two runs


class OutputFolderError(ValueError):
    """An output folder that may not be written now: refused, or held by another run."""


def write_atomic(path: str | Path, data: bytes | str | Callable[[Path], object], *, sync: bool = False) -> Path:
    """Write one file so that it appears whole or not at all: into a temporary sibling
    `.tmp-NAME-PID` (which keeps NAME's suffix last, so writers that pick a format from it,
    such as matplotlib and PIL, still do), then renamed over `path`. `data` is the content
    (bytes or text) or a function that writes to the path it is given. `sync=True` also
    fsyncs before the rename, for files that must survive a crash of the machine (sweep
    items), not only of the process."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.stem}-{os.getpid()}{path.suffix}")
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        if sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _writing() -> set[Path]:
    """Temporary folders of the output_folder blocks this thread has open."""
    return _local.__dict__.setdefault("writing", set())


def _held() -> dict[Path, int]:
    """Output folders whose lock this thread holds -> the lock file's descriptor."""
    return _local.__dict__.setdefault("held", {})


@contextmanager
def output_folder(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to write into; it replaces `out` as a whole when the block
    finishes. Raises OutputFolderError for a folder it may not replace or another run holds."""
    absolute = Path(out).absolute()
    if any(p in _writing() for p in (absolute, *absolute.parents)):
        # inside an open output_folder (e.g. a result's save() called by the CLI): that one
        # replaces everything at the end, and removes it on error
        absolute.mkdir(parents=True, exist_ok=True)
        yield absolute
        return
    with output_lock(out) as path:
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")
        kept = "the previous results in it were left as they were" if path.exists() else "nothing was written"
        try:
            tmp.mkdir()
        except OSError as err:
            raise _naming(err, out, kept) from None
        _writing().add(tmp)
        try:
            yield tmp
            _write_marker(tmp)
            _replace(path, tmp, out)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, OSError) and err.errno is not None:  # not e.g. FileNotFoundError("Prompts file ...")
                raise _naming(err, out, kept) from None
            raise
        finally:
            _writing().discard(tmp)


@contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold the output folder `out`: refuse it if it may not be replaced, lock it against other
    runs, remove what killed runs left beside it. Yields its absolute path; writes nothing."""
    path = _resolve(out)
    if path in _held():
        yield path
        return
    created: list[Path] = []  # parent folders made here, removed again if nothing comes of it
    fd = None
    done = False
    try:
        try:
            created = _make_parent(path)
            fd = _lock(path, out)
            _remove_stale(path, out)
            _check_replaceable(path, out)
        except OSError as err:
            raise _naming(err, out, "nothing was written") from None
        _held()[path] = fd
        yield path
        done = True
    finally:
        _held().pop(path, None)
        if fd is not None:
            _unlock(path, fd)
        if not done:
            _remove_created(created)


# ---- the checks ------------------------------------------------------------------------------


def _resolve(out: str | Path) -> Path:
    """The absolute, symlink-free path of `out`; '' and folders whose replacement would take
    the current or the home folder with it are refused."""
    again = "and a run replaces its output folder as a whole. Give it a folder of its own, e.g. --out runs/NAME."
    if str(out).strip() == "":
        raise OutputFolderError(f"Output folder '' refused: an empty name means the current folder, {again}")
    path = Path(os.path.realpath(out))
    folders = [("the current folder", Path.cwd().resolve())]
    try:
        folders.append(("the home folder", Path.home().resolve()))
    except (RuntimeError, KeyError):  # no home folder known
        pass
    for what, folder in folders:
        if path == folder or path in folder.parents:
            where = what if path == folder else f"a folder above {what}"
            raise OutputFolderError(f"Output folder {str(out)!r} refused: it is {where}, {again}")
    return path


def _check_replaceable(path: Path, out: str | Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{str(out)!r} is a file, not a folder")
    entries = _entries(path)
    if not entries:
        return
    listed = _listed(path)
    again = "and a run replaces its output folder as a whole"
    if listed is None:
        raise OutputFolderError(
            f"Output folder {str(out)!r} holds files that ditlens did not mark as its own ({_some(entries)}; no "
            f"{MARKER} file), "
            f"{again}. Choose another --out, or delete the folder first if it is an old ditlens result."
        )
    extra = entries - listed - {MARKER}
    if extra:
        raise OutputFolderError(
            f"Output folder {str(out)!r} holds files that ditlens did not write there ({_some(extra)}), {again}. "
            "Move them out, or choose another --out."
        )


def _entries(folder: Path) -> set[str]:
    """Every file and folder under `folder`, as relative POSIX paths; links not followed."""
    found = set()
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found |= {(rel / name).as_posix() for name in dirs + files}
    return found


def _listed(folder: Path) -> set[str] | None:
    """What the marker says ditlens wrote; None without a readable marker."""
    try:
        return set(json.loads((folder / MARKER).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_marker(tmp: Path) -> None:
    text = json.dumps({"note": _MARKER_NOTE, "files": sorted(_entries(tmp))}, indent=1)
    (tmp / MARKER).write_text(text + "\n")


def _some(names: set[str]) -> str:
    first = sorted(names)[:3]
    return ", ".join(first) + (", ..." if len(names) > 3 else "")


# ---- lock, stale folders, replacement --------------------------------------------------------


def _lock(path: Path, out: str | Path) -> int:
    """Take `NAME.lock` beside the folder without waiting; its descriptor."""
    lock = path.with_name(path.name + ".lock")
    for _ in range(3):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise OutputFolderError(
                f"Output folder {str(out)!r} is in use: another run (process {holder or 'unknown'}) holds its lock "
                f"{str(lock)!r}. Wait for that run to finish, or choose another --out."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # a run that just finished removed this lock file: take the new one
    raise OutputFolderError(f"Output folder {str(out)!r} is in use: its lock {str(lock)!r} keeps changing hands.")


def _unlock(path: Path, fd: int) -> None:
    try:
        path.with_name(path.name + ".lock").unlink()  # while still holding it (see _lock)
    except FileNotFoundError:
        pass
    os.close(fd)


def _remove_stale(path: Path, out: str | Path) -> None:
    """Remove the temporary folders that killed runs left beside `path` (no other run can be
    writing: this one holds the lock). A run killed between its two renames left the previous
    results as `.tmp-NAME-PID.old` and no folder: those are put back first."""
    pattern = re.compile(re.escape(f"{TMP_PREFIX}{path.name}-") + r"\d+(\.old)?")
    stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    olds = sorted((p for p in stale if p.name.endswith(".old")), key=lambda p: p.stat().st_mtime)
    if olds and not path.exists() and not path.is_symlink():
        os.rename(olds[-1], path)
        stale.remove(olds[-1])
        _note(f"put back {str(out)!r} from {olds[-1].name}, left by a run interrupted while replacing it")
    for p in stale:
        shutil.rmtree(p)
    if stale:
        names = ", ".join(sorted(p.name for p in stale))
        _note(f"removed {names} beside {str(out)!r}, left by an interrupted run")


def _replace(path: Path, tmp: Path, out: str | Path) -> None:
    if not path.exists():
        os.rename(tmp, path)
        return
    _check_replaceable(path, out)  # again: files put there while this run worked are not deleted
    old = tmp.with_name(tmp.name + ".old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)  # the previous results back in place
        raise
    shutil.rmtree(old, ignore_errors=True)  # what is left of it, the next run removes


def _make_parent(path: Path) -> list[Path]:
    """Create the parent folders of `path`; those created, outermost first."""
    nearest = next(p for p in path.parents if p.exists())
    if not nearest.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{str(nearest)!r} is a file, not a folder")
    created = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            break  # not empty (someone else writes there too) or already gone


def _note(message: str) -> None:
    print(f"ditlens: note: {message}", file=sys.stderr)


def _naming(err: OSError, out: str | Path, kept: str) -> OSError:
    """The same kind of OSError (PermissionError, ...), its one-line message naming the
    output folder and what became of it."""
    message = f"Cannot write the output folder {str(out)!r}: {err.strerror or err}; {kept}."
    return OSError(err.errno, message)
