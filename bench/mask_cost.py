"""K = 2 mask cost per site and step, next to one block forward of the same size.

    .venv/bin/python bench/mask_cost.py [--quick]              # built-in size, CPU
    python3 bench/mask_cost.py --size flux-full                # 4096 tokens x 3072 channels, CUDA

What transport computes at every site and step for its spatial mask (`transport.SpatialMask`
with mask="source"): the top-k channels of the source rows (`TopK(k).channel_indices`), then
`ditlens.core.masks.foreground_tokens` on those channels (gather, min-max normalise, k-means
with K = 2, 10 iterations; on CUDA the clustering is one captured CUDA graph, and the
eager kernels are timed too). The block outputs it runs on are captured from a real forward;
the reference is one double-stream and one single-stream block forward on the same rows
(the blocks' own inputs, captured in the same forward).

flux-full builds FLUX.1's blocks (hidden 3072, 24 heads x 128) in bf16 on the GPU, one of
each kind (the whole 57-block model is not needed here), 4096 image + 512 text tokens.

Target (issue 6): at most 1 ms per site and step for 4096 tokens on the GPU.
"""

from __future__ import annotations

import time
from typing import Any

import common
import models
import torch

import ditlens
from ditlens.core.channels import TopK
from ditlens.core.masks import foreground_tokens
from ditlens.core.performance import PerformanceConfig
from ditlens.transport import TransportConfig


def build(size: str, device: torch.device, rows: int, seed: int) -> tuple[torch.nn.Module, dict, list[str]]:
    if size == "builtin":
        pipe, note = models.builtin_pipeline(seed)
        transformer = pipe.transformer.to(device)
        grid, n_txt = models.builtin_shape(pipe).grid, pipe.text_encoder.config.max_length
        notes = [note]
    else:
        models.require_cuda(device, "--size flux-full")
        transformer = models.flux_full_transformer(device, torch.bfloat16, seed, num_layers=1, num_single_layers=1)
        grid, n_txt = models.FLUX1_SHAPE.grid, models.FLUX1_SHAPE.n_txt
        notes = ["FLUX.1 blocks (hidden 3072, 24 heads x 128), random bf16 weights, one double + one single block"]
    shape = models.FluxShape(batch=rows, grid=grid, n_txt=n_txt)
    notes.append(f"{rows} rows, {shape.n_img} image + {n_txt} text tokens; {models.describe_transformer(transformer)}")
    return transformer, models.flux_inputs(transformer, shape, seed), notes


def capture_blocks(transformer: torch.nn.Module, inputs: dict) -> tuple[dict[str, tuple], torch.Tensor]:
    """Each first block's (module, args, kwargs) and the image output of the first double block."""
    calls: dict[str, tuple] = {}
    handles = []
    for name in ("transformer_blocks", "single_transformer_blocks"):
        block = getattr(transformer, name)[0]

        def pre(module: torch.nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
            calls.setdefault(name, (module, args, dict(kwargs)))

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    images: list[torch.Tensor] = []
    try:
        with ditlens.hooks(transformer, observers=[lambda img, txt, ctx: images.append(img)]):
            transformer(**inputs)
    finally:
        for h in handles:
            h.remove()
    return calls, images[0]


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--size", choices=["builtin", "flux-full"], default="builtin")
    k_help = f"channels per mask (default {TransportConfig.k}: TransportConfig's)"
    parser.add_argument("--k", type=int, default=TransportConfig.k, help=k_help)
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="batch rows (default: built-in 4 = 2 prompts x CFG; flux-full 2 = source + target)",
    )
    args = parser.parse_args()
    device = common.pick_device(args.device)
    thread_notes = common.apply_threads(args.threads, device)
    on_gpu = device.type == "cuda"
    rows = args.rows or (4 if args.size == "builtin" else 2)
    repeats, warmup = common.rounds(args, quick=10 if on_gpu else 5, full=50 if on_gpu else 15, warmup=3)
    torch.manual_seed(args.seed)

    transformer, inputs, notes = build(args.size, device, rows, args.seed)
    notes += thread_notes + [f"k = {args.k}; {repeats} timed rounds after {warmup} warm-up round(s); medians"]
    common.print_header(f"K=2 mask cost per site and step ({args.size})", device, notes)
    with torch.inference_mode():
        calls, img = capture_blocks(transformer, inputs)
        cases = make_cases(calls, img, args.k, device)
        timings = common.time_interleaved(cases, device, repeats, warmup)
    print_results(timings, img, on_gpu and args.size == "flux-full")
    common.print_footer()


def make_cases(calls: dict[str, tuple], img: torch.Tensor, k: int, device: torch.device) -> dict[str, Any]:
    """The mask (selection + clustering), each part alone, on a GPU the clustering without its
    compile and without its graph, and the two block forwards it is measured against."""
    selector = TopK(k)
    channels = selector.channel_indices(img)
    on_gpu = device.type == "cuda"

    def block(name: str) -> Any:
        module, a, kw = calls[name]
        return lambda: module(*a, **kw)

    def variant(performance: PerformanceConfig) -> Any:
        return lambda: foreground_tokens(img, channels, performance=performance)

    if on_gpu:  # the first call compiles and captures: once per shape, timed here on its own
        t0 = time.perf_counter()
        foreground_tokens(img, channels)
        torch.cuda.synchronize(device)
        print(f"first call on this shape (torch.compile + CUDA graph capture): {time.perf_counter() - t0:.1f} s")
    graphed = " (compiled, one CUDA graph replay)" if on_gpu else ""
    cases = {
        f"mask: TopK({k}).channel_indices + foreground_tokens": lambda: foreground_tokens(
            img, selector.channel_indices(img)
        ),
        f"  of which TopK({k}).channel_indices (channel selection)": lambda: selector.channel_indices(img),
        f"  of which foreground_tokens (gather, normalise, k-means){graphed}": lambda: foreground_tokens(img, channels),
    }
    if on_gpu:
        cases["  foreground_tokens, CUDA graph of the eager kernels (no compile)"] = variant(
            PerformanceConfig(compile_clustering=False)
        )
        cases["  foreground_tokens, eager kernels (no graph)"] = variant(PerformanceConfig(cuda_graphs=False))
    return cases | {
        "one double-stream block forward": block("transformer_blocks"),
        "one single-stream block forward": block("single_transformer_blocks"),
    }


def print_results(timings: dict[str, common.Timing], img: torch.Tensor, with_target: bool) -> None:
    mask_name = next(iter(timings))
    double = timings["one double-stream block forward"].median
    single = timings["one single-stream block forward"].median
    rows_out = [[n, t.median * 1e3, t.spread * 1e3, t.median / double, t.median / single] for n, t in timings.items()]
    print(f"## Per site and step, {tuple(img.shape)} image tokens ({img.dtype})")
    common.print_table(["work", "median ms", "+/- ms", "ratio to double block", "ratio to single block"], rows_out)
    mask_ms = timings[mask_name].median * 1e3
    line = (
        f"RESULT K=2 mask: {mask_ms:.3f} ms per site and step = x{mask_ms / 1e3 / double:.3f} of a double block forward"
    )
    if with_target:
        line += f" -> {common.verdict(mask_ms, 1.0)} ms"
    print(line)


if __name__ == "__main__":
    main()
