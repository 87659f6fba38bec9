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

The package, one module per step:

    text.py      the config file: TOML/YAML, paths, one-line messages (SweepConfigError)
    jobs.py      the four jobs and their settings, read off the capabilities' config dataclasses
    settings.py  a config's [[jobs]] tables, checked
    prompts.py   the prompts: listed, from a file, or the defaults; checked
    config.py    load_config: the whole config checked before the model loads (SweepConfig)
    hashes.py    SHA-256 of files, remembered between runs (FileHashes)
    identity.py  what every item depends on: the model's files, the version, the settings
    plan.py      the items: prompts x seeds x settings, with their ids (plan, Item)
    store.py     the output folder: result folders whole or absent, the manifest, the lock
    runner.py    running items on one loaded pipeline (Runner)
    dist.py      torchrun: rank, world, this rank's GPU, the two collectives
    run.py       run_sweep: load, check, lay out the folder, run this rank's shard
    merge.py     merge: tables of the finished items; figure.py: their figure
"""

from __future__ import annotations

from .config import MAX_SIDE, ModelOptions, SweepConfig, load_config
from .dist import Distributed, distributed
from .hashes import FileHashes
from .identity import BUILTIN_WEIGHTS, FORMAT_VERSION, Fingerprint, model_fingerprint
from .jobs import COMMANDS, JOB_SETTINGS, JOBS, Job, Setting
from .merge import merge
from .plan import Item, job_settings, plan
from .run import SweepReport, run_sweep
from .runner import Runner
from .store import MANIFEST, RESULT, check_writable, default_out, read_result
from .text import SweepConfigError

__all__ = [
    "BUILTIN_WEIGHTS",
    "COMMANDS",
    "FORMAT_VERSION",
    "JOBS",
    "JOB_SETTINGS",
    "MANIFEST",
    "MAX_SIDE",
    "RESULT",
    "Distributed",
    "FileHashes",
    "Fingerprint",
    "Item",
    "Job",
    "ModelOptions",
    "Runner",
    "Setting",
    "SweepConfig",
    "SweepConfigError",
    "SweepReport",
    "check_writable",
    "default_out",
    "distributed",
    "job_settings",
    "load_config",
    "merge",
    "model_fingerprint",
    "plan",
    "read_result",
    "run_sweep",
]
