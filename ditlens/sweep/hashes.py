"""SHA-256 of files, remembered between runs: a model of many GB is read once, and again only
when its files change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..io.outputs import write_atomic


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileHashes:
    """SHA-256 of files, remembered in a JSON file (`cache`, e.g. OUT/.file-hashes.json) by
    path, size, mtime and ctime. ctime as well as mtime because a copy that keeps times
    (cp -p, rsync -t) sets mtime back but cannot set ctime. Without `cache`, every file is
    read each time."""

    def __init__(self, cache: Path | None = None):
        self.cache = cache
        self.known: dict[str, dict[str, Any]] = {}
        self.used: dict[str, dict[str, Any]] = {}  # what this run hashed or looked up: saved
        if cache is not None:
            try:
                data = json.loads(cache.read_text())
                if isinstance(data, dict) and data.get("version") == 1 and isinstance(data.get("files"), dict):
                    self.known = data["files"]
            except (OSError, ValueError):
                pass  # none yet, or damaged: hash again

    def __call__(self, path: Path) -> str:
        real = path.resolve()  # a hub snapshot's files are links into its blobs/
        st = real.stat()  # before reading: a file that changes while it is hashed is hashed again next time
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        entry = self.known.get(str(real))
        if not (isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str)):
            entry = {"stat": stamp, "sha256": file_sha256(real)}
        self.used[str(real)] = entry
        return entry["sha256"]

    def save(self) -> None:
        if self.cache is not None and self.used != self.known:  # a cache: lost in a crash, it is only hashed again
            write_atomic(self.cache, json.dumps({"version": 1, "files": self.used}, indent=1) + "\n", sync=True)
