"""A sweep's output folder on disk: one result folder per item, complete or absent.

    OUT/manifest.json          every item and the identity it was planned under
    OUT/.file-hashes.json      SHA-256 of the model's files (hashes.FileHashes)
    OUT/items/ID/result.json   written last: the item's metrics and the size and SHA-256 of each file

An item is computed in `items/.tmp-ID-PID/`, every file fsynced, result.json written last,
then the folder renamed to `items/ID/` (a rename is atomic) and the parent fsynced: after a
crash or `kill -9` a result folder is whole or not there, and `read_result` says which.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..io.outputs import TMP_PREFIX, write_atomic
from .config import SweepConfig
from .hashes import file_sha256
from .identity import FORMAT_VERSION
from .plan import Item

RESULT = "result.json"
MANIFEST = "manifest.json"
HASHES = ".file-hashes.json"  # in OUT: SHA-256 of the model's files, so a large model is read once
CLIP_FEATURES = "clip_image.safetensors"  # a disrupt item's CLIP image embedding, with --clip: merge's CLIP-I


def default_out(config: SweepConfig) -> Path:
    return config.out or Path("runs") / f"sweep-{config.path.stem}"


# ---- writing, durably ------------------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write, flush and fsync a new file (never overwrites)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes | str) -> None:
    """A file that appears whole or not at all and survives a crash of the machine: written
    atomically and fsynced, and its folder fsynced so that the rename is kept too."""
    write_atomic(path, data, sync=True)
    _fsync_path(path.parent)


def write_json(path: Path, data: Any) -> None:
    write_durable(path, json.dumps(data, indent=1) + "\n")


# ---- item results ----------------------------------------------------------------------------


def read_result(folder: Path, item_id: str, verify: bool = True) -> dict[str, Any] | None:
    """The item's result record if its folder is complete (every file present with its
    recorded size and, with `verify`, SHA-256), else None."""
    try:
        record = json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("done") is not True or record.get("id") != item_id:
        return None
    for name, info in record.get("files", {}).items():
        p = folder / name
        try:
            if p.stat().st_size != info["bytes"] or (verify and file_sha256(p) != info["sha256"]):
                return None
        except (OSError, KeyError, TypeError):
            return None
    return record


def _seal(tmp: Path, item: Item, identity: dict[str, Any], metrics: dict[str, Any]) -> None:
    """fsync the item's files, then write result.json last (the `done` record)."""
    files = {}
    for p in sorted(tmp.iterdir()):
        if p.name.endswith(".tmp") or p.name.startswith(TMP_PREFIX):
            raise RuntimeError(f"internal: a half-written file {p.name} in {tmp}")
        _fsync_path(p)
        files[p.name] = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
    record = {
        "id": item.id,
        "command": item.command,
        "prompt": item.prompt,
        "seed": item.seed,
        "settings": item.settings,
        "identity": identity,
        "metrics": metrics,
        "files": files,
        "done": True,
    }
    _write_file(tmp / RESULT, (json.dumps(record, indent=1) + "\n").encode())
    _fsync_path(tmp)


def write_item(
    items_dir: Path, item: Item, identity: dict[str, Any], compute: Callable[[Path], dict[str, Any]]
) -> None:
    """Run `compute(folder)` (it writes the item's files, returns its metrics) into a temporary
    folder, seal it and rename it into place. On any error nothing of the item is kept."""
    final = items_dir / item.id
    tmp = items_dir / f"{TMP_PREFIX}{item.id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _seal(tmp, item, identity, compute(tmp))
        if final.exists():  # an incomplete leftover (complete ones are skipped before)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_path(items_dir)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(
            err.errno,
            f"{err.strerror or err} while writing item {item.id}; nothing of that item was kept. "
            "Free space or fix the folder (or choose another --out), then rerun the same command: "
            "finished items are kept and skipped",
            str(err.filename or tmp),
        ) from None
    except ValueError as err:  # e.g. NaN activations: say which item, keep the type
        shutil.rmtree(tmp, ignore_errors=True)
        raise type(err)(f"Item {item.id} ({item.command}, prompt {item.prompt!r}, seed {item.seed}): {err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_png(image: torch.Tensor, path: Path) -> None:
    """One (3, H, W) image in [0, 1] as a PNG."""
    from ..generation import to_pil

    to_pil(image[None])[0].save(path, format="PNG")


def load_png(path: Path) -> torch.Tensor:
    """A PNG as a (3, H, W) float tensor in [0, 1]."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


# ---- the folder ------------------------------------------------------------------------------


def check_writable(out: Path) -> None:
    """Fail before any work if `out` cannot become a writable folder (nothing is created)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR,
            f"Output folder {str(out)!r} cannot be created: {str(probe)!r} is a file, not a folder. "
            "Give --out a folder path",
            str(out),
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES,
            f"Output folder {str(out)!r} is not writable (no write permission on {str(probe)!r}). "
            "Give --out a folder you can write to",
            str(out),
        )


@contextmanager
def lock(out: Path) -> Iterator[None]:
    """One sweep at a time per output folder (the kernel drops the lock if the process dies).
    Creates the output folder: call it only once the sweep has been validated."""
    import fcntl

    (out / "items").mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"Another sweep is writing to {str(out)!r}; wait for it to finish, or give another --out."
            ) from None
        yield


def previous_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest a former run left in `out` (None if none). A folder of another sweep
    format is refused: its item ids mean other things, so its results cannot be checked."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        identity = manifest["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none (or unreadable: rank 0 writes it again before any item runs)
    if not isinstance(identity, dict):
        return None
    found = identity.get("format", identity.get("version"))  # format 1 called it "version"
    if found == FORMAT_VERSION:
        return manifest
    if isinstance(found, int) and found < FORMAT_VERSION:
        why = (
            "whose item ids do not cover the content of the model's weights, so its results cannot be checked "
            "against the model"
            if found == 1
            else "whose item ids mean other things"
        )
        hint = "merge them with the ditlens version that wrote them"
    else:
        why, hint = "which this ditlens cannot read", "update ditlens"
    raise ValueError(
        f"Output folder {str(out)!r} holds a sweep of format {found!r} (this ditlens writes format "
        f"{FORMAT_VERSION}), {why}. To compute its items again give another --out, or delete "
        f"{str(out / 'items')!r} and {str(out / MANIFEST)!r}; to keep its results, {hint}."
    )
