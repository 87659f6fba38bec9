"""Launch-bound tensor work on CUDA, captured once per input shape and replayed as one graph.

Work made of many small kernels (the K = 2 clustering, a transport edit on a small model)
costs kernel launches and Python dispatch, not arithmetic: replayed from a captured CUDA
graph it costs a copy in, one replay and a copy out (figures in docs/performance.md). The
price is memory: a static copy of the input and the graph's own buffers stay allocated for
as long as the cache that holds the graph lives.

What may be captured: a function of its input tensor alone (and of state it caches on its
first call, which runs before the capture), with no host synchronisation (`.item()`,
`bool(tensor)`, copies from host memory) and no randomness. It may write into its input:
that is the cache's own static copy, refilled before every replay.

Two users, both deciding by a `PerformanceConfig` (ditlens.core.performance):
- the hooks replay an edit of a site through `EditGraphs` (one per `hooks(...)` context),
  when the edit says it is such a function (`graph_safe_for`, a `CapturableEdit`);
- `ditlens.core.masks` runs the clustering through `launch_bound`.

The graphs themselves are caches kept in this module for the session, since their point is
that the next generation with the same settings replays instead of capturing again;
`release_graphs()` frees them all.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeGuard

import torch

from .performance import PerformanceConfig

if TYPE_CHECKING:
    from .hooks import Edit, HookContext

TensorFunction = Callable[[torch.Tensor], torch.Tensor]


class GraphCache:
    """One captured graph per key (shape, dtype, device, ...), replayed on later calls."""

    WARMUP_CALLS = 2  # lazy initialisation (cuBLAS handles, compiled kernels) must happen before capture

    def __init__(self) -> None:
        self._graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def run(self, key: Hashable, fn: TensorFunction, x: torch.Tensor) -> torch.Tensor:
        """fn(x), from the graph captured for `key` (captured now if new). Inside another
        graph's capture, fn runs as it is and its kernels join the outer graph."""
        if torch.cuda.is_current_stream_capturing():
            return fn(x)
        if key not in self._graphs:
            self._graphs[key] = _capture(fn, x.clone(), self.WARMUP_CALLS)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out

    def clear(self) -> None:
        self._graphs.clear()


def _capture(
    fn: TensorFunction, static_in: torch.Tensor, warmup_calls: int
) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
    """Warm up and capture on a side stream, as CUDA graphs require. `capture_begin` rather
    than the `torch.cuda.graph` context: that one also synchronises the device and empties
    the allocator's cache, which a capture in the middle of a generation (a new edit's first
    site) would pay for in re-allocations at every later block of that step."""
    current = torch.cuda.current_stream(static_in.device)
    side = torch.cuda.Stream(static_in.device)
    side.wait_stream(current)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        for _ in range(warmup_calls):
            fn(static_in)
        graph.capture_begin()
        try:
            static_out = fn(static_in)
        finally:
            graph.capture_end()
    current.wait_stream(side)
    return graph, static_in, static_out


# ---- edits of a site ------------------------------------------------------------------------
class CapturableEdit(Protocol):
    """An edit (ditlens.core.hooks.Edit) that can say when it may be captured."""

    def applies(self, ctx: HookContext) -> bool: ...

    def __call__(self, img: torch.Tensor, ctx: HookContext, *, in_place: bool = False) -> torch.Tensor:
        """in_place: write the result into img (only ever the graph's own static copy)."""
        ...

    def graph_safe_for(self, img: torch.Tensor) -> bool:
        """Whether the edit of `img` is a function of img alone (see the module docstring)."""
        ...

    def value_key(self) -> Hashable | None:
        """What makes two edits act alike, or None where it cannot be told: equal keys share graphs."""
        ...


@dataclass
class _CapturedEdit:
    """An edit with the graphs captured of it. The edit is kept whole: its graphs read the
    tensors it cached on its first call (row plans, token masks)."""

    edit: CapturableEdit
    graphs: GraphCache = field(default_factory=GraphCache)


class _SharedEdits:
    """The last-used captured edits by value key, so that an equal edit of a later `hooks(...)`
    context (a new generation with the same settings) replays instead of capturing."""

    def __init__(self) -> None:
        self._by_key: OrderedDict[Hashable, _CapturedEdit] = OrderedDict()

    def find(self, edit: CapturableEdit, keep: int) -> _CapturedEdit:
        """The captured edit equal to `edit`, else a new one for it; the last `keep` are kept."""
        key = edit.value_key()
        if key is None:  # cannot tell what it equals (a user's tensor mask): its graphs are its own
            return _CapturedEdit(edit)
        found = self._by_key.pop(key, None) or _CapturedEdit(edit)
        self._by_key[key] = found  # most recently used last
        while len(self._by_key) > keep:
            self._by_key.popitem(last=False)
        return found

    def __len__(self) -> int:
        return len(self._by_key)

    def clear(self) -> None:
        self._by_key.clear()


_SHARED_EDITS = _SharedEdits()


class EditGraphs:
    """How one `hooks(...)` context applies its edits: from a captured graph where the config
    and the edit allow it, else as they are (the eager path: one check, then the edit)."""

    def __init__(self, config: PerformanceConfig) -> None:
        self.config = config
        self._captured: dict[int, _CapturedEdit] = {}  # id(edit) -> its graphs: looked up at its first site only

    def apply(self, edit: Edit, img: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        if not self.captures(edit, img):
            return edit(img, ctx)
        captured = self._captured.get(id(edit))
        if captured is None:  # the edits live as long as the context: their ids stay theirs
            captured = self._captured[id(edit)] = _SHARED_EDITS.find(edit, self.config.shared_graph_edits)
        owner = captured.edit
        key = (tuple(img.shape), img.dtype, img.device, ctx.grid)  # a captured token mask bakes its grid in
        return captured.graphs.run(key, lambda x: owner(x, ctx, in_place=True), img)

    def captures(self, edit: Edit, img: torch.Tensor) -> TypeGuard[CapturableEdit]:
        """On CUDA, for a block output of at most `graph_max_bytes`, when the edit says it is
        a function of img alone; never while torch.compile traces (it makes its own graphs)."""
        config = self.config
        if not (config.cuda_graphs and img.is_cuda):
            return False
        graph_safe_for = getattr(edit, "graph_safe_for", None)
        return (
            img.numel() * img.element_size() <= config.graph_max_bytes
            and graph_safe_for is not None
            and graph_safe_for(img)
            and not torch.compiler.is_compiling()
        )


# ---- launch-bound functions (the K = 2 clustering) --------------------------------------------
class _CompiledOrEager:
    """torch.compile of one function, made on first use; after a failure (no Triton, no C
    compiler) the eager function for the rest of the session, with one warning."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        self.fn = fn
        self._compiled: Callable[..., torch.Tensor] | None = None
        self.failed: Exception | None = None

    def __call__(self, *args: object) -> torch.Tensor:
        if self.failed is None:
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self.fn, dynamic=False, fullgraph=True)
                return self._compiled(*args)
            except Exception as error:  # the eager kernels still work
                self.failed = error
                name = getattr(self.fn, "__name__", "a function")
                warnings.warn(f"ditlens: compiling {name} failed ({error!r}); using eager kernels.", stacklevel=2)
        return self.fn(*args)


_LAUNCH_BOUND = GraphCache()  # one graph per function, shape and arguments: they repeat across generations
_COMPILED: dict[Callable[..., torch.Tensor], _CompiledOrEager] = {}


def launch_bound(
    fn: Callable[..., torch.Tensor], config: PerformanceConfig, x: torch.Tensor, *args: Hashable
) -> torch.Tensor:
    """fn(x, *args): on CUDA with `config.cuda_graphs`, from a graph captured once per shape
    and arguments (compiled first with `config.compile_clustering`); else as it is. Inside a
    larger capture (a captured edit) its kernels join that graph."""
    if not (config.cuda_graphs and x.is_cuda) or torch.compiler.is_compiling():
        return fn(x, *args)
    compiled = config.compile_clustering
    run = fn
    if compiled:
        run = _COMPILED.get(fn) or _COMPILED.setdefault(fn, _CompiledOrEager(fn))
    key = (fn, tuple(x.shape), x.dtype, x.device, compiled, args)
    return _LAUNCH_BOUND.run(key, lambda y: run(y, *args), x)


def release_graphs() -> None:
    """Free every captured graph: the shared edits' and the launch-bound functions' (their
    static copies and buffers go with them). The next call on a shape captures again."""
    _SHARED_EDITS.clear()
    _LAUNCH_BOUND.clear()
