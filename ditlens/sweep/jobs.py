"""The four jobs a sweep runs and their settings, read off the capabilities' config dataclasses.

A job's settings are the fields of its capability's config (`FindConfig`, `DisruptConfig`,
`SegmentConfig`, `TransportConfig`): each field's name, kind and default come from
`dataclasses.fields`, so a field added to a config is a sweep setting with no edit here.
What a `Job` says by hand is only where the sweep differs from the config: fields it names
otherwise (`steps` is `window`), list fields of which each item takes one value (disrupt
runs one `k` and one `rule` per item), fields it does not offer (with the reason), and
settings of its own (find's `stats`, transport's `target`).

    JOB_SETTINGS["find"]     # {"k": Setting("int", 4), "statistic": ..., "stats": ...}
    JOBS["find"].build(item.settings, generation, item.prompt, item.seed)  # a FindConfig
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..choices import FOREGROUND_RULES, MASK_ORIGINS, STREAMS
from ..core.channels import STATISTICS
from ..disrupt import RULES as DISRUPT_RULES
from ..disrupt import DisruptConfig
from ..find import FindConfig
from ..generation import GenerationSettings
from ..segment import RULES as SEGMENT_RULES
from ..segment import SegmentConfig
from ..transport import TransportConfig


@dataclass(frozen=True)
class Setting:
    """One job setting. A list given for a scalar kind (or a list of lists for a list kind)
    sweeps over its values; `default` may itself be such a sweep."""

    kind: str  # int, float, str, bool, target, path, names (list of str), window ([start, stop))
    default: Any
    sweepable: bool = True


# Set by the sweep for every job, not per job: its prompts and seeds are the items' other two
# axes, and its [generation] table each config's `generation` field.
SWEEP_OWNED = ("prompts", "seeds", "generation")
# Allowed values of the settings that name a choice, checked before the model loads.
CHOICES: dict[str, tuple[str, ...]] = {
    "statistic": tuple(STATISTICS),
    "foreground": tuple(FOREGROUND_RULES),
    "mask": MASK_ORIGINS,
    "streams": tuple(STREAMS),
}


@dataclass(frozen=True)
class Job:
    """How one sweep command maps onto its capability's config dataclass."""

    command: str
    config: type  # the capability's config dataclass
    renamed: dict[str, str] = field(default_factory=dict)  # config field -> its name in a sweep config
    per_item: tuple[str, ...] = ()  # list fields of which each item takes one value (a sweep by default)
    single: tuple[str, ...] = ()  # fields that take one value, never a list to sweep
    left_out: dict[str, str] = field(default_factory=dict)  # config field -> why a sweep does not offer it
    own: dict[str, Setting] = field(default_factory=dict)  # the sweep's own settings, after the config's
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # allowed values beyond CHOICES
    # Settings put first, in this order: the grid's outer loops, so that items keep the order
    # (and so the shards) that sweeps have always had. The rest follow the config's fields.
    first: tuple[str, ...] = ()

    @property
    def settings(self) -> dict[str, Setting]:
        """Every setting of this job, by its name in a sweep config, in the config's field order
        (after `first`). Derived anew on each call: JOB_SETTINGS holds them once."""
        hints = typing.get_type_hints(self.config)
        derived = {
            self.renamed.get(f.name, f.name): Setting(
                _kind(hints[f.name], f.name in self.per_item, f"{self.config.__name__}.{f.name}"),
                _default(f),
                sweepable=f.name not in self.single,
            )
            for f in fields(self.config)
            if f.name not in SWEEP_OWNED and f.name not in self.left_out
        }
        every = derived | self.own
        return {key: every[key] for key in self.first} | every

    def allowed(self, key: str) -> tuple[str, ...] | None:
        """The values setting `key` may take, where it names a choice."""
        return self.choices.get(key, CHOICES.get(key))

    def build(self, settings: dict[str, Any], generation: GenerationSettings, prompt: str = "-", seed: int = 0) -> Any:
        """The capability's config for one item: its settings, generated with `generation`,
        for its prompt and seed (where the config has them: transport's takes them per call)."""
        hints = typing.get_type_hints(self.config)
        by_sweep = {"prompts": [prompt], "seeds": [seed], "generation": generation}
        values: dict[str, Any] = {}
        for f in fields(self.config):
            name = self.renamed.get(f.name, f.name)
            if f.name in by_sweep:
                values[f.name] = by_sweep[f.name]
            elif f.name in self.left_out or name not in settings:
                continue  # the config's default
            elif f.name in self.per_item:
                values[f.name] = [settings[name]]
            else:
                values[f.name] = _as_type(settings[name], hints[f.name])
        return self.config(**values)


def _kind(hint: Any, per_item: bool, where: str) -> str:
    """The setting kind of a config field's type: `int | None` is int, `list[str]` names,
    `tuple[int, int]` a window; a per-item list field has its elements' kind."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0] if len(args) == 1 else hint
        args = list(typing.get_args(hint))
    origin = typing.get_origin(hint)
    if per_item and origin is list and len(args) == 1:
        return _kind(args[0], False, where)
    if hint in (int, float, str, bool):
        return hint.__name__
    if origin in (list, tuple) and args in ([str], [str, ...]):
        return "names"
    if origin is tuple and args == [int, int]:
        return "window"
    raise TypeError(
        f"{where}: a sweep cannot read a setting of type {hint!r}; give it a kind in ditlens/sweep/jobs.py, "
        "or leave it out there (Job.left_out) with the reason."
    )


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"{f.name} has no default: a sweep setting needs one")


def _as_type(value: Any, hint: Any) -> Any:
    """A setting's value as its config field wants it: the config's tuples are lists in a sweep config."""
    tuples = any(typing.get_origin(a) is tuple for a in (hint, *typing.get_args(hint)))
    return tuple(value) if tuples and isinstance(value, list) else value


JOBS: dict[str, Job] = {
    job.command: job
    for job in (
        Job(
            "find",
            FindConfig,
            left_out={
                "surface_site": "picks what the CLI's surface plot shows; a sweep draws none",
                "surface_step": "likewise",
            },
            # also keep stats.safetensors (large on real models)
            own={"stats": Setting("bool", False, sweepable=False)},
        ),
        Job(
            "disrupt",
            DisruptConfig,
            renamed={"ks": "k", "rules": "rule", "random_draws": "draws", "step_window": "window"},
            per_item=("ks", "rules"),  # one item per k and rule; k = 0 is the unedited baseline, which runs anyway
            single=("random_draws",),  # random-k: seeded draws 0..draws-1, one item each
            choices={"rule": DISRUPT_RULES},
            first=("rule", "k"),
        ),
        Job(
            "segment",
            SegmentConfig,
            left_out={
                # not offered (yet): a new setting is part of every segment item's id
                "random_seed": "the random-k rule's draw stays 0, as in every sweep so far",
                "compare_foregrounds": "the bench's polarity tables; a sweep item writes one naming",
            },
            choices={"rules": SEGMENT_RULES},  # every rule of the list in one pass: one item
        ),
        Job(
            "transport",
            TransportConfig,
            renamed={"step_window": "window"},
            left_out={
                # not offered (yet): a new setting is part of every transport item's id
                "channels_from": "the k channels are selected on the source row, as in every sweep so far",
                "channels": "the random-channel control is the bench's, not a sweep's",
            },
            own={
                "target": Setting("target", None),  # required: the target prompt (an embeddings row with `embeds`)
                "mask_image": Setting("path", None),  # for mask = "user"
                "target_seed": Setting("int", None),  # None: the item's seed
            },
            first=("target", "alpha"),
        ),
    )
}
COMMANDS = tuple(JOBS)
JOB_SETTINGS: dict[str, dict[str, Setting]] = {command: job.settings for command, job in JOBS.items()}
