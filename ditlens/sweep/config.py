"""A sweep config read and checked: the model, the seeds, the prompts, the generation settings
and the jobs, everything that can be checked before the model loads (docs/scale.md, "The config")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import MAX_SIDE, GenerationSettings
from ..models import is_builtin
from .jobs import COMMANDS
from .prompts import check_builtin_prompts, read_prompts
from .settings import check_targets, check_value, is_int, parse_job
from .text import SweepConfigError, config_error, read_tables, relative, table

__all__ = ["MAX_SIDE", "ModelOptions", "SweepConfig", "SweepConfigError", "load_config"]

MODEL_KEYS = {"name": str, "device": str, "dtype": str, "allow_download": bool, "cpu_offload": bool, "embeds": str}
# The [generation] table's short names for GenerationSettings' fields (the CLI's flags).
GENERATION_KEYS = {"steps": "num_inference_steps", "guidance": "guidance_scale", "height": "height", "width": "width"}


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
        return is_builtin(self.name)

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


def load_config(path: str | Path) -> SweepConfig:
    """Read and check a sweep config (everything that does not need the model)."""
    path = Path(path)
    raw = read_tables(path)
    model = _read_model(table(raw, "model", path), path)
    seeds = _read_seeds(raw.get("seeds", [0]), path)
    given = read_prompts(raw, path, model.is_builtin, model.embeds)
    prompts = [prompt for _, prompt in given]
    generation = _read_generation(table(raw, "generation", path), path)
    jobs = _read_jobs(raw.get("jobs"), path)
    check_targets(jobs, len(prompts), model.embeds is not None, path)
    out = raw.get("out")
    if out is not None and not isinstance(out, str):
        raise config_error(path, f"'out' must be a folder path; got {out!r}.")
    clip = _read_clip(raw.get("clip"), path)
    if model.is_builtin:
        targets = [
            (f"jobs[{j}] (transport) setting 'target'", t)
            for j, job in enumerate(jobs)
            if job["command"] == "transport"
            for t in job["target"]
        ]
        check_builtin_prompts(given + targets, jobs, path)
    return SweepConfig(path, model, prompts, seeds, jobs, generation, relative(path, out) if out else None, clip)


def _read_model(options: dict[str, Any], path: Path) -> ModelOptions:
    for key, value in options.items():
        if key not in MODEL_KEYS:
            raise config_error(path, f"unknown key 'model.{key}'; allowed: {', '.join(MODEL_KEYS)}.")
        if not isinstance(value, MODEL_KEYS[key]):
            wanted = "true or false" if MODEL_KEYS[key] is bool else "a string"
            raise config_error(path, f"'model.{key}' must be {wanted}; got {value!r}.")
    embeds = relative(path, options["embeds"]) if options.get("embeds") else None
    if embeds is not None and not embeds.is_file():
        raise FileNotFoundError(f"Embeddings file {str(embeds)!r} (model.embeds in {path.name}) does not exist.")
    model = ModelOptions(**{k: v for k, v in options.items() if k != "embeds"}, embeds=embeds)
    if not model.is_builtin and relative(path, model.name).exists():
        model = ModelOptions(
            **{k: v for k, v in options.items() if k != "embeds"}, embeds=embeds, folder=relative(path, model.name)
        )
    from ..models import parse_dtype

    try:
        parse_dtype(model.dtype)
        torch.device(model.device)
    except (ValueError, RuntimeError):
        raise config_error(
            path,
            f"'model.dtype' {model.dtype!r} or 'model.device' {model.device!r} is not known; "
            "dtypes: float32, bfloat16, float16; devices: cpu, cuda, mps.",
        ) from None
    return model


def _read_seeds(seeds: Any, path: Path) -> list[int]:
    """A list of seeds, or {from = 0, count = N}."""
    if isinstance(seeds, dict):
        extra = [k for k in seeds if k not in ("from", "count")]
        start, count = seeds.get("from", 0), seeds.get("count")
        if extra or not is_int(start) or not is_int(count) or count < 1:
            raise config_error(
                path, f"'seeds' as a table needs integers 'from' (default 0) and 'count' (>= 1); got {seeds!r}."
            )
        seeds = list(range(start, start + count))
    if not isinstance(seeds, list) or not seeds or not all(is_int(s) and s >= 0 for s in seeds):
        raise config_error(
            path, f"'seeds' must be a non-empty list of integers >= 0 (or {{from = 0, count = N}}); got {seeds!r}."
        )
    if len(set(seeds)) != len(seeds):
        raise config_error(path, f"'seeds' lists a seed twice: {seeds!r}.")
    return seeds


def _read_generation(generation: dict[str, Any], path: Path) -> dict[str, Any]:
    """Each key optional: the pipeline's own default otherwise."""
    for key, value in generation.items():
        if key not in GENERATION_KEYS:
            raise config_error(path, f"unknown key 'generation.{key}'; allowed: {', '.join(GENERATION_KEYS)}.")
        generation[key] = check_value("float" if key == "guidance" else "int", value, f"'generation.{key}'", path)
    settings = GenerationSettings(**{GENERATION_KEYS[key]: value for key, value in generation.items()})
    try:  # the bounds, as the CLI and the capabilities check them
        settings.validate({field: f"'generation.{key}'" for key, field in GENERATION_KEYS.items()})
    except ValueError as err:
        raise config_error(path, str(err)) from None
    return generation


def _read_jobs(jobs: Any, path: Path) -> list[dict[str, Any]]:
    if jobs is None:
        raise config_error(path, f"no jobs: add at least one [[jobs]] table with a 'command' ({', '.join(COMMANDS)}).")
    if not isinstance(jobs, list) or not jobs:
        raise config_error(path, f"'jobs' must be a non-empty list of tables ([[jobs]] in TOML); got {jobs!r}.")
    return [parse_job(j, job, path) for j, job in enumerate(jobs)]


def _read_clip(clip: Any, path: Path) -> Path | None:
    """The local CLIPModel folder that scores disrupt and transport items, if the config names one."""
    if clip is None:
        return None
    if not isinstance(clip, str) or not clip:
        raise config_error(path, f"'clip' must be the path of a local CLIPModel folder; got {clip!r}.")
    from ..metrics.folders import check_clip_folder

    try:
        check_clip_folder(relative(path, clip))
    except ValueError as err:
        raise config_error(path, f"'clip': {err}") from None
    return relative(path, clip)
