"""`ditlens sweep CONFIG`: load the model once per process, check every job setting against it,
lay out the output folder (rank 0), then run this process's shard of the unfinished items."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import SweepConfig
from .dist import Distributed, distributed
from .hashes import FileHashes
from .identity import Fingerprint, versions, why_changed
from .plan import Item, fingerprinted_plan, plan
from .runner import Runner
from .store import (
    HASHES,
    MANIFEST,
    TMP_PREFIX,
    check_writable,
    default_out,
    lock,
    previous_manifest,
    read_result,
    write_json,
)


@dataclass
class SweepReport:
    total: int  # items in the sweep
    skipped: int  # already complete before this run (all ranks)
    ran: int  # finished by this run (all ranks)
    out: Path


def run_sweep(
    config: SweepConfig,
    out: str | Path | None = None,
    *,
    allow_download: bool = False,
    quiet: bool = False,
    say: Callable[[str], None] = print,
) -> SweepReport:
    """Run this process's share of the sweep's unfinished items; see the package docstring."""
    out = Path(out) if out is not None else default_out(config)
    check_writable(out)
    previous = previous_manifest(out)  # refuses a folder of another format, before the model loads
    with distributed(config.model.device) as d:
        device = d.device(config.model.device)
        runner = Runner(config, _load(config, device, allow_download, quiet), device)
        runner.validate()
        # nothing was written before here: only now the folder, the hashes, the manifest and stale temps
        with lock(out) if d.rank == 0 else nullcontext():
            if d.rank == 0:
                identity, items = _lay_out(config, out, previous, quiet, say)
            d.barrier()  # no rank starts before the stale temps are gone
            if d.rank > 0:
                identity, items = _join(config, out, d.rank)
            mine = [item for item in items if item.index % d.world == d.rank]
            todo = [item for item in mine if read_result(out / "items" / item.id, item.id) is None]
            _run_shard(runner, mine, todo, out / "items", identity, d, quiet)
        skipped, ran = d.sum([len(mine) - len(todo), len(todo)])
        if d.rank == 0 and not quiet:
            say(
                f"sweep {config.path.name}: {ran} items run, {skipped} already done, {len(items)} in all "
                f"({d.world} process{'es' if d.world > 1 else ''}); results in {out / 'items'}/"
            )
        return SweepReport(total=len(items), skipped=skipped, ran=ran, out=out)


def _load(config: SweepConfig, device: str, allow_download: bool, quiet: bool) -> Any:
    from .. import models  # looked up when called: tests replace models.load_pipeline to see it is never reached

    m = config.model
    with _quiet_loading(quiet):
        pipe = models.load_pipeline(
            m.load_name,
            dtype=m.dtype,
            device=device,
            allow_download=m.allow_download or allow_download,
            cpu_offload=m.cpu_offload,
            without_text_encoders=m.embeds is not None,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _lay_out(
    config: SweepConfig, out: Path, previous: dict[str, Any] | None, quiet: bool, say: Callable[[str], None]
) -> tuple[dict[str, Any], list[Item]]:
    """Rank 0, holding the lock: hash the model's files (once per change: the hashes stay in
    OUT), remove what killed runs left, say why finished items run again, write the manifest."""
    items_dir = out / "items"
    hashes = FileHashes(out / HASHES)
    fingerprint, identity, items = fingerprinted_plan(config, hashes)
    hashes.save()
    for stale in items_dir.glob(f"{TMP_PREFIX}*"):  # left by a killed run: never complete
        shutil.rmtree(stale, ignore_errors=True)
    note = _rerun_note(config, previous, identity, fingerprint, items, items_dir, hashes)
    if note and not quiet:
        say(note)
    manifest = {
        "config": str(config.path),
        "identity": identity,
        "prompts": config.prompts,
        "seeds": config.seeds,
        "n_items": len(items),
        "weights": {"sha256": fingerprint.sha256, "files": fingerprint.files},
        "versions": versions(),
        "items": [item.record() for item in items],
    }
    write_json(out / MANIFEST, manifest)
    return identity, items


def _join(config: SweepConfig, out: Path, rank: int) -> tuple[dict[str, Any], list[Item]]:
    """The other ranks, after rank 0 laid out the folder: the same plan from the hashes it saved."""
    _, identity, items = fingerprinted_plan(config, FileHashes(out / HASHES))
    written = json.loads((out / MANIFEST).read_text())["identity"]
    if written != identity:
        raise ValueError(
            f"Process {rank} sees another model or other settings than process 0: "
            f"{why_changed(written, identity, {}, {})}; every process must read the same files."
        )
    return identity, items


def _run_shard(
    runner: Runner,
    mine: list[Item],
    todo: list[Item],
    items_dir: Path,
    identity: dict[str, Any],
    d: Distributed,
    quiet: bool,
) -> None:
    """Run this rank's unfinished items under one progress bar (its shard, done of all)."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"rank {d.rank}/{d.world}",
        position=d.rank,
        disable=quiet,
        leave=d.world == 1,
        dynamic_ncols=True,
    )
    for item in todo:
        bar.set_postfix_str(item.id, refresh=False)
        runner.run(item, items_dir, identity)
        bar.update(1)
    bar.close()


def _rerun_note(
    config: SweepConfig,
    previous: dict[str, Any] | None,
    identity: dict[str, Any],
    fingerprint: Fingerprint,
    items: list[Item],
    items_dir: Path,
    hashes: FileHashes,
) -> str | None:
    """One line saying why items that a former run finished are computed again (None if none
    are): the same items under the former identity that are done, while their new ones are not."""
    if previous is None or previous["identity"] == identity:
        return None
    former = plan(config, previous["identity"], hashes)
    assert len(former) == len(items)  # the same config: the same items, other ids

    def done(item: Item) -> bool:
        return read_result(items_dir / item.id, item.id, verify=False) is not None

    redo = sum(done(old) and not done(new) for old, new in zip(former, items))
    if not redo:
        return None
    why = why_changed(previous["identity"], identity, previous.get("weights", {}).get("files", {}), fingerprint.files)
    return (
        f"sweep {config.path.name}: {why} since the items in {items_dir}/ were written: rerunning {redo} "
        f"(the former results stay in items/, unused)"
    )


@contextmanager
def _quiet_loading(quiet: bool) -> Iterator[None]:
    """--quiet: no diffusers 'Loading pipeline components' bar per process, and no library
    warnings while loading (diffusers warns about a missing `accelerate` on every load; the
    text encoders' library, transformers, has its own). Errors still show."""
    if not quiet:
        yield
        return
    import importlib.util

    from diffusers.utils import logging

    libraries: list[Any] = [logging]
    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as transformers_logging

        libraries.append(transformers_logging)
    was = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bar in was:
            lib.set_verbosity(verbosity)
            if bar:
                lib.enable_progress_bar()
