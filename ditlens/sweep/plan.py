"""The items of a sweep: every prompt x seed x job setting, in a fixed order, each named by a
stable hash of everything that determines its result (`identity_of` the config and its own prompt,
seed and settings). Rank r of a world of W runs the items with index % W == r."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import SweepConfig
from .hashes import FileHashes
from .identity import Fingerprint, identity_of, model_fingerprint
from .jobs import JOB_SETTINGS


@dataclass(frozen=True)
class Item:
    index: int  # position in the sweep: rank r runs the items with index % world == r
    id: str  # command + a stable hash of everything that determines the result
    command: str
    job: int
    prompt: str
    row: int  # the prompt's position (its row in model.embeds)
    seed: int
    settings: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The item as the manifest and summary.json list it (its row is the prompt's, not shown)."""
        return {k: v for k, v in asdict(self).items() if k != "row"} | {"path": f"items/{self.id}"}


def _item_settings(command: str, combo: dict[str, Any]) -> list[dict[str, Any]]:
    """One job-setting combination -> the settings of its item(s), defaults filled in."""
    if command != "disrupt":
        return [combo]
    if combo["k"] == 0:  # no channel edited: the unedited baseline, which every disrupt job has
        return [{"rule": "none"}]
    common = {key: value for key, value in combo.items() if key != "draws"}
    draws = range(combo["draws"]) if combo["rule"] == "random" else [0]  # random-k: one item per seeded draw
    return [{**common, "draw": d} for d in draws]


def job_settings(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The settings of every item of one job (before prompts and seeds), in config order."""
    keys = list(JOB_SETTINGS[job["command"]])
    out = [{"rule": "none"}] if job["command"] == "disrupt" else []  # the unedited baseline, always
    for values in itertools.product(*(job[k] for k in keys)):
        out += _item_settings(job["command"], dict(zip(keys, values)))
    return out


def plan(config: SweepConfig, identity: dict[str, Any] | None = None, hashes: FileHashes | None = None) -> list[Item]:
    """Every item of the sweep, in a fixed order; identical settings collapse into one item.
    identity: `identity_of` the config (by default computed here, reading the model's files)."""
    hashes = hashes or FileHashes()
    if identity is None:
        identity = identity_of(config, model_fingerprint(config.model, hashes), hashes)
    items: list[Item] = []
    seen: set[str] = set()
    for j, job in enumerate(config.jobs):
        for settings in job_settings(job):
            # a mask image is named by its path in the settings: its content goes into the id too
            files = (
                {"mask_image_sha256": _mask_sha256(settings["mask_image"], config, j, hashes)}
                if settings.get("mask_image")
                else {}
            )
            for row, prompt in enumerate(config.prompts):
                for seed in config.seeds:
                    key = identity | files | {"command": job["command"], "prompt": prompt, "seed": seed}
                    item_id = f"{job['command']}-{_digest(key | {'settings': settings})[:16]}"
                    if item_id in seen:
                        continue
                    seen.add(item_id)
                    items.append(Item(len(items), item_id, job["command"], j, prompt, row, seed, settings))
    return items


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _mask_sha256(mask: str, config: SweepConfig, job: int, hashes: FileHashes) -> str:
    if not Path(mask).is_file():
        raise FileNotFoundError(
            f"Mask image {mask!r} ({config.where(job)} setting 'mask_image') does not exist; "
            "its content is part of the items' ids."
        )
    return hashes(Path(mask))


def fingerprinted_plan(config: SweepConfig, hashes: FileHashes) -> tuple[Fingerprint, dict[str, Any], list[Item]]:
    """The model's fingerprint, the identity it makes and the items it names."""
    fingerprint = model_fingerprint(config.model, hashes)
    found = identity_of(config, fingerprint, hashes)
    return fingerprint, found, plan(config, found, hashes)
