"""Batch sweeps: prompts x seeds x job settings, sharded over processes, crash-safe, resumable.

    ditlens sweep study.toml                                  # one process
    torchrun --nproc-per-node 2 -m ditlens.cli sweep study.toml   # two processes (GPUs)
    ditlens sweep study.toml --merge                          # summary tables and a figure

A config (TOML, or YAML when PyYAML is installed) names the model, the prompts, the seeds
and a list of jobs (find / disrupt / segment / transport with their settings); see
docs/scale.md for the format. Every prompt x seed x job setting is one *item*, named by a
stable hash of everything that determines its result: its prompt, seed and settings, the
content of the model's files (`model_fingerprint`), the ditlens version and the generation
settings. The whole config is checked before the model loads, and every job setting against
the model before any item runs. Rank r of a torchrun world of size W
runs the items i with i % W == r, each into `OUT/items/.tmp-ID-PID/`, then renames the
finished folder to `OUT/items/ID/`: a result folder exists complete or not at all, and its
`result.json` (written last, `"done": true`, the size and SHA-256 of every file) says so.
A rerun of the same command skips the items whose result checks out and runs the rest,
so after a crash or `kill -9` nothing is lost or done twice, and after the model's weights
change in place the items are computed again (and the run says why).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import itertools
import json
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import tomllib
import torch

from .. import __version__
from ..core.masks import DEFAULT_FOREGROUND
from ..transport import TransportConfig

COMMANDS = ("find", "disrupt", "segment", "transport")
# Part of every item's hash: bump when an item's outputs change meaning. 2: the hash covers
# the model's weights and the ditlens version (format 1 hashed the model's name only).
FORMAT_VERSION = 2
TMP_PREFIX = ".tmp-"
RESULT = "result.json"
MANIFEST = "manifest.json"
HASHES = ".file-hashes.json"  # in OUT: SHA-256 of the model's files, so a large model is read once
# The files of a model folder that make its results: weights, configs (model_index, each
# component's, the scheduler's) and tokenizer vocabularies (merges.txt, spiece.model). Not
# pickle weights (ditlens loads .safetensors only), docs or images.
CLIP_FEATURES = "clip_image.safetensors"  # a disrupt item's CLIP image embedding, with --clip: merge's CLIP-I
MODEL_FILES = (".safetensors", ".json", ".txt", ".model")
# Largest height / width in pixels: 4x the largest size released DiTs are trained at (FLUX.1,
# SD3: up to 2048); it stops a typo (100000) that would ask for terabytes of activations.
MAX_SIDE = 8192
SHOWN = 60  # characters of a value quoted in a message; longer ones are cut
# The built-in model's shipped files: model/ (builtin.pipeline.DEFAULT_WEIGHTS) and classifier/
# (metrics.classifier.DEFAULT_WEIGHTS), named here so that a plan does not import diffusers.
BUILTIN_WEIGHTS = Path(__file__).parent / "builtin" / "weights"
# Ranks finish their shards at different times and wait for each other at the end; a
# collective's default timeout (10-30 min) would abort long sweeps, so wait this long.
BARRIER_TIMEOUT = timedelta(hours=48)


class SweepConfigError(ValueError):
    """The sweep config is malformed: names the file, the key and what is allowed."""


# ---- the config -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One job setting. A list given for a scalar kind (or a list of lists for a list kind)
    sweeps over its values; `default` may itself be such a sweep."""

    kind: str  # int, float, str, bool, target, path, names (list of str), window ([start, stop))
    default: Any
    sweepable: bool = True


STATISTIC = Setting("str", "abs_mean")  # the paper's |mean over tokens|
SITES = Setting("names", None)  # None: every image-stream site
WINDOW = Setting("window", None)  # None: every step

JOB_SETTINGS: dict[str, dict[str, Setting]] = {
    "find": {
        "k": Setting("int", 4),  # the paper reports a handful of massive channels
        "statistic": STATISTIC,
        "stats": Setting("bool", False, sweepable=False),  # also keep stats.safetensors (large on real models)
    },
    "disrupt": {
        "rule": Setting("str", ["top", "bottom", "random"]),  # top = massive; the others are controls
        "k": Setting("int", [1, 2, 4, 8]),  # k = 0 is the unedited baseline, which runs anyway
        "draws": Setting("int", 3, sweepable=False),  # random-k: seeded draws 0..draws-1, one item each
        "factor": Setting("float", 0.0),  # 0 zeroes the channels (the paper)
        "statistic": STATISTIC,
        "sites": SITES,
        "window": WINDOW,
    },
    "segment": {
        "k": Setting("int", 4),
        "rules": Setting("names", ["top", "bottom", "random", "all"]),  # one pass computes them all
        "statistic": STATISTIC,
        "foreground": Setting("str", DEFAULT_FOREGROUND),  # which K=2 cluster is the subject (masks.py)
    },
    "transport": {
        "target": Setting("target", None),  # required: the target prompt (an embeddings row with `embeds`)
        "alpha": Setting("float", 1.0),  # 1 = the paper's full replacement
        "k": Setting("int", TransportConfig.k),
        "mask": Setting("str", TransportConfig.mask),
        "mask_image": Setting("path", None),  # for mask = "user"
        "foreground": Setting("str", TransportConfig.foreground),
        "streams": Setting("str", TransportConfig.streams),
        "statistic": STATISTIC,
        "sites": SITES,
        "window": WINDOW,
        "target_seed": Setting("int", None),  # None: the item's seed
    },
}

TOP_KEYS = ("out", "seeds", "model", "prompts", "generation", "jobs", "clip")
MODEL_KEYS = {"name": str, "device": str, "dtype": str, "allow_download": bool, "cpu_offload": bool, "embeds": str}
GENERATION_KEYS = ("steps", "guidance", "height", "width")


@dataclass(frozen=True)
class ModelOptions:
    name: str = "builtin"  # "builtin", a local diffusers folder or a hub id
    device: str = "cpu"  # "cuda": each torchrun rank takes cuda:LOCAL_RANK
    dtype: str = "float32"
    allow_download: bool = False  # hub ids come from the local cache unless allowed
    cpu_offload: bool = False
    embeds: Path | None = None  # precomputed prompt embeddings (safetensors), one row per prompt
    folder: Path | None = None  # where `name` is a local folder (relative to the config): its path

    @property
    def is_builtin(self) -> bool:
        return self.name in ("", "builtin")

    @property
    def load_name(self) -> str | None:
        """What load_pipeline takes: None (built-in), a folder, or a hub id."""
        return None if self.is_builtin else str(self.folder or self.name)


@dataclass
class SweepConfig:
    path: Path
    model: ModelOptions
    prompts: list[str]
    seeds: list[int]
    jobs: list[dict[str, Any]]  # command + its settings, each a list of values to sweep
    generation: dict[str, Any] = field(default_factory=dict)  # steps, guidance, height, width
    out: Path | None = None
    clip: Path | None = None  # a local CLIPModel folder: disrupt and transport items get CLIP scores

    def where(self, job: int) -> str:
        return f"{self.path.name}, jobs[{job}] ({self.jobs[job]['command']})"


def _error(path: Path, message: str) -> SweepConfigError:
    return SweepConfigError(f"Sweep config {str(path)!r}: {message}")


def _show(value: Any) -> str:
    """repr(value) for a message, cut to SHOWN characters: a message quotes a value, not a file."""
    text = repr(value)
    if len(text) <= SHOWN:
        return text
    return f"{text[:SHOWN]}... ({len(value) if isinstance(value, str) else len(text)} characters)"


def _decode(data: bytes, where: str) -> str:
    """UTF-8 text, without the byte-order mark some editors write first (Windows Notepad):
    TOML forbids it, but it is invisible in the editor, so a refusal would puzzle."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        utf16 = " (it starts with a UTF-16 byte-order mark)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise SweepConfigError(
            f"{where}: not UTF-8 text{utf16}: byte {data[err.start]:#04x} at offset {err.start} "
            "is not valid UTF-8. Save the file as UTF-8."
        ) from None


def _read_raw(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"Sweep config {str(path)!r} does not exist.")
    if path.suffix.lower() not in (".toml", ".yaml", ".yml"):
        raise _error(path, f"unknown file type {path.suffix or '(none)'!r}; allowed: .toml, .yaml, .yml.")
    text = _decode(path.read_bytes(), f"Sweep config {str(path)!r}")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise _error(
                path, "YAML configs need PyYAML (pip install pyyaml); or write the config as TOML (.toml)."
            ) from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise _error(path, f"not valid YAML ({' '.join(str(err).split())}).") from None
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise _error(path, f"not valid TOML ({err}).") from None
    if not isinstance(raw, dict):
        raise _error(path, f"the top level must be a table of keys ({', '.join(TOP_KEYS)}); got {type(raw).__name__}.")
    return raw


def _check_value(kind: str, value: Any, where: str, path: Path) -> Any:
    """One value of a setting, type-checked; floats accept integers."""
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "path": isinstance(value, str),
        "target": isinstance(value, (str, int)) and not isinstance(value, bool),
        "names": isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value),
        "window": isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
    }[kind]
    if not ok:
        wanted = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "path": "a file path",
            "target": "a prompt (or an embeddings row number)",
            "names": "a non-empty list of names",
            "window": "two integers [start, stop)",
        }[kind]
        raise _error(path, f"{where} must be {wanted} (or a list of them to sweep); got {_show(value)}.")
    if kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise _error(path, f"{where} must be a finite number; got {value!r}.")
    if kind == "target" and isinstance(value, str) and not value.strip():
        raise _error(path, f"{where} is an empty prompt ({value!r}); a target prompt needs at least one word.")
    return value


def _sweep_values(setting: Setting, value: Any, where: str, path: Path) -> list[Any]:
    """The values a setting sweeps over: a scalar is one value, a list several."""
    list_kind = setting.kind in ("names", "window")
    if value is None:
        return [None]
    is_sweep = isinstance(value, list) and (not list_kind or (bool(value) and all(isinstance(v, list) for v in value)))
    if is_sweep and not setting.sweepable:
        raise _error(path, f"{where} takes one value, not a list; got {value!r}.")
    values = value if is_sweep else [value]
    if not values:
        raise _error(path, f"{where} is an empty list; give at least one value.")
    return [_check_value(setting.kind, v, where, path) for v in values]


def _parse_job(j: int, job: Any, path: Path) -> dict[str, Any]:
    if not isinstance(job, dict):
        raise _error(path, f"jobs[{j}] must be a table with a 'command' key; got {job!r}.")
    command = job.get("command")
    if command is None:
        raise _error(path, f"jobs[{j}] has no 'command'; allowed: {', '.join(COMMANDS)}.")
    if command not in COMMANDS:
        raise _error(path, f"jobs[{j}] has unknown command {command!r}; allowed: {', '.join(COMMANDS)}.")
    schema = JOB_SETTINGS[command]
    unknown = [key for key in job if key != "command" and key not in schema]
    if unknown:
        raise _error(path, f"jobs[{j}] ({command}) has unknown setting {unknown[0]!r}; allowed: {', '.join(schema)}.")
    if command == "transport" and job.get("target") is None:
        raise _error(path, f"jobs[{j}] (transport) is missing 'target' (the target prompt, or a list of them).")
    parsed: dict[str, Any] = {"command": command}
    for key, setting in schema.items():
        where = f"jobs[{j}] ({command}) setting {key!r}"
        parsed[key] = _sweep_values(setting, job.get(key, setting.default), where, path)
    _check_domains(command, parsed, f"jobs[{j}] ({command})", path)
    return parsed


def _check_domains(command: str, job: dict[str, Any], where: str, path: Path) -> None:
    """What can be checked without the model (k, sites and steps need it: see `Runner.validate`)."""
    from ..core.channels import STATISTICS
    from ..core.masks import FOREGROUND_RULES
    from ..disrupt import RULES as DISRUPT_RULES
    from ..segment import RULES as SEGMENT_RULES
    from ..transport import MASK_ORIGINS, STREAMS

    def allowed(key: str, values: list[Any], options: tuple[str, ...] | list[str]) -> None:
        for v in values:
            if v is not None and v not in options:
                raise _error(path, f"{where} setting {key!r} has unknown value {v!r}; allowed: {', '.join(options)}.")

    allowed("statistic", job["statistic"], list(STATISTICS))
    if command == "disrupt":
        allowed("rule", job["rule"], DISRUPT_RULES)
        if job["draws"][0] < 1:
            raise _error(path, f"{where} setting 'draws' must be >= 1; got {job['draws'][0]}.")
    if command in ("segment", "transport"):
        allowed("foreground", job["foreground"], list(FOREGROUND_RULES))
    if command == "segment":
        for rules in job["rules"]:
            allowed("rules", rules, SEGMENT_RULES)
    if command == "transport":
        allowed("mask", job["mask"], MASK_ORIGINS)
        allowed("streams", job["streams"], list(STREAMS))
        for a in job["alpha"]:
            if not 0.0 <= a <= 1.0:
                raise _error(path, f"{where} setting 'alpha' must be within [0, 1]; got {a!r}.")
        if "user" in job["mask"] and job["mask_image"] == [None]:
            raise _error(path, f"{where}: mask = 'user' needs 'mask_image' (a mask image file, white = edit).")


def _relative(path: Path, value: str) -> Path:
    """Paths written in a config are relative to the config file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else path.parent / p


def _table(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise _error(path, f"{key!r} must be a table; got {value!r}.")
    return value


def load_config(path: str | Path) -> SweepConfig:
    """Read and check a sweep config (everything that does not need the model)."""
    path = Path(path)
    raw = _read_raw(path)
    unknown = [key for key in raw if key not in TOP_KEYS]
    if unknown:
        raise _error(path, f"unknown key {unknown[0]!r}; allowed at the top level: {', '.join(TOP_KEYS)}.")

    # model
    table = _table(raw, "model", path)
    for key, value in table.items():
        if key not in MODEL_KEYS:
            raise _error(path, f"unknown key 'model.{key}'; allowed: {', '.join(MODEL_KEYS)}.")
        if not isinstance(value, MODEL_KEYS[key]):
            raise _error(
                path,
                f"'model.{key}' must be {'true or false' if MODEL_KEYS[key] is bool else 'a string'}; got {value!r}.",
            )
    embeds = _relative(path, table["embeds"]) if table.get("embeds") else None
    if embeds is not None and not embeds.is_file():
        raise FileNotFoundError(f"Embeddings file {str(embeds)!r} (model.embeds in {path.name}) does not exist.")
    model = ModelOptions(**{k: v for k, v in table.items() if k != "embeds"}, embeds=embeds)
    if not model.is_builtin and _relative(path, model.name).exists():
        model = ModelOptions(
            **{k: v for k, v in table.items() if k != "embeds"}, embeds=embeds, folder=_relative(path, model.name)
        )
    from ..models import parse_dtype

    try:
        parse_dtype(model.dtype)
        torch.device(model.device)
    except (ValueError, RuntimeError):
        raise _error(
            path,
            f"'model.dtype' {model.dtype!r} or 'model.device' {model.device!r} is not known; "
            "dtypes: float32, bfloat16, float16; devices: cpu, cuda, mps.",
        ) from None

    # seeds
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, dict):  # {from = 0, count = 100}
        extra = [k for k in seeds if k not in ("from", "count")]
        start, count = seeds.get("from", 0), seeds.get("count")
        if extra or not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, count)) or count < 1:
            raise _error(
                path, f"'seeds' as a table needs integers 'from' (default 0) and 'count' (>= 1); got {seeds!r}."
            )
        seeds = list(range(start, start + count))
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise _error(
            path, f"'seeds' must be a non-empty list of integers >= 0 (or {{from = 0, count = N}}); got {seeds!r}."
        )
    if len(set(seeds)) != len(seeds):
        raise _error(path, f"'seeds' lists a seed twice: {seeds!r}.")

    # prompts: a list, or a table with `list` and/or `file` (one prompt per line)
    given = _read_prompts(raw, path)
    if given is None:  # left out: the built-in model's examples, or one item per embeddings row
        if model.is_builtin:
            from ..builtin.examples import EXAMPLE_PROMPTS

            given = [(f"the built-in example prompt {i}", p) for i, p in enumerate(EXAMPLE_PROMPTS)]
        elif embeds is not None:
            given = [(f"model.embeds row {i}", f"<embeds row {i}>") for i in range(_embeds_rows(embeds))]
        else:
            raise _error(
                path, "no prompts: give 'prompts' (a list, or a table with 'list' and/or 'file'), or model.embeds."
            )
    elif not given:
        default = (
            "the built-in model's example prompts"
            if model.is_builtin
            else "one item per embeddings row"
            if embeds is not None
            else None
        )
        raise _error(
            path,
            f"'prompts' gives no prompt ({_show(raw['prompts'])}); give at least one"
            + (f", or leave 'prompts' out for {default}." if default else "."),
        )
    first: dict[str, str] = {}
    for where, prompt in given:
        if prompt in first:
            raise _error(
                path,
                f"prompt {_show(prompt)} is listed twice ({first[prompt]} and {where}); "
                "each prompt x seed x setting must be one item.",
            )
        first[prompt] = where
    prompts = [prompt for _, prompt in given]
    if embeds is not None and len(prompts) != _embeds_rows(embeds):
        raise _error(
            path,
            f"{len(prompts)} prompts but the embeddings file has {_embeds_rows(embeds)} rows; they must match (one row per prompt).",
        )

    # generation: each key optional (the pipeline's own default otherwise)
    generation = _table(raw, "generation", path)
    for key, value in generation.items():
        if key not in GENERATION_KEYS:
            raise _error(path, f"unknown key 'generation.{key}'; allowed: {', '.join(GENERATION_KEYS)}.")
        value = _check_value("float" if key == "guidance" else "int", value, f"'generation.{key}'", path)
        if key == "guidance":
            ok, allowed = value >= 0, "a finite number >= 0"
        elif key == "steps":
            ok, allowed = value >= 1, "an integer >= 1"
        else:
            ok, allowed = 1 <= value <= MAX_SIDE, f"a whole number of pixels in 1..{MAX_SIDE}"
        if not ok:
            raise _error(path, f"'generation.{key}' must be {allowed}; got {_show(value)}.")
        generation[key] = value

    # jobs
    jobs = raw.get("jobs")
    if jobs is None:
        raise _error(path, f"no jobs: add at least one [[jobs]] table with a 'command' ({', '.join(COMMANDS)}).")
    if not isinstance(jobs, list) or not jobs:
        raise _error(path, f"'jobs' must be a non-empty list of tables ([[jobs]] in TOML); got {jobs!r}.")
    parsed_jobs = [_parse_job(j, job, path) for j, job in enumerate(jobs)]
    for j, job in enumerate(parsed_jobs):
        if job["command"] == "transport":
            for target in job["target"]:
                if isinstance(target, int) and (embeds is None or not 0 <= target < len(prompts)):
                    raise _error(
                        path,
                        f"jobs[{j}] (transport) target {target!r}: a row number needs model.embeds and must be in 0..{len(prompts) - 1}.",
                    )
                if isinstance(target, str) and embeds is not None:
                    raise _error(
                        path,
                        f"jobs[{j}] (transport) target {target!r}: with model.embeds the target is an embeddings row number (0..{len(prompts) - 1}).",
                    )
            job["mask_image"] = [str(_relative(path, m)) if m else None for m in job["mask_image"]]

    out = raw.get("out")
    if out is not None and not isinstance(out, str):
        raise _error(path, f"'out' must be a folder path; got {out!r}.")
    clip = raw.get("clip")
    if clip is not None:
        if not isinstance(clip, str) or not clip:
            raise _error(path, f"'clip' must be the path of a local CLIPModel folder; got {clip!r}.")
        from ..metrics.folders import check_clip_folder

        try:
            check_clip_folder(_relative(path, clip))
        except ValueError as err:
            raise _error(path, f"'clip': {err}") from None
    config = SweepConfig(
        path,
        model,
        prompts,
        seeds,
        parsed_jobs,
        generation,
        _relative(path, out) if out else None,
        _relative(path, clip) if clip else None,
    )
    if model.is_builtin:
        targets = [
            (f"jobs[{j}] (transport) setting 'target'", t)
            for j, job in enumerate(parsed_jobs)
            if job["command"] == "transport"
            for t in job["target"]
        ]
        _check_builtin_prompts(given + targets, parsed_jobs, path)
    return config


def _read_prompts(raw: dict[str, Any], path: Path) -> list[tuple[str, str]] | None:
    """(where, prompt) for each prompt the config gives, stripped; None where it has no 'prompts'.
    `where` names the prompt's place for messages: prompts[2], prompts.file 'p.txt' line 7."""
    value = raw.get("prompts")
    if value is None:
        return None
    if isinstance(value, list):
        table, key = {"list": value}, "prompts"
    elif isinstance(value, dict):
        table, key = value, "prompts.list"
        extra = [k for k in table if k not in ("list", "file")]
        if extra:
            raise _error(path, f"unknown key 'prompts.{extra[0]}'; allowed: list, file.")
    else:
        raise _error(
            path, f"'prompts' must be a list of strings or a table with 'list' and/or 'file'; got {_show(value)}."
        )
    given = []
    inline = table.get("list", [])
    if not isinstance(inline, list):
        raise _error(path, f"'{key}' must be a list of prompts (strings); got {_show(inline)}.")
    for i, prompt in enumerate(inline):
        if not isinstance(prompt, str):
            raise _error(path, f"'{key}[{i}]' must be a prompt (a string); got {_show(prompt)}.")
        if not prompt.strip():
            raise _error(path, f"'{key}[{i}]' is an empty prompt ({prompt!r}); every prompt needs at least one word.")
        given.append((f"{key}[{i}]", prompt.strip()))
    if "file" in table:
        if not isinstance(table["file"], str):
            raise _error(path, f"'prompts.file' must be a file path; got {_show(table['file'])}.")
        file = _relative(path, table["file"])
        if not file.is_file():
            raise FileNotFoundError(f"Prompts file {str(file)!r} (prompts.file in {path.name}) does not exist.")
        text = _decode(file.read_bytes(), f"Prompts file {str(file)!r} (prompts.file in {path.name})")
        # blank lines are skipped: they separate groups of prompts, not empty prompts
        given += [
            (f"prompts.file {file.name!r} line {n}", line.strip())
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
    return given


def _check_builtin_prompts(prompts: list[tuple[str, str]], jobs: list[dict[str, Any]], path: Path) -> None:
    """The built-in model knows a small vocabulary. Its disrupt, segment and transport items
    also score each image against the exact scene its prompt describes, so with those jobs
    every prompt must follow the caption grammar too (else the first such item would fail
    mid-sweep)."""
    from ..builtin.scenes import UnknownWordError, check_words, parse_caption

    grammar = any(job["command"] != "find" for job in jobs)
    for where, prompt in prompts:
        try:
            parse_caption(prompt) if grammar else check_words(prompt)
        except ValueError as err:  # UnknownWordError or CaptionError; both quote the whole prompt
            why = (
                ""
                if isinstance(err, UnknownWordError)
                else (
                    " (disrupt, segment and transport score the built-in model's images against the scene the prompt describes)"
                )
            )
            raise _error(path, f"{where}: {str(err).replace(repr(prompt), _show(prompt))}{why}") from None


def _embeds_rows(path: Path) -> int:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}
    except Exception as err:
        raise ValueError(f"Embeddings file {str(path)!r} is not a readable safetensors file ({err}).") from None
    if "prompt_embeds" not in shapes:
        raise ValueError(f"Embeddings file {str(path)!r} has no 'prompt_embeds' tensor; it holds: {', '.join(shapes)}.")
    rows = {key: s[0] for key, s in shapes.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"Embeddings file {str(path)!r}: tensors disagree on the number of rows (prompts): {rows}.")
    return rows["prompt_embeds"]


# ---- items ----------------------------------------------------------------------------------


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
        return {
            "index": self.index,
            "id": self.id,
            "command": self.command,
            "job": self.job,
            "prompt": self.prompt,
            "seed": self.seed,
            "settings": self.settings,
            "path": f"items/{self.id}",
        }


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileHashes:
    """SHA-256 of files, remembered in a JSON file (`cache`, e.g. OUT/.file-hashes.json) by
    path, size, mtime and ctime: a model of many GB is read once, and again only when its
    files change. ctime as well as mtime because a copy that keeps times (cp -p, rsync -t)
    sets mtime back but cannot set ctime. Without `cache`, every file is read each time."""

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
            entry = {"stat": stamp, "sha256": _file_sha256(real)}
        self.used[str(real)] = entry
        return entry["sha256"]

    def save(self) -> None:
        if self.cache is not None and self.used != self.known:
            write_atomic(self.cache, (json.dumps({"version": 1, "files": self.used}, indent=1) + "\n").encode())


@dataclass(frozen=True)
class Fingerprint:
    """The content of a model's files, as a sweep read them."""

    sha256: str  # over the sorted (name, SHA-256) pairs of `files`: part of every item's id
    files: dict[str, str]  # name (relative to its folder; `model/`, `classifier/` for the built-in) -> SHA-256


def _model_folders(model: ModelOptions) -> dict[str, Path]:
    """Where the files that make `model`'s results are, by the prefix their names get."""
    if model.is_builtin:
        return {"model/": BUILTIN_WEIGHTS / "model", "classifier/": BUILTIN_WEIGHTS / "classifier"}
    if model.folder is not None:
        return {"": model.folder}
    from huggingface_hub import snapshot_download

    try:  # the snapshot load_pipeline loaded: the cached revision of the default branch
        return {"": Path(snapshot_download(model.name, local_files_only=True))}
    except Exception:  # not a repo id, or not in the cache (several types)
        raise ValueError(
            f"Model {model.name!r} is neither a local folder nor in the local Hugging Face cache, so its "
            "weights cannot be fingerprinted for the items' ids; run the sweep with --allow-download "
            "(or allow_download = true) to fetch it."
        ) from None


def model_fingerprint(model: ModelOptions, hashes: FileHashes | None = None) -> Fingerprint:
    """A content hash of the files that make `model`'s results, part of every item's id: an
    item changes when the weights change in place (retrained into the same folder, a new hub
    revision), not only when the model's name does, so a resume never keeps a result of
    other weights.

    Covers, in the model's folder (the built-in model's shipped folder, a local diffusers
    folder, or a hub id's snapshot in the local Hugging Face cache), every file ending in
    MODEL_FILES: the .safetensors weights, the configs, the tokenizer files. Leaves out hidden
    files (download metadata that changes by itself) and, with model.embeds, the text encoders
    and tokenizers, which are not loaded (the embeddings file's own hash stands in for them).
    For the built-in model it also covers the attribute classifier, whose scores are part of
    its disrupt and transport results. Files are read through `hashes` (once per change)."""
    hashes = hashes or FileHashes()
    folders = _model_folders(model)
    files = {}
    for prefix, folder in folders.items():
        for file in sorted(folder.rglob("*")):
            name = file.relative_to(folder).as_posix()
            if (
                not file.is_file()
                or not name.endswith(MODEL_FILES)
                or any(part.startswith(".") for part in name.split("/"))
            ):
                continue
            if model.embeds is not None and name.startswith(("text_encoder", "tokenizer")):
                continue
            files[prefix + name] = hashes(file)
    if not files:
        raise ValueError(
            f"Model {model.name!r}: no model files ({', '.join(MODEL_FILES)}) in "
            f"{', '.join(str(f) for f in folders.values())}."
        )
    lines = "".join(f"{name}\0{sha}\n" for name, sha in sorted(files.items()))
    return Fingerprint(hashlib.sha256(lines.encode()).hexdigest(), files)


def _identity(config: SweepConfig, fingerprint: Fingerprint, hashes: FileHashes | None = None) -> dict[str, Any]:
    """What every item's result depends on besides its own prompt, seed and settings.
    The device *type* only: cuda:0 and cuda:1 give the same images, so shards may move.
    The torch and diffusers versions are not in it (an upgrade would redo every item of a long
    study); the manifest records them."""
    m = config.model
    return {
        "format": FORMAT_VERSION,
        "ditlens": __version__,
        "model": m.name,
        "weights": fingerprint.sha256,
        "dtype": m.dtype,
        "device": torch.device(m.device).type if m.device else "cpu",
        "embeds_sha256": (hashes or FileHashes())(m.embeds) if m.embeds else None,
        "generation": {k: config.generation[k] for k in sorted(config.generation)},
    } | (
        {"clip": _folder_sha256(config.clip, hashes or FileHashes())} if config.clip else {}
    )  # absent key: ids as before


def _folder_sha256(folder: Path, hashes: FileHashes) -> str:
    """A content hash of a scorer's folder (its MODEL_FILES), as the model's weights are hashed."""
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name.endswith(MODEL_FILES))
    lines = "".join(f"{f.relative_to(folder).as_posix()}\0{hashes(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _item_settings(command: str, combo: dict[str, Any]) -> list[dict[str, Any]]:
    """One job-setting combination -> the settings of its item(s), defaults filled in."""
    if command == "find":
        return [{"k": combo["k"], "statistic": combo["statistic"], "stats": combo["stats"]}]
    if command == "disrupt":
        if combo["k"] == 0:
            return [{"rule": "none"}]
        common = {
            "k": combo["k"],
            "factor": combo["factor"],
            "statistic": combo["statistic"],
            "sites": combo["sites"],
            "window": combo["window"],
        }
        draws = range(combo["draws"]) if combo["rule"] == "random" else [0]
        return [{"rule": combo["rule"], **common, "draw": d} for d in draws]
    if command == "segment":
        return [
            {
                "k": combo["k"],
                "rules": combo["rules"],
                "statistic": combo["statistic"],
                "foreground": combo["foreground"],
            }
        ]
    settings = {key: combo[key] for key in JOB_SETTINGS["transport"]}
    return [settings]


def job_settings(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The settings of every item of one job (before prompts and seeds), in config order."""
    keys = list(JOB_SETTINGS[job["command"]])
    out = [{"rule": "none"}] if job["command"] == "disrupt" else []  # the unedited baseline, always
    for values in itertools.product(*(job[k] for k in keys)):
        out += _item_settings(job["command"], dict(zip(keys, values)))
    return out


def plan(config: SweepConfig, identity: dict[str, Any] | None = None, hashes: FileHashes | None = None) -> list[Item]:
    """Every item of the sweep, in a fixed order; identical settings collapse into one item.
    identity: `_identity` of the config (by default computed here, reading the model's files)."""
    hashes = hashes or FileHashes()
    if identity is None:
        identity = _identity(config, model_fingerprint(config.model, hashes), hashes)
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
                    key = (
                        identity
                        | files
                        | {"command": job["command"], "prompt": prompt, "seed": seed, "settings": settings}
                    )
                    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
                    item_id = f"{job['command']}-{digest[:16]}"
                    if item_id in seen:
                        continue
                    seen.add(item_id)
                    items.append(Item(len(items), item_id, job["command"], j, prompt, row, seed, settings))
    return items


def _mask_sha256(mask: str, config: SweepConfig, job: int, hashes: FileHashes) -> str:
    if not Path(mask).is_file():
        raise FileNotFoundError(
            f"Mask image {mask!r} ({config.where(job)} setting 'mask_image') does not exist; "
            "its content is part of the items' ids."
        )
    return hashes(Path(mask))


# ---- results on disk ------------------------------------------------------------------------


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


def write_atomic(path: Path, data: bytes) -> None:
    """A file appears whole or not at all: temp name in the same folder, fsync, rename."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_path(path.parent)


def read_result(folder: Path, item_id: str, verify: bool = True) -> dict[str, Any] | None:
    """The item's result record if its folder is complete (every file present with its
    recorded size and SHA-256), else None."""
    try:
        record = json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("done") is not True or record.get("id") != item_id:
        return None
    for name, info in record.get("files", {}).items():
        p = folder / name
        try:
            if p.stat().st_size != info["bytes"] or (verify and _file_sha256(p) != info["sha256"]):
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
        files[p.name] = {"bytes": p.stat().st_size, "sha256": _file_sha256(p)}
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


def _png(image: torch.Tensor, path: Path) -> None:
    from ..generation import to_pil

    to_pil(image[None])[0].save(path, format="PNG")


def _load_png(path: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


# ---- running items --------------------------------------------------------------------------


class Runner:
    """Runs items on one loaded pipeline; one per process."""

    def __init__(self, config: SweepConfig, pipe: Any, device: str):
        from ..adapters import adapter_for
        from ..generation import GenerationSettings

        self.config, self.pipe, self.device = config, pipe, device
        self.adapter = adapter_for(pipe)
        g = config.generation
        self.generation = GenerationSettings(g.get("steps"), g.get("guidance"), g.get("height"), g.get("width"))
        self.embeds: dict[str, torch.Tensor] | None = None
        if config.model.embeds is not None:
            from safetensors.torch import load_file

            self.embeds = load_file(str(config.model.embeds), device=device)
        self._classifier = None
        self.clip = None
        if config.clip is not None:
            from ..metrics.clip import ClipScorer

            self.clip = ClipScorer.from_pretrained(config.clip, device=device)

    # ---- shared helpers --------------------------------------------------------------------
    def rows(self, rows: list[int]) -> dict[str, torch.Tensor] | None:
        """Embeddings for these prompt rows (a batch), or None when prompts are text."""
        if self.embeds is None:
            return None
        index = torch.tensor(rows, device=next(iter(self.embeds.values())).device)
        return {key: t.index_select(0, index) for key, t in self.embeds.items()}

    def target_prompt(self, target: str | int) -> tuple[str, int]:
        return (self.config.prompts[target], target) if isinstance(target, int) else (target, -1)

    @property
    def classifier(self):
        if self._classifier is None:
            from ..metrics.classifier import AttributeClassifier

            self._classifier = AttributeClassifier.from_pretrained()
        return self._classifier

    def validate(self) -> None:
        """Check every distinct job setting against the model, before any item runs or anything is written."""
        from ..core.intervene import Scope
        from ..disrupt import DisruptConfig
        from ..find import FindConfig
        from ..io.images import load_mask
        from ..segment import SegmentConfig

        hidden, sites = self.adapter.hidden_size, [s.name for s in self.adapter.sites()]
        num_steps = self.generation.num_inference_steps
        self.generation.validate()
        checked: set[str] = set()
        for j, job in enumerate(self.config.jobs):
            command = job["command"]
            for s in job_settings(job):
                key = json.dumps([j, s], sort_keys=True)
                if key in checked:
                    continue
                checked.add(key)
                try:
                    if command == "find":
                        FindConfig(prompts=["-"], k=s["k"], statistic=s["statistic"]).validate(hidden, sites)
                    elif command == "disrupt" and s["rule"] != "none":
                        DisruptConfig(
                            prompts=["-"],
                            ks=[s["k"]],
                            rules=[s["rule"]],
                            factor=s["factor"],
                            statistic=s["statistic"],
                            sites=s["sites"],
                            steps=_window(s["window"]),
                            generation=self.generation,
                        ).validate(hidden, sites)
                        Scope(steps=_window(s["window"])).validate(sites, num_steps)
                    elif command == "segment":
                        SegmentConfig(prompts=["-"], k=s["k"], rules=s["rules"], statistic=s["statistic"]).validate(
                            hidden
                        )
                    elif command == "transport":
                        self.transport_config(s).validate(hidden, sites, num_steps)
                        if s["mask_image"]:
                            from ..generation import image_size

                            load_mask(s["mask_image"], image_size(self.pipe, self.generation))
                except ValueError as err:
                    raise SweepConfigError(f"{self.config.where(j)}: {err}") from None

    def transport_config(self, s: dict[str, Any]):
        from ..transport import TransportConfig

        return TransportConfig(
            k=s["k"],
            alpha=s["alpha"],
            mask=s["mask"],
            statistic=s["statistic"],
            foreground=s["foreground"],
            streams=s["streams"],
            sites=tuple(s["sites"]) if s["sites"] else None,
            steps=_window(s["window"]),
            generation=self.generation,
        )

    # ---- one item per command: write its files into `out`, return its scalar metrics ----------
    def find(self, item: Item, out: Path) -> dict[str, Any]:
        from ..core.checks import check_finite
        from ..find import FindConfig, find_channels

        s, g = item.settings, self.generation
        config = FindConfig(
            prompts=[item.prompt],
            seeds=[item.seed],
            k=s["k"],
            statistic=s["statistic"],
            num_inference_steps=g.num_inference_steps,
            guidance_scale=g.guidance_scale,
            height=g.height,
            width=g.width,
        )
        result = find_channels(self.pipe, config, prompt_kwargs=self.rows([item.row]))
        for stat, table in result.samples.img.items():  # the sample's conditional row: no absent (NaN) entries
            check_finite(table, f"the recorded {stat} statistics of item {item.id}")
        summary = result.summary()
        (out / "channels.json").write_text(json.dumps(summary, indent=1) + "\n")
        result.images[0].save(out / "image.png", format="PNG")
        if s["stats"]:
            result.stats.save(out / "stats.safetensors")
        sites = summary["sites"].values()
        return {
            "top_ratio_to_median": _mean([info["ratio_to_median"][0] for info in sites]),
            "jaccard_across_steps": _mean(
                [info["jaccard_across_steps"] for info in sites if info["jaccard_across_steps"] is not None]
            ),
        }

    def disrupt(self, item: Item, out: Path) -> dict[str, Any]:
        from ..core.checks import FiniteCheck, check_finite
        from ..core.hooks import hooks
        from ..disrupt import Condition, DisruptConfig, edit_for
        from ..generation import generate

        s = item.settings
        if s["rule"] == "none":
            condition, config = Condition("none", 0), DisruptConfig(prompts=[item.prompt])
        else:
            condition = Condition(s["rule"], s["k"], s["draw"])
            config = DisruptConfig(
                prompts=[item.prompt],
                ks=[s["k"]],
                rules=[s["rule"]],
                factor=s["factor"],
                statistic=s["statistic"],
                sites=s["sites"],
                steps=_window(s["window"]),
            )
        with hooks(self.pipe, edits=edit_for(condition, config), observers=[FiniteCheck()]):
            images = generate(self.pipe, [item.prompt], [item.seed], self.generation, self.rows([item.row]))
        check_finite(images, f"the image of item {item.id}")
        _png(images[0], out / "image.png")
        metrics = {}
        if self.clip is not None:  # the embedding is kept: merge scores CLIP-I to the unedited item without a CLIP
            from safetensors.torch import save_file

            features = self.clip.image_features(images)
            save_file({"image": features[0].contiguous()}, str(out / CLIP_FEATURES))
            metrics["clip_score"] = float(
                100 * (features * self.clip.text_features([item.prompt])).sum(-1).clamp(min=0)[0]
            )
        if self.config.model.is_builtin:
            from ..metrics.fidelity import objects_fully_correct

            metrics["objects_fully_correct"] = float(objects_fully_correct(images, [item.prompt], self.classifier)[0])
        return metrics

    def segment(self, item: Item, out: Path) -> dict[str, Any]:
        from ..core.checks import check_finite
        from ..segment import SegmentConfig, segment_generated

        s = item.settings
        config = SegmentConfig(
            prompts=[item.prompt],
            seeds=[item.seed],
            k=s["k"],
            rules=s["rules"],
            statistic=s["statistic"],
            foreground=s["foreground"],
            generation=self.generation,
        )
        result = segment_generated(self.pipe, config, prompt_kwargs=self.rows([item.row]))
        check_finite(result.images, f"the image of item {item.id}")
        truth = None
        if self.config.model.is_builtin:
            from ..metrics.fidelity import off_background_masks

            truth = off_background_masks(result.images, [item.prompt])
        result.save(out, truth)
        _png(result.images[0], out / "image.png")
        if truth is None:
            return {f"foreground_{rule}": float(m.float().mean()) for rule, m in result.masks.items()}
        metrics = {}
        for rule, scores in result.scores(truth).items():
            curves = scores.per_site()
            best = int(curves["miou"].argmax())
            metrics |= {
                f"miou_best_{rule}": float(curves["miou"][best]),
                f"oracle_at_best_{rule}": float(curves["oracle"][best]),
            }
        return metrics

    def transport(self, item: Item, out: Path) -> dict[str, Any]:
        from ..core.checks import check_finite
        from ..generation import image_size
        from ..io.images import load_mask
        from ..transport import transport_text

        s = item.settings
        config = self.transport_config(s)
        target, target_row = self.target_prompt(s["target"])
        mask = load_mask(s["mask_image"], image_size(self.pipe, self.generation)).float() if s["mask_image"] else None
        seed = item.seed if s["target_seed"] is None else s["target_seed"]
        embeds = self.rows([item.row, target_row, target_row])
        result = transport_text(
            self.pipe,
            item.prompt,
            target,
            config,
            source_seed=item.seed,
            target_seed=seed,
            mask_image=mask,
            prompt_embeds=embeds,
        )
        for name, images in (("source", result.source), ("target", result.target), ("transported", result.transported)):
            check_finite(images, f"the {name} image of item {item.id}")
        result.save(out)
        from ..metrics.scores import Scorers, transport_scores

        builtin = self.config.model.is_builtin
        if builtin:  # the attribute scores read one object's slot: single-object captions only
            from ..builtin.scenes import parse_caption

            builtin = len(parse_caption(item.prompt).objects) == 1 and len(parse_caption(target).objects) == 1
        scorers = Scorers(builtin=builtin, clip=self.clip, _classifier=self._classifier)
        texts = [None if self.embeds is not None else text for text in (item.prompt, target)]  # rows have no text
        return transport_scores(result, *texts, scorers)[f"a={s['alpha']:g}"]

    def run(self, item: Item, items_dir: Path, identity: dict[str, Any]) -> None:
        """Run one item into a temporary folder and rename it into place when sealed."""
        final = items_dir / item.id
        tmp = items_dir / f"{TMP_PREFIX}{item.id}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            metrics = getattr(self, item.command)(item, tmp)
            _seal(tmp, item, identity, metrics)
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
            raise type(err)(
                f"Item {item.id} ({item.command}, prompt {item.prompt!r}, seed {item.seed}): {err}"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _window(value: list[int] | None) -> tuple[int, int] | None:
    return tuple(value) if value else None


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


# ---- processes ------------------------------------------------------------------------------


@dataclass
class Distributed:
    """This process's place in a torchrun world (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # gloo or nccl once a process group is up

    def device(self, asked: str) -> str:
        """cuda under torchrun means this rank's GPU, cuda:LOCAL_RANK."""
        if self.world > 1 and torch.device(asked).type == "cuda":
            return f"cuda:{self.local_rank}"
        return asked

    def barrier(self) -> None:
        if self.backend is None:
            return
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def sum(self, values: list[int]) -> list[int]:
        if self.backend is None:
            return values
        import torch.distributed as dist

        t = torch.tensor(
            values, dtype=torch.int64, device=f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"
        )
        dist.all_reduce(t)
        return [int(v) for v in t.tolist()]


@contextmanager
def distributed(device: str) -> Iterator[Distributed]:
    """Join the torchrun world if there is one (gloo on CPU, nccl on CUDA); always leave it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = Distributed(
        rank=int(os.environ.get("RANK", "0")), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )
    if world == 1:
        yield d
        return
    import torch.distributed as dist

    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError(
                f'model.device {device!r} was asked for, but this torch build sees no CUDA GPU. Use device = "cpu".'
            )
        if d.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {d.local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                "use at most one process per GPU (torchrun --nproc-per-node)."
            )
        torch.cuda.set_device(d.local_rank)
    d.backend = "nccl" if cuda else "gloo"
    dist.init_process_group(d.backend, timeout=BARRIER_TIMEOUT)
    try:
        yield d
    finally:
        dist.destroy_process_group()


@contextmanager
def _lock(out: Path) -> Iterator[None]:
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

    libraries = [logging]
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
            f"Output folder {str(out)!r} cannot be created: {str(probe)!r} is a file, not a folder. Give --out a folder path",
            str(out),
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES,
            f"Output folder {str(out)!r} is not writable (no write permission on {str(probe)!r}). Give --out a folder you can write to",
            str(out),
        )


def default_out(config: SweepConfig) -> Path:
    return config.out or Path("runs") / f"sweep-{config.path.stem}"


@dataclass
class SweepReport:
    total: int  # items in the sweep
    skipped: int  # already complete before this run (all ranks)
    ran: int  # finished by this run (all ranks)
    out: Path


def _previous_manifest(out: Path) -> dict[str, Any] | None:
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


def _why_changed(
    before: dict[str, Any], now: dict[str, Any], files_before: dict[str, str], files_now: dict[str, str]
) -> str:
    """What changed between two identities, in words: 'the model's weights changed (vae/...)'."""
    parts = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if key == "weights":
            changed = sorted(n for n in set(files_before) | set(files_now) if files_before.get(n) != files_now.get(n))
            named = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            parts.append("the model's weights changed" + (f" ({named})" if named else ""))
        elif key == "embeds_sha256":
            parts.append("the embeddings file (model.embeds) changed")
        elif key == "ditlens":
            parts.append(f"ditlens changed ({old} -> {new})")
        elif key == "generation":
            parts.append(f"the generation settings changed ({old} -> {new})")
        else:
            parts.append(f"model.{key} changed ({old!r} -> {new!r})")
    return ", ".join(parts)


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
    why = _why_changed(previous["identity"], identity, previous.get("weights", {}).get("files", {}), fingerprint.files)
    return (
        f"sweep {config.path.name}: {why} since the items in {items_dir}/ were written: rerunning {redo} "
        f"(the former results stay in items/, unused)"
    )


def run_sweep(
    config: SweepConfig,
    out: str | Path | None = None,
    *,
    allow_download: bool = False,
    quiet: bool = False,
    say: Callable[[str], None] = print,
) -> SweepReport:
    """Run this process's share of the sweep's unfinished items; see the module docstring."""
    from tqdm.auto import tqdm

    from ..models import load_pipeline

    out = Path(out) if out is not None else default_out(config)
    check_writable(out)
    previous = _previous_manifest(out)  # refuses a folder of another format, before the model loads
    with distributed(config.model.device) as d:
        device = d.device(config.model.device)
        m = config.model
        with _quiet_loading(quiet):
            pipe = load_pipeline(
                m.load_name,
                dtype=m.dtype,
                device=device,
                allow_download=m.allow_download or allow_download,
                cpu_offload=m.cpu_offload,
                without_text_encoders=m.embeds is not None,
            )
        pipe.set_progress_bar_config(disable=True)
        runner = Runner(config, pipe, device)
        runner.validate()

        # nothing was written before here: only now the folder, the hashes, the manifest and stale temps
        items_dir = out / "items"
        with _lock(out) if d.rank == 0 else nullcontext():
            if d.rank == 0:  # reads the model's files (once per change: the hashes stay in OUT) ...
                hashes = FileHashes(out / HASHES)
                fingerprint, identity, items = _fingerprinted_plan(config, hashes)
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
                    "versions": _versions(),
                    "items": [item.record() for item in items],
                }
                write_atomic(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
            d.barrier()  # no rank starts before the stale temps are gone
            if d.rank > 0:  # ... the others then find the hashes rank 0 saved
                fingerprint, identity, items = _fingerprinted_plan(config, FileHashes(out / HASHES))
                written = json.loads((out / MANIFEST).read_text())["identity"]
                if written != identity:
                    raise ValueError(
                        f"Process {d.rank} sees another model or other settings than process 0: "
                        f"{_why_changed(written, identity, {}, {})}; every process must read the same files."
                    )

            mine = [item for item in items if item.index % d.world == d.rank]
            todo = [item for item in mine if read_result(items_dir / item.id, item.id) is None]
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
        skipped, ran = d.sum([len(mine) - len(todo), len(todo)])
        report = SweepReport(total=len(items), skipped=skipped, ran=ran, out=out)
        if d.rank == 0 and not quiet:
            say(
                f"sweep {config.path.name}: {ran} items run, {skipped} already done, {len(items)} in all "
                f"({d.world} process{'es' if d.world > 1 else ''}); results in {items_dir}/"
            )
        return report


def _fingerprinted_plan(config: SweepConfig, hashes: FileHashes) -> tuple[Fingerprint, dict[str, Any], list[Item]]:
    """The model's fingerprint, the identity it makes and the items it names."""
    fingerprint = model_fingerprint(config.model, hashes)
    identity = _identity(config, fingerprint, hashes)
    return fingerprint, identity, plan(config, identity, hashes)


def _versions() -> dict[str, str]:
    """Recorded in the manifest, not part of the items' ids (see `_identity`)."""
    import diffusers

    return {"ditlens": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__}


# ---- merge: tables and a figure ---------------------------------------------------------------


def _psnr(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    mse = float(((a - b) ** 2).mean())
    return mse, 10 * math.log10(1.0 / max(mse, 1e-10))


def _setting_label(command: str, settings: dict[str, Any]) -> str:
    parts = [
        f"{k}={'-'.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in settings.items()
        if k != "draw" and v is not None and not (command == "transport" and k == "target")
    ]
    return " ".join(parts)


def merge(config: SweepConfig, out: str | Path | None = None, *, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Summary tables (CSV + JSON) and one figure from the finished items, in OUT/summary/."""
    out = Path(out) if out is not None else default_out(config)
    previous = _previous_manifest(out)
    # the sweep's hashes: a large model is not read again (merge only reads them)
    fingerprint, identity, items = _fingerprinted_plan(config, FileHashes(out / HASHES))
    records: dict[str, dict[str, Any]] = {}
    missing = []
    for item in items:
        record = read_result(out / "items" / item.id, item.id, verify=False)
        if record is None:
            missing.append(item.id)
        else:
            records[item.id] = record
    if not records:
        changed = previous is not None and previous["identity"] != identity
        why = (
            _why_changed(
                previous["identity"], identity, previous.get("weights", {}).get("files", {}), fingerprint.files
            )
            if changed
            else ""
        )
        raise ValueError(
            f"No finished items of {config.path.name} in {str(out / 'items')!r}"
            + (f" ({why} since its items were written)" if why else "")
            + f"; run `ditlens sweep {config.path}` first"
            + (" (with the same --out)." if out != default_out(config) else ".")
        )

    # disrupt: pixel distance of each edited image to its unedited baseline (same prompt and seed)
    baselines = {(i.prompt, i.seed): i.id for i in items if i.command == "disrupt" and i.settings["rule"] == "none"}
    rows = []
    for item in items:
        if item.id not in records:
            continue
        metrics = dict(records[item.id]["metrics"])
        if item.command == "disrupt" and item.settings["rule"] != "none":
            base = baselines.get((item.prompt, item.seed))
            if base in records:
                mse, psnr = _psnr(
                    _load_png(out / "items" / item.id / "image.png"), _load_png(out / "items" / base / "image.png")
                )
                metrics |= {"mse_to_unedited": mse, "psnr_to_unedited": psnr}
                if (out / "items" / base / CLIP_FEATURES).is_file() and (
                    out / "items" / item.id / CLIP_FEATURES
                ).is_file():
                    from safetensors.torch import load_file

                    a, b = (load_file(str(out / "items" / i / CLIP_FEATURES))["image"] for i in (item.id, base))
                    metrics["clip_i_to_unedited"] = float((a * b).sum())
        rows.append({"item": item, "metrics": metrics})

    # one table row per item, then means over prompts, seeds (and random draws) per setting
    setting_keys = sorted({k for r in rows for k in r["item"].settings})
    metric_keys = sorted({k for r in rows for k in r["metrics"]})
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        it = r["item"]
        key = {k: v for k, v in it.settings.items() if k != "draw"}
        groups[(it.job, json.dumps(key, sort_keys=True))].append(r)
    summary_rows = []
    for (job, key), members in groups.items():
        it = members[0]["item"]
        entry: dict[str, Any] = {"command": it.command, "job": job, "settings": json.loads(key), "n": len(members)}
        for m in metric_keys:
            values = [r["metrics"][m] for r in members if m in r["metrics"] and r["metrics"][m] is not None]
            if values:
                t = torch.tensor(values, dtype=torch.float64)
                entry[m] = {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0}
        summary_rows.append(entry)

    folder = out / "summary"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "items_csv": folder / "items.csv",
        "by_setting_csv": folder / "by_setting.csv",
        "json": folder / "summary.json",
        "figure": folder / "summary.png",
    }

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "command", "job", "prompt", "seed", *setting_keys, *metric_keys])
    for r in rows:
        it = r["item"]
        settings = [
            json.dumps(it.settings[k]) if isinstance(it.settings.get(k), list) else it.settings.get(k, "")
            for k in setting_keys
        ]
        writer.writerow(
            [it.id, it.command, it.job, it.prompt, it.seed, *settings, *[r["metrics"].get(m, "") for m in metric_keys]]
        )
    write_atomic(paths["items_csv"], buffer.getvalue().encode())

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["command", "job", "settings", "n", *[f"{m}_{s}" for m in metric_keys for s in ("mean", "std")]])
    for e in summary_rows:
        values = [e[m][s] if m in e else "" for m in metric_keys for s in ("mean", "std")]
        writer.writerow([e["command"], e["job"], _setting_label(e["command"], e["settings"]), e["n"], *values])
    write_atomic(paths["by_setting_csv"], buffer.getvalue().encode())

    summary = {
        "config": str(config.path),
        "n_items": len(items),
        "n_finished": len(records),
        "missing": missing,
        "by_setting": summary_rows,
        "items": [{**r["item"].record(), "metrics": r["metrics"]} for r in rows],
    }
    write_atomic(paths["json"], (json.dumps(summary, indent=1) + "\n").encode())
    _plot(summary_rows, out, records, items, paths["figure"])
    note = (
        f" ({len(missing)} of {len(items)} items are not finished: rerun `ditlens sweep {config.path}`)"
        if missing
        else ""
    )
    say(f"merged {len(records)} items into {folder}/: items.csv, by_setting.csv, summary.json, summary.png{note}")
    return paths


def _plot(
    summary_rows: list[dict[str, Any]], out: Path, records: dict[str, Any], items: list[Item], path: Path
) -> None:
    """One panel per command: the headline number of each against its main setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    commands = [c for c in COMMANDS if any(e["command"] == c for e in summary_rows)]
    fig, axes = plt.subplots(1, len(commands), figsize=(4.2 * len(commands), 3.4), squeeze=False)
    for ax, command in zip(axes[0], commands):
        entries = [e for e in summary_rows if e["command"] == command]
        if command == "find":  # ratio of the top channel to the median channel, per site
            for e in entries:
                per_site = defaultdict(list)
                for item in items:
                    if item.command == "find" and item.id in records and item.settings == e["settings"]:
                        summary = json.loads((out / "items" / item.id / "channels.json").read_text())
                        for s, (site, info) in enumerate(summary["sites"].items()):
                            per_site[s].append(info["ratio_to_median"][0])
                sites = sorted(per_site)
                ax.plot(
                    sites, [_mean(per_site[s]) for s in sites], marker="o", label=_setting_label(command, e["settings"])
                )
            ax.set(
                xlabel="site (forward order)",
                ylabel="top channel / median",
                yscale="log",
                title="find: massive channels",
            )
        elif command == "disrupt":  # PSNR to the unedited image against k, per rule
            lines = defaultdict(list)
            for e in entries:
                if e["settings"]["rule"] != "none" and "psnr_to_unedited" in e:
                    label = e["settings"]["rule"] + (
                        f" x{e['settings']['factor']:g}" if e["settings"]["factor"] else ""
                    )
                    lines[label].append((e["settings"]["k"], e["psnr_to_unedited"]["mean"]))
            for label, points in lines.items():
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
            ax.set(xlabel="k (channels edited)", ylabel="PSNR to unedited (dB)", xscale="log", title="disrupt")
        elif command == "segment":  # best-site mIoU (or foreground share) per rule
            key = "miou_best_" if any(k.startswith("miou_best_") for e in entries for k in e) else "foreground_"
            for n, e in enumerate(entries):
                names = [f"{key}{rule}" for rule in ("top", "bottom", "random", "all") if f"{key}{rule}" in e]
                ax.bar(
                    [x + 0.8 * n / len(entries) for x in range(len(names))],
                    [e[k]["mean"] for k in names],
                    width=0.8 / len(entries),
                    label=_setting_label(command, e["settings"]),
                )
                ax.set_xticks(range(len(names)), [k.removeprefix(key) for k in names])
            ax.set(ylabel="best-site mIoU" if key == "miou_best_" else "foreground share", title="segment")
        else:  # transport: distance to the target alone against alpha
            lines = defaultdict(list)
            for e in entries:
                s = e["settings"]
                if "psnr_to_target_alone" in e:
                    lines[f"k={s['k']} mask={s['mask']}"].append((s["alpha"], e["psnr_to_target_alone"]["mean"]))
            for label, points in lines.items():
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
            ax.set(xlabel="alpha", ylabel="PSNR to target alone (dB)", title="transport")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
