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
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

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
