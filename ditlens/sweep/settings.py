"""A config's [[jobs]] tables, checked: each setting's type, its values to sweep, and what can be
checked without the model (k, sites and steps need it: see `Runner.validate`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeGuard

from .jobs import COMMANDS, JOB_SETTINGS, JOBS, Job, Setting
from .text import config_error, relative, show

# What each kind accepts, and how a message names it.
_WANTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "path": "a file path",
    "target": "a prompt (or an embeddings row number)",
    "names": "a non-empty list of names",
    "window": "two integers [start, stop)",
}


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML true is not 1


def _is_kind(kind: str, value: Any) -> bool:
    if kind == "int":
        return is_int(value)
    if kind == "float":
        return is_int(value) or isinstance(value, float)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("str", "path"):
        return isinstance(value, str)
    if kind == "target":
        return isinstance(value, str) or is_int(value)
    if kind == "names":
        return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
    if kind == "window":
        return isinstance(value, list) and len(value) == 2 and all(is_int(v) for v in value)
    raise AssertionError(f"unknown setting kind {kind!r}")


def check_value(kind: str, value: Any, where: str, path: Path) -> Any:
    """One value of a setting, type-checked; floats accept integers."""
    if not _is_kind(kind, value):
        raise config_error(path, f"{where} must be {_WANTED[kind]} (or a list of them to sweep); got {show(value)}.")
    if kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise config_error(path, f"{where} must be a finite number; got {value!r}.")
    if kind == "target" and isinstance(value, str) and not value.strip():
        raise config_error(path, f"{where} is an empty prompt ({value!r}); a target prompt needs at least one word.")
    return value


def _sweep_values(setting: Setting, value: Any, where: str, path: Path) -> list[Any]:
    """The values a setting sweeps over: a scalar is one value, a list several."""
    list_kind = setting.kind in ("names", "window")
    if value is None:
        return [None]
    is_sweep = isinstance(value, list) and (not list_kind or (bool(value) and all(isinstance(v, list) for v in value)))
    if is_sweep and not setting.sweepable:
        raise config_error(path, f"{where} takes one value, not a list; got {value!r}.")
    values = value if is_sweep else [value]
    if not values:
        raise config_error(path, f"{where} is an empty list; give at least one value.")
    return [check_value(setting.kind, v, where, path) for v in values]


def parse_job(j: int, job: Any, path: Path) -> dict[str, Any]:
    """jobs[j] of the config: its command and, per setting, the list of values it sweeps."""
    if not isinstance(job, dict):
        raise config_error(path, f"jobs[{j}] must be a table with a 'command' key; got {job!r}.")
    command = job.get("command")
    if command is None:
        raise config_error(path, f"jobs[{j}] has no 'command'; allowed: {', '.join(COMMANDS)}.")
    if command not in COMMANDS:
        raise config_error(path, f"jobs[{j}] has unknown command {command!r}; allowed: {', '.join(COMMANDS)}.")
    schema = JOB_SETTINGS[command]
    unknown = [key for key in job if key != "command" and key not in schema]
    if unknown:
        raise config_error(
            path, f"jobs[{j}] ({command}) has unknown setting {unknown[0]!r}; allowed: {', '.join(schema)}."
        )
    if command == "transport" and job.get("target") is None:
        raise config_error(path, f"jobs[{j}] (transport) is missing 'target' (the target prompt, or a list of them).")
    parsed: dict[str, Any] = {"command": command}
    for key, setting in schema.items():
        where = f"jobs[{j}] ({command}) setting {key!r}"
        parsed[key] = _sweep_values(setting, job.get(key, setting.default), where, path)
    if "mask_image" in parsed:
        parsed["mask_image"] = [str(relative(path, m)) if m else None for m in parsed["mask_image"]]
    _check_choices(JOBS[command], parsed, f"jobs[{j}] ({command})", path)
    _check_ranges(command, parsed, f"jobs[{j}] ({command})", path)
    return parsed


def _check_choices(job: Job, parsed: dict[str, Any], where: str, path: Path) -> None:
    """Every setting that names a choice (a statistic, a rule, a mask origin) names a known one."""
    for key, values in parsed.items():
        options = job.allowed(key)
        if options is None:
            continue
        for value in values:
            for v in value if isinstance(value, list) else [value]:  # segment's rules: a list of names
                if v is not None and v not in options:
                    raise config_error(
                        path, f"{where} setting {key!r} has unknown value {v!r}; allowed: {', '.join(options)}."
                    )


def _check_ranges(command: str, job: dict[str, Any], where: str, path: Path) -> None:
    if command == "disrupt" and job["draws"][0] < 1:
        raise config_error(path, f"{where} setting 'draws' must be >= 1; got {job['draws'][0]}.")
    if command == "transport":
        for a in job["alpha"]:
            if not 0.0 <= a <= 1.0:
                raise config_error(path, f"{where} setting 'alpha' must be within [0, 1]; got {a!r}.")
        if "user" in job["mask"] and job["mask_image"] == [None]:
            raise config_error(path, f"{where}: mask = 'user' needs 'mask_image' (a mask image file, white = edit).")


def check_targets(jobs: list[dict[str, Any]], n_prompts: int, rows: bool, path: Path) -> None:
    """A transport target is a prompt, or with model.embeds (`rows`) an embeddings row number."""
    for j, job in enumerate(jobs):
        for target in job.get("target", []) if job["command"] == "transport" else []:
            if isinstance(target, int) and (not rows or not 0 <= target < n_prompts):
                raise config_error(
                    path,
                    f"jobs[{j}] (transport) target {target!r}: a row number needs model.embeds "
                    f"and must be in 0..{n_prompts - 1}.",
                )
            if isinstance(target, str) and rows:
                raise config_error(
                    path,
                    f"jobs[{j}] (transport) target {target!r}: with model.embeds the target is an embeddings "
                    f"row number (0..{n_prompts - 1}).",
                )
