"""Attach to a diffusers pipeline or transformer, record and edit, always detach.

    with ditlens.hooks(pipe, record=True, edits=[ZeroChannels(TopK(4))]) as run:
        image = pipe(prompt, generator=torch.Generator().manual_seed(0)).images[0]
    run.stats.save("stats.safetensors")

Where to hook comes from the model family's adapter; what to do there (record, edit) is
model-agnostic. Hooks are PyTorch hook handles, removed when the context closes, also on
an exception. Hooks that only look return None, so outputs stay bit-identical.

Step index: with a pipeline, the step is the number of `scheduler.step` calls since the
last `scheduler.set_timesteps` (so pipelines that call the transformer twice per step for
classifier-free guidance keep one step index, with `ctx.call` = 0, 1). With a bare
transformer, each forward call is one step.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..adapters import Adapter, Site, Streams, adapter_for
from .cuda_graphs import EditGraphs
from .performance import DEFAULT_PERFORMANCE, PerformanceConfig
from .record import ChannelStats, RecordConfig, Recorder
from .sites import check_sites

_HOOKED_FLAG = "_ditlens_hooked"


@dataclass(frozen=True)
class HookContext:
    """What a hook knows about where and when it runs."""

    site: str  # the block's name in the module tree, as `print(transformer)` shows it
    step: int  # denoising step, 0-based
    call: int  # transformer call within this step (0, or 1 for a separate CFG call)
    batch_size: int
    step_calls: tuple[int, ...] = ()  # rows of this step's calls so far, this one last (`ditlens.core.rows` reads them)
    grid: tuple[int, int] | None = None  # (rows, cols) of this call's image tokens, from its inputs (adapter)
    performance: PerformanceConfig = DEFAULT_PERFORMANCE  # the hooks' own, for an edit's or observer's K = 2 masks


class Edit(Protocol):
    """Changes one stream of a site's output: the image tokens, or the text tokens where the
    edit has `stream = "txt"` (an optional attribute; default "img")."""

    def applies(self, ctx: HookContext) -> bool: ...

    def __call__(self, img: torch.Tensor, ctx: HookContext) -> torch.Tensor: ...


class Observer(Protocol):
    """Looks at a site's (edited) streams and keeps what it needs; returns nothing."""

    def __call__(self, img: torch.Tensor, txt: torch.Tensor | None, ctx: HookContext) -> None: ...


@dataclass
class StepClock:
    """Tracks the denoising step and the transformer call within it."""

    step: int = -1
    call: int = -1
    run: int = -1  # pipeline run within the context: a new one at each `set_timesteps`
    num_steps: int | None = None  # known once the pipeline set its timesteps
    counts_scheduler_steps: bool = False
    rows_per_call: list[int] = field(default_factory=list)  # the first step of the first run
    step_calls: list[int] = field(default_factory=list)  # rows of each call of the current step so far

    def on_set_timesteps(self, num_steps: int) -> None:
        self.step, self.call, self.num_steps = 0, -1, num_steps
        self.run += 1
        self.step_calls = []

    def on_scheduler_step(self) -> None:
        self.step += 1
        self.call = -1
        self.step_calls = []

    def on_transformer_call(self, batch_size: int) -> None:
        if self.counts_scheduler_steps:
            self.call += 1
        else:
            self.step, self.call = self.step + 1, 0
            self.run, self.step_calls = 0, []
        self.step_calls.append(batch_size)
        if self.step == 0 and self.run <= 0:
            self.rows_per_call.append(batch_size)


class HookedRun:
    """The live state of one `hooks(...)` context; `stats` holds the recording after it."""

    def __init__(
        self,
        adapter: Adapter,
        sites: list[Site],
        recorder: Recorder | None,
        edits: Sequence[Edit],
        observers: Sequence[Observer] = (),
        performance: PerformanceConfig = DEFAULT_PERFORMANCE,
    ):
        self.adapter = adapter
        self.sites = sites
        self.recorder = recorder
        self.edits = list(edits)
        self.observers = list(observers)
        self.performance = performance
        self.graphs = EditGraphs(performance)  # applies each edit, from a captured CUDA graph where it may
        self.clock = StepClock()
        self._stats: ChannelStats | None = None
        self._batch_size = 0
        self._call_open = False  # a transformer call began and its recording is not filed yet
        self._call_step = -1
        self._site_ran = False
        self._skips_blocks = False  # the call in progress skips blocks (skip-layer guidance: the adapter tells)
        self._call_run = 0
        self._grid: tuple[int, int] | None = None  # the call in progress's token grid
        self._step_calls: tuple[int, ...] = ()

    @property
    def stats(self) -> ChannelStats:
        if self.recorder is None:
            raise RuntimeError("This run did not record: pass record=True to ditlens.hooks(...).")
        if self._stats is None:
            self._close_call()
            self._stats = self.recorder.result(self.meta())
        return self._stats

    def meta(self) -> dict[str, Any]:
        calls = max(1, len(self.clock.rows_per_call))
        return {
            "transformer_class": type(self.adapter.transformer).__name__,
            "hidden_size": self.adapter.hidden_size,
            "num_steps": self.clock.num_steps,
            "calls_per_step": calls,
            "rows_per_call": self.clock.rows_per_call,
        }

    # ---- the hooks themselves -------------------------------------------------------------
    # The transformer's pre-hook runs outside torch.compile's graph (dynamo calls a compiled
    # module's own hooks eagerly); the site hooks run inside it. So the clock and all filing
    # live in the pre-hook, and a site hook that only records reads nothing that changes per
    # step: one graph serves every step.
    def _on_transformer_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._close_call()
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        self._batch_size = int(hidden.shape[0]) if hidden is not None else 0
        # only edits and observers use the grid; reading it may sync once per call, never per
        # site. First: a call it refuses (reference tokens in the image stream) never opens
        self._grid = self.adapter.token_grid(args, kwargs) if self.edits or self.observers else None
        self.clock.on_transformer_call(self._batch_size)
        self.adapter.on_transformer_call(args, kwargs)
        self._call_open, self._call_step, self._site_ran = True, self.clock.step, False
        self._call_run, self._step_calls = max(self.clock.run, 0), tuple(self.clock.step_calls)
        self._skips_blocks = self.adapter.skips_blocks(args, kwargs)  # then the hooked blocks may all be skipped

    def _close_call(self) -> None:
        """File the last call's recording; notice a call in which no site hook ran."""
        if not self._call_open:
            return
        self._call_open = False
        if self.sites and not self._site_ran and not self._skips_blocks:
            raise RuntimeError(
                f"ditlens' hooks on {type(self.adapter.transformer).__name__} did not run in its last call. "
                "Was it compiled (torch.compile) before ditlens.hooks(...) was entered? A compiled graph keeps "
                "the hooks it was traced with. Enter ditlens.hooks(...) first, then compile (or call "
                "torch._dynamo.reset() before hooking)."
            )
        if self.recorder is not None:
            self.recorder.file(
                self._call_step, self._call_run
            )  # the step it ran in (the scheduler may have stepped since)

    def _site_hook(self, index: int, site: Site):
        adapter, recorder = self.adapter, self.recorder
        edits, observers, apply, performance = self.edits, self.observers, self.graphs.apply, self.performance

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            self._site_ran = True
            streams = adapter.split(output, args, kwargs)
            img, txt, edited = streams.img, streams.txt, False
            if edits or observers:
                ctx = HookContext(
                    site.name, self.clock.step, self.clock.call, img.shape[0], self._step_calls, self._grid, performance
                )
                for edit in edits:
                    if not edit.applies(ctx):
                        continue
                    if getattr(edit, "stream", "img") == "txt":
                        if txt is None:  # a block without a text stream (cross-attention only, or a last block)
                            continue
                        txt = apply(edit, txt, ctx)
                    else:
                        img = apply(edit, img, ctx)
                    edited = True
                for observer in observers:
                    observer(img, txt, ctx)
            if recorder is not None:
                recorder.reduce(index, img, txt)
            if not edited:
                return None  # look only: the block's output object passes through untouched
            return adapter.merge(output, args, kwargs, Streams(img=img, txt=txt))

        return hook


def _validate_edits(edits: Sequence[Edit], adapter: Adapter, num_steps: int | None) -> None:
    site_names = [s.name for s in adapter.sites()]
    for edit in edits:
        scope = getattr(edit, "scope", None)
        if scope is not None:
            scope.validate(site_names, num_steps)
        channels = getattr(edit, "channels", None)
        if channels is not None and hasattr(channels, "validate"):
            channels.validate(adapter.hidden_size)


def _pick_sites(adapter: Adapter, names: Sequence[str] | None) -> list[Site]:
    sites = adapter.sites()
    if names is None:
        return sites
    known = {s.name: s for s in sites}
    check_sites(names, list(known))
    return [known[n] for n in names]


@contextmanager
def hooks(
    model: Any,
    *,
    record: RecordConfig | bool = False,
    edits: Sequence[Edit] = (),
    observers: Sequence[Observer] = (),
    sites: Sequence[str] | None = None,
    performance: PerformanceConfig = DEFAULT_PERFORMANCE,
) -> Iterator[HookedRun]:
    """Hook a diffusers pipeline (anything with `.transformer`) or a transformer.

    record: True or a RecordConfig to reduce each site's output to channel statistics.
    edits: applied in order at every site and step their scope admits.
    observers: called with each site's streams after the edits (e.g. K = 2 mask makers).
    sites: which blocks to hook (default: all, in forward order).
    performance: when to replay edits from captured CUDA graphs (ditlens.core.performance);
    it changes the speed only, never the result.
    """
    transformer = getattr(model, "transformer", model)
    adapter = adapter_for(transformer)
    if getattr(transformer, _HOOKED_FLAG, False):
        raise RuntimeError(
            f"Already hooked: this {type(transformer).__name__} is inside another ditlens.hooks(...) context. "
            "Close that one first; nested hooks would record and edit twice."
        )
    hooked_sites = _pick_sites(adapter, sites)
    _validate_edits(edits, adapter, None)
    recorder = None
    if record:
        config = record if isinstance(record, RecordConfig) else RecordConfig()
        recorder = Recorder(config, [site.name for site in hooked_sites])
    run = HookedRun(adapter, hooked_sites, recorder, edits, observers, performance)

    scheduler = getattr(model, "scheduler", None) if model is not transformer else None
    handles = []
    patched: dict[str, Any] = {}  # scheduler attribute -> what was in its instance dict before
    setattr(transformer, _HOOKED_FLAG, True)
    try:
        handles.append(transformer.register_forward_pre_hook(run._on_transformer_call, with_kwargs=True))
        for index, site in enumerate(hooked_sites):
            handles.append(site.module.register_forward_hook(run._site_hook(index, site), with_kwargs=True))
        if scheduler is not None:
            run.clock.counts_scheduler_steps = True
            original_set, original_step = scheduler.set_timesteps, scheduler.step

            # functools.wraps keeps the signature: pipelines inspect it (e.g. for `sigmas`)
            @functools.wraps(original_set)
            def set_timesteps(*args: Any, **kwargs: Any) -> Any:
                out = original_set(*args, **kwargs)
                num_steps = len(scheduler.timesteps)
                _validate_edits(edits, adapter, num_steps)
                run.clock.on_set_timesteps(num_steps)
                return out

            @functools.wraps(original_step)
            def step(*args: Any, **kwargs: Any) -> Any:
                out = original_step(*args, **kwargs)
                run.clock.on_scheduler_step()
                return out

            patched = {name: vars(scheduler).get(name) for name in ("set_timesteps", "step")}
            scheduler.set_timesteps, scheduler.step = set_timesteps, step
        yield run
        run._close_call()  # file the last call (on an exception, what was filed stays readable)
    finally:
        for handle in handles:
            handle.remove()
        for name, before in patched.items():
            if before is None:
                delattr(scheduler, name)  # back to the class's own method
            else:
                setattr(scheduler, name, before)
        setattr(transformer, _HOOKED_FLAG, False)


def run_with_cache(
    model: Any, *args: Any, record: RecordConfig | None = None, **kwargs: Any
) -> tuple[Any, ChannelStats]:
    """Call the pipeline or transformer once, returning its output and the channel statistics."""
    with hooks(model, record=record or RecordConfig()) as run:
        output = model(*args, **kwargs)
    return output, run.stats


def run_with_hooks(model: Any, edits: Sequence[Edit], *args: Any, **kwargs: Any) -> Any:
    """Call the pipeline or transformer once with edits applied."""
    with hooks(model, edits=edits):
        return model(*args, **kwargs)
