"""`ditlens sweep CONFIG --merge`: the finished items of a sweep (all of it, or part) as tables
and one figure in OUT/summary/: items.csv (one row per item), by_setting.csv (mean and standard
deviation over prompts, seeds and random draws per job setting), summary.json (both, and the
items still missing) and summary.png (`figure.plot_summary`)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import SweepConfig
from .figure import plot_summary, setting_label
from .hashes import FileHashes
from .identity import Fingerprint, why_changed
from .plan import Item, fingerprinted_plan
from .store import (
    CLIP_FEATURES,
    HASHES,
    default_out,
    load_png,
    previous_manifest,
    read_result,
    write_durable,
    write_json,
)


@dataclass
class Row:
    """One finished item and its metrics, with those merge adds (distances to the unedited image)."""

    item: Item
    metrics: dict[str, Any]


def merge(config: SweepConfig, out: str | Path | None = None, *, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Summary tables (CSV + JSON) and one figure from the finished items, in OUT/summary/."""
    out = Path(out) if out is not None else default_out(config)
    previous = previous_manifest(out)
    # the sweep's hashes: a large model is not read again (merge only reads them)
    fingerprint, identity, items = fingerprinted_plan(config, FileHashes(out / HASHES))
    records = {}
    for item in items:
        record = read_result(out / "items" / item.id, item.id, verify=False)
        if record is not None:
            records[item.id] = record
    if not records:
        raise _nothing_finished(config, out, previous, identity, fingerprint)
    rows = _rows(items, records, out / "items")
    metric_keys = sorted({k for r in rows for k in r.metrics})
    groups = by_setting(rows, metric_keys)
    folder = out / "summary"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "items_csv": folder / "items.csv",
        "by_setting_csv": folder / "by_setting.csv",
        "json": folder / "summary.json",
        "figure": folder / "summary.png",
    }
    write_durable(paths["items_csv"], _items_csv(rows, metric_keys))
    write_durable(paths["by_setting_csv"], _by_setting_csv(groups, metric_keys))
    missing = [item.id for item in items if item.id not in records]
    summary = {
        "config": str(config.path),
        "n_items": len(items),
        "n_finished": len(records),
        "missing": missing,
        "by_setting": groups,
        "items": [{**r.item.record(), "metrics": r.metrics} for r in rows],
    }
    write_json(paths["json"], summary)
    plot_summary(groups, out / "items", [r.item for r in rows], paths["figure"])
    note = (
        f" ({len(missing)} of {len(items)} items are not finished: rerun `ditlens sweep {config.path}`)"
        if missing
        else ""
    )
    say(f"merged {len(records)} items into {folder}/: items.csv, by_setting.csv, summary.json, summary.png{note}")
    return paths


def _nothing_finished(
    config: SweepConfig,
    out: Path,
    previous: dict[str, Any] | None,
    identity: dict[str, Any],
    fingerprint: Fingerprint,
) -> ValueError:
    """What to do when no item of this config is finished, and why, if its items were written under another identity."""
    why = ""
    if previous is not None and previous["identity"] != identity:
        files_before = previous.get("weights", {}).get("files", {})
        why = why_changed(previous["identity"], identity, files_before, fingerprint.files)
    return ValueError(
        f"No finished items of {config.path.name} in {str(out / 'items')!r}"
        + (f" ({why} since its items were written)" if why else "")
        + f"; run `ditlens sweep {config.path}` first"
        + (" (with the same --out)." if out != default_out(config) else ".")
    )


def _rows(items: list[Item], records: dict[str, dict[str, Any]], items_dir: Path) -> list[Row]:
    """The finished items with their metrics; a disrupt item also gets its pixel distance (and,
    with CLIP embeddings, CLIP-I) to its unedited baseline: the same prompt and seed, no edit."""
    from ..generation import pixel_distances

    baselines = {(i.prompt, i.seed): i.id for i in items if i.command == "disrupt" and i.settings["rule"] == "none"}
    rows = []
    for item in items:
        if item.id not in records:
            continue
        metrics = dict(records[item.id]["metrics"])
        base = baselines.get((item.prompt, item.seed))
        if item.command == "disrupt" and item.settings["rule"] != "none" and base in records:
            edited, unedited = items_dir / item.id, items_dir / str(base)
            distances = pixel_distances(load_png(edited / "image.png")[None], load_png(unedited / "image.png")[None])
            metrics |= {"mse_to_unedited": distances["mse"], "psnr_to_unedited": distances["psnr_db"]}
            if (unedited / CLIP_FEATURES).is_file() and (edited / CLIP_FEATURES).is_file():
                from safetensors.torch import load_file

                a, b = (load_file(str(folder / CLIP_FEATURES))["image"] for folder in (edited, unedited))
                metrics["clip_i_to_unedited"] = float((a * b).sum())
        rows.append(Row(item, metrics))
    return rows


def by_setting(rows: list[Row], metric_keys: list[str]) -> list[dict[str, Any]]:
    """Per job and setting (random draws together): n, and each metric's mean and std over the
    prompts, seeds and draws."""
    groups: dict[tuple[int, str], list[Row]] = defaultdict(list)
    for r in rows:
        setting = {k: v for k, v in r.item.settings.items() if k != "draw"}
        groups[(r.item.job, json.dumps(setting, sort_keys=True))].append(r)
    summary = []
    for (job, key), members in groups.items():
        entry: dict[str, Any] = {
            "command": members[0].item.command,
            "job": job,
            "settings": json.loads(key),
            "n": len(members),
        }
        for m in metric_keys:
            values = [r.metrics[m] for r in members if r.metrics.get(m) is not None]
            if values:
                t = torch.tensor(values, dtype=torch.float64)
                entry[m] = {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0}
        summary.append(entry)
    return summary


def _items_csv(rows: list[Row], metric_keys: list[str]) -> str:
    setting_keys = sorted({k for r in rows for k in r.item.settings})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "command", "job", "prompt", "seed", *setting_keys, *metric_keys])
    for r in rows:
        it = r.item
        settings = [
            json.dumps(it.settings[k]) if isinstance(it.settings.get(k), list) else it.settings.get(k, "")
            for k in setting_keys
        ]
        metrics = [r.metrics.get(m, "") for m in metric_keys]
        writer.writerow([it.id, it.command, it.job, it.prompt, it.seed, *settings, *metrics])
    return buffer.getvalue()


def _by_setting_csv(groups: list[dict[str, Any]], metric_keys: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["command", "job", "settings", "n", *[f"{m}_{s}" for m in metric_keys for s in ("mean", "std")]])
    for e in groups:
        values = [e[m][s] if m in e else "" for m in metric_keys for s in ("mean", "std")]
        writer.writerow([e["command"], e["job"], setting_label(e["command"], e["settings"]), e["n"], *values])
    return buffer.getvalue()
