"""The capability configs: every default ditlens uses, each with its reason, in one place.

    FindConfig       find_channels   which channels are massive, per site and step
    DisruptConfig    disrupt         zero (or scale) top-k against bottom-k and random-k
    SegmentConfig    segment_*       K = 2 masks per site and step, with their baselines
    TransportConfig  transport_*     a source's massive channels into a target's generation
    GenerationSettings               the pipeline settings all of them share

Plain Python, no torch: the command line reads its defaults from here (`default=FindConfig.k`)
and answers `--help` without loading torch; the app and sweep read them too. Validation that
needs the model (its hidden size and sites) is each config's `validate`, which the capability
calls; the checks it uses import torch-side helpers only when they run.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .choices import (
    DEFAULT_FOREGROUND,
    DEFAULT_STATISTIC,
    FOREGROUND_RULES,
    MASK_ORIGINS,
    check_foreground,
    check_streams,
)

DISRUPT_RULES = ("top", "bottom", "random")  # top = massive; bottom and random = the controls of the same size
MASK_RULES = ("top", "bottom", "random", "all")  # top + the baselines, clustered in one pass
CHANNEL_RULES = ("top", "random")  # transport's channels: the massive ones, or the control of the same size


def check_prompts_and_seeds(prompts: list[str], seeds: list[int]) -> None:
    if not prompts:
        raise ValueError("Give at least one prompt.")
    if not seeds:
        raise ValueError("Give at least one seed.")


def _check_k_and_statistic(k: int, hidden_size: int, statistic: str) -> None:
    from .core.channels import check_k, check_statistic

    check_k(k, hidden_size)
    check_statistic(statistic)


def _check_scope(
    sites: tuple[str, ...] | list[str] | None,
    step_window: tuple[int, int] | None,
    site_names: list[str],
    num_steps: int | None = None,
) -> None:
    from .core.intervene import Scope

    Scope(sites=tuple(sites) if sites else None, step_window=step_window).validate(site_names, num_steps)


#: bounds of the generation settings: wide enough for every supported model (FLUX.1 at 2048 px,
#: 50-step schedules), narrow enough that a typo such as a height of 100000 is an error, not an
#: hour of allocation
MAX_STEPS = 1000
MAX_SIDE = 8192


@dataclass
class GenerationSettings:
    num_inference_steps: int | None = None  # None: the pipeline's own default
    guidance_scale: float | None = None  # None: the pipeline's own default
    height: int | None = None
    width: int | None = None
    # FLUX.1 and Qwen-Image: > 1 (with a negative prompt) adds a separate unconditional call
    # per step ("true" CFG); None: the pipeline's own default. Pipelines without it refuse it.
    true_cfg_scale: float | None = None
    negative_prompt: str | None = None  # None: the pipeline's own (mostly empty, or none)

    def kwargs(self, pipe: Any = None, batch: int | None = None, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """The pipeline arguments these settings make, for a call of `batch` prompts; with
        `pipe`, also those its family's adapter always passes (`Adapter.generation_kwargs`:
        SANA's binning off) unless the caller's own arguments `given` set them."""
        names = ("num_inference_steps", "guidance_scale", "height", "width", "true_cfg_scale")
        own = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        if self.negative_prompt is not None:  # one per prompt: FLUX.1 and Qwen-Image want as many as prompts
            own["negative_prompt"] = [self.negative_prompt] * batch if batch else self.negative_prompt
        if pipe is None or not hasattr(pipe, "transformer"):
            return own
        parameters = inspect.signature(pipe.__call__).parameters
        refused = [n for n in own if n not in parameters and n in ("true_cfg_scale", "negative_prompt")]
        if refused:
            option = refused[0].replace("_scale", "").replace("_", "-")
            raise ValueError(
                f"{type(pipe).__name__} takes no {refused[0]!r} (--{option}); "
                "its --guidance sets its classifier-free guidance."
            )
        from .adapters import adapter_for

        defaults = {k: v for k, v in adapter_for(pipe).generation_kwargs(pipe).items() if k not in (given or {})}
        return defaults | own

    def validate(self, names: dict[str, str] | None = None) -> None:
        """Each setting within its bounds. names: what the caller calls each field in its
        messages (the CLI: `--steps` for num_inference_steps); default: the field names."""

        def named(field_name: str) -> str:
            return (names or {}).get(field_name, field_name)

        steps = self.num_inference_steps
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            raise ValueError(
                f"{named('num_inference_steps')} must be a whole number from 1 to {MAX_STEPS}; got {steps}."
            )
        for side in ("height", "width"):
            value = getattr(self, side)
            if value is not None and not 1 <= value <= MAX_SIDE:
                raise ValueError(
                    f"{named(side)} must be from 1 to {MAX_SIDE} pixels (leave it out for the pipeline's default); "
                    f"got {value}."
                )
        guidance = self.guidance_scale
        if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
            raise ValueError(f"{named('guidance_scale')} must be a finite number >= 0; got {guidance}.")
        true_cfg = self.true_cfg_scale
        if true_cfg is not None and not (math.isfinite(true_cfg) and true_cfg >= 1):
            raise ValueError(f"{named('true_cfg_scale')} must be a finite number >= 1 (1 = off); got {true_cfg}.")


@dataclass
class FindConfig:
    prompts: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])  # one seed: stability over prompts and steps
    k: int = 4  # the paper reports a handful of massive channels per model
    statistic: str = DEFAULT_STATISTIC
    surface_site: str | None = None  # site whose full tokens to keep for the surface plot; None: middle site
    surface_step: int = 0  # which step of it to plot
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self, hidden_size: int, site_names: list[str]) -> None:
        from .core.sites import check_site

        check_prompts_and_seeds(self.prompts, self.seeds)
        self.generation.validate()
        _check_k_and_statistic(self.k, hidden_size, self.statistic)
        if self.surface_site is not None:
            check_site(self.surface_site, site_names)
        if self.surface_step < 0:
            raise ValueError(f"surface_step must be >= 0; got {self.surface_step}.")
        steps = self.generation.num_inference_steps
        if steps is not None and self.surface_step >= steps:
            raise ValueError(f"Step {self.surface_step} is outside the schedule: 0..{steps - 1}.")


@dataclass
class DisruptConfig:
    prompts: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # the paper's massive sets are this small
    rules: list[str] = field(default_factory=lambda: list(DISRUPT_RULES))  # top = massive; bottom, random = controls
    factor: float = 0.0  # 0 zeroes the channels (the paper); other values scale them
    random_draws: int = 3  # random-k is a distribution: mean and spread over this many draws
    statistic: str = DEFAULT_STATISTIC
    sites: list[str] | None = None  # None: every image-stream site
    step_window: tuple[int, int] | None = None  # [start, stop) denoising steps; None: every step
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self, hidden_size: int, site_names: list[str]) -> None:
        check_prompts_and_seeds(self.prompts, self.seeds)
        for rule in self.rules:
            if rule not in DISRUPT_RULES:
                raise ValueError(f"Unknown channel rule {rule!r}. Allowed: {', '.join(DISRUPT_RULES)}.")
        for k in self.ks:
            if not isinstance(k, int) or not 0 <= k <= hidden_size:
                raise ValueError(f"k must be an integer in 0..{hidden_size} (0 = no edit); got {k!r}.")
        from .core.channels import check_statistic

        check_statistic(self.statistic)
        if not math.isfinite(self.factor):
            raise ValueError(f"factor must be a finite number; got {self.factor!r}.")
        if self.random_draws < 1:
            raise ValueError(f"random_draws must be >= 1; got {self.random_draws}.")
        _check_scope(self.sites, self.step_window, site_names)
        self.generation.validate()


@dataclass
class SegmentConfig:
    prompts: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    k: int = 4  # massive channels used for clustering
    rules: list[str] = field(default_factory=lambda: list(MASK_RULES))  # top + the baselines, in one pass
    statistic: str = DEFAULT_STATISTIC
    random_seed: int = 0
    foreground: str = DEFAULT_FOREGROUND  # which K=2 cluster is the subject: choices.py says why this one
    compare_foregrounds: bool = False  # also name every split by every other rule (the bench's polarity tables)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self, hidden_size: int) -> None:
        check_prompts_and_seeds(self.prompts, self.seeds)
        for rule in self.rules:
            if rule not in MASK_RULES:
                raise ValueError(f"Unknown mask rule {rule!r}. Allowed: {', '.join(MASK_RULES)}.")
        _check_k_and_statistic(self.k, hidden_size, self.statistic)
        check_foreground(self.foreground)
        self.generation.validate()

    @property
    def foregrounds(self) -> tuple[str, ...]:
        """The naming rules to apply, this config's own first."""
        others = [r for r in FOREGROUND_RULES if r != self.foreground] if self.compare_foregrounds else []
        return (self.foreground, *others)


@dataclass
class TransportConfig:
    # k, mask, streams and channels_from: the choice of `ditlens bench transport --device cuda
    # --n 32` on the built-in model (commits 953c2e1 and 5f57d7a, docs/transport.md), scored by
    # clean transfer x layout kept (x (1 - ghosting); the background factor came later and picks the
    # same path on that run's rows: first_changed_choice). Every setting scores low there: the best,
    # the text stream's top-64 channels in steps [4, 8) of 8, moved the source's colour in 5 of
    # 32 pairs (score 0.061, ghosting 0.20); copying more of the image stream moved more but drew
    # noise (k = 256: ghosting 0.93). The window is not a default: step indices belong to one
    # schedule (a 4-step FLUX.1 [schnell] has no step 4); pass `step_window` to restrict.
    k: int = 64  # channels moved per site and step
    alpha: float = 1.0  # 1 = the paper's rule (full replacement)
    mask: str = "source"  # the image stream's spatial mask (MASK_ORIGINS); the paper's: the source's foreground
    foreground: str = DEFAULT_FOREGROUND  # which K=2 cluster the source/target/union masks take (choices.py)
    streams: str = "txt"  # which streams move (choices.STREAMS): txt 0.061, both 0.042, img 0.026
    statistic: str = DEFAULT_STATISTIC
    channels_from: str = "source"  # select the k channels on the source row (or "union", "target")
    channels: str = "top"  # which k channels: "top" (the massive ones) or "random" (the control, seeded)
    sites: tuple[str, ...] | None = None  # None: every image-stream site
    step_window: tuple[int, int] | None = None  # [start, stop) denoising steps; None: every step
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self, hidden_size: int, site_names: list[str], num_steps: int | None = None) -> None:
        _check_k_and_statistic(self.k, hidden_size, self.statistic)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1]; got {self.alpha!r}.")
        if self.mask not in MASK_ORIGINS:
            raise ValueError(f"Unknown mask origin {self.mask!r}. Allowed: {', '.join(MASK_ORIGINS)}.")
        check_foreground(self.foreground)
        check_streams(self.streams)
        if self.channels not in CHANNEL_RULES:
            raise ValueError(f"Unknown channel rule {self.channels!r}. Allowed: {', '.join(CHANNEL_RULES)}.")
        _check_scope(self.sites, self.step_window, site_names, num_steps)
        self.generation.validate()


def default(config: type, name: str) -> Any:
    """The default of field `name` of a config dataclass (a fresh copy where it is a list):
    what the CLI, the app and sweep show and use, e.g. `default(DisruptConfig, "ks")`."""
    spec = {f.name: f for f in fields(config)}[name]
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default
