"""How the hooks trade memory and compile time for kernel launches: one config, passed to
`ditlens.hooks(..., performance=PerformanceConfig(...))`.

None of the switches changes what is computed: a captured CUDA graph replays the very
kernels it captured, so the images stay bit-identical (tests/test_cuda_graphs.py), and a
compiled clustering only may sum in another order (a boundary token may flip). Off CUDA,
none of them does anything. The defaults are the measured choices of docs/performance.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PerformanceConfig:
    # replay launch-bound work on CUDA (a small block's edit, the K = 2 clustering) from captured
    # graphs: on the built-in model the edit's kernel launches cost about as much as a block's
    cuda_graphs: bool = True
    # capture an edit only where its block output is at most this: at the FLUX.1 size a forced
    # graph gained nothing (large outputs are not launch-bound), and its static copy holds one output
    graph_max_bytes: int = 16 * 2**20
    # equal edits share their graphs, so that the next generation with the same settings (the next
    # transport call) replays instead of capturing again (two warm-up runs, the capture, its
    # instantiation); the last this-many are kept, each with a static copy of a block output
    shared_graph_edits: int = 4
    # fuse the clustering's ~220 small kernels with torch.compile before capturing them (once per
    # shape, seconds); where compiling fails (no Triton, no C compiler) the eager kernels run
    compile_clustering: bool = True

    def __post_init__(self) -> None:
        if self.graph_max_bytes < 0:
            raise ValueError(f"graph_max_bytes must be >= 0 (0: never capture an edit); got {self.graph_max_bytes!r}.")
        if self.shared_graph_edits < 0:
            raise ValueError(f"shared_graph_edits must be >= 0; got {self.shared_graph_edits!r}.")


#: what `ditlens.hooks` and `foreground_tokens` use when given no config
DEFAULT_PERFORMANCE = PerformanceConfig()
