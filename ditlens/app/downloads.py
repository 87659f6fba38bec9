"""Each run's files, as its `ditlens` command writes them, for the page's download buttons.

A run writes into a fresh folder (`Downloads.folder`) what its command writes, plus command.txt,
that command line (`cli_command`); the page offers the folder as a zip. Only the last few runs
are kept on disk, all sessions together.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..io.outputs import output_folder
from .pictures import PLOTTING


class Downloads:
    """Folders for the page's download buttons. Each run writes the files its `ditlens`
    command writes (and command.txt, that command) into a fresh folder under one temporary
    root; the page offers it as a zip. The last `size` runs are kept, all sessions together
    (older ones are deleted when a new one starts), the root goes when the process ends, and
    roots left by processes that no longer run are removed at start."""

    PREFIX = "ditlens-app-runs-"

    def __init__(self, size: int):
        self.size = size
        self._remove_stale_roots()
        self.root = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-"))
        self._runs: deque[Path] = deque()
        self._lock = threading.Lock()  # handlers run in worker threads
        atexit.register(shutil.rmtree, self.root, True)

    def folder(self, tab: str) -> Path:
        """A new folder name (not yet made) for one run of `tab`: ditlens-TAB-YYYYmmdd-HHMMSS."""
        run = self.root / uuid.uuid4().hex[:12]
        run.mkdir()
        with self._lock:
            self._runs.append(run)
            while len(self._runs) > self.size:
                shutil.rmtree(self._runs.popleft(), ignore_errors=True)  # the oldest
        return run / f"ditlens-{tab}-{time.strftime('%Y%m%d-%H%M%S')}"

    def zip(self, folder: Path) -> Path:
        """folder.zip beside it (one top folder inside, named as the folder); the folder goes."""
        archive = Path(shutil.make_archive(str(folder), "zip", root_dir=folder.parent, base_dir=folder.name))
        shutil.rmtree(folder, ignore_errors=True)
        return archive

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    def _remove_stale_roots(cls) -> None:
        for root in Path(tempfile.gettempdir()).glob(f"{cls.PREFIX}*-*"):
            pid = root.name[len(cls.PREFIX) :].split("-")[0]
            if pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(root, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def cli_command(command: str, model: str, options: list[tuple[str, Any]]) -> str:
    """The `ditlens` command line that writes the files of a run (its zip's command.txt).
    Options whose value is None are left out (the command's default); lists are spread."""
    words = ["ditlens", command] + ([] if model == "builtin" else ["--model", model])
    for option, value in options:
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        words += [option, *(f"{v:g}" if isinstance(v, float) else str(v) for v in values)]
    return shlex.join(words)


@contextmanager
def run_files(out: str | Path | None, command: str) -> Iterator[Path]:
    """The folder a run writes its command's files into, as the CLI does (`output_folder`:
    whole or not at all, with its list of files), with command.txt: `out`, or a temporary
    one discarded after (a run from Python that asked for no files)."""
    with tempfile.TemporaryDirectory(prefix="ditlens-app-") as tmp:
        with PLOTTING, output_folder(Path(tmp) / "run" if out is None else out) as folder:
            yield folder
            (folder / "command.txt").write_text(command + "\n")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str))
