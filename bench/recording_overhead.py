"""Recording overhead per denoising step: one transformer forward with and without ditlens'
look-only recording hooks, plain diffusers as the baseline in the same run.

    .venv/bin/python bench/recording_overhead.py [--quick]             # built-in model, CPU
    python3 bench/recording_overhead.py --model flux-full [--compile]  # FLUX.1 size, CUDA

One denoising step is one transformer forward (a CFG step of the built-in pipeline is one
forward of 2 x images rows). Cases run in interleaved rounds; each hooked sample enters and
leaves its own `ditlens.hooks(...)` context, so registration is inside the timed region.

Targets (issue 6): at most 10% per step on the built-in model on CPU, at most 3% on the
full-size FLUX.1 architecture on the GPU.

--compile measures torch.compile(transformer) instead: plain, and with recording hooks
registered BEFORE compiling, next to plain eager. The hooked model is a second copy whose
`hooks(...)` context stays open for all its samples (each sample is one more step of one
run, as in a generation). Compile times, graph breaks and recompiles are printed as they
happen; if the hooked model recompiles at step 1 it is not timed further (each recompile of
the full model costs as much as the first compile).
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import common
import models
import torch

import ditlens
from ditlens import RecordConfig
from ditlens.core.channels import STATISTICS, channel_statistic
from ditlens.core.record import Recorder

TARGET = {"cpu": 1.10, "cuda": 1.03}
PLAIN = "plain diffusers"
DEFAULT = "ditlens record (default: img, 3 statistics, fp32)"
COMPILED_HOOKED = "compiled: ditlens record (hooks before compile)"


def load_model(
    name: str, device: torch.device, seed: int, images: int, blocks: tuple[int, int] | None = None
) -> tuple[torch.nn.Module, dict, list[str]]:
    """The transformer, its forward inputs and notes for the header. `blocks`: flux-full with
    (double, single) blocks instead of FLUX.1's (19, 38), same width."""
    if name == "builtin":
        pipe, note = models.builtin_pipeline(seed)
        transformer = pipe.transformer.to(device)
        shape = models.builtin_shape(pipe, images)
        notes = [
            note,
            f"one CFG step of {images} images: batch {shape.batch}, {shape.n_img} image + {shape.n_txt} text tokens",
        ]
    else:
        models.require_cuda(device, "--model flux-full")
        t0 = time.perf_counter()
        depth = {} if blocks is None else {"num_layers": blocks[0], "num_single_layers": blocks[1]}
        transformer = models.flux_full_transformer(device, torch.bfloat16, seed, **depth)
        common.sync(device)
        shape = models.FLUX1_SHAPE
        what = (
            "FLUX.1 [dev] architecture"
            if blocks is None
            else f"FLUX.1 width, REDUCED depth {blocks[0]} + {blocks[1]} blocks"
        )
        notes = [
            f"{what}, random bf16 weights, built on the GPU in {time.perf_counter() - t0:.1f} s",
            f"1024x1024: batch {shape.batch}, {shape.n_img} image + {shape.n_txt} text tokens, "
            "guidance-distilled (no CFG)",
        ]
    notes.append(models.describe_transformer(transformer))
    return transformer, models.flux_inputs(transformer, shape, seed), notes


def parse_args() -> argparse.Namespace:
    parser = common.base_parser(__doc__)
    parser.add_argument("--model", choices=["builtin", "flux-full"], default="builtin")
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="built-in model: images per CFG step, rows = 2 x images (default 8, --quick 2)",
    )
    parser.add_argument("--compile", action="store_true", help="measure under torch.compile instead (see above)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend for --compile (default inductor)")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time idle hooks and other RecordConfigs (default on CUDA)"
    )
    parser.add_argument(
        "--blocks",
        default=None,
        help="flux-full: DOUBLE,SINGLE blocks instead of 19,38 (e.g. 4,8 to compile in seconds)",
    )
    args = parser.parse_args()
    args.blocks = tuple(int(n) for n in args.blocks.split(",")) if args.blocks else None
    if args.blocks is not None and (args.model != "flux-full" or len(args.blocks) != 2):
        parser.error(f"--blocks takes DOUBLE,SINGLE and only with --model flux-full; got {args.blocks!r}")
    return args


def main() -> None:
    args = parse_args()
    device = common.pick_device(args.device)
    thread_notes = common.apply_threads(args.threads, device)
    if device.type == "cuda":
        repeats, warmup = common.rounds(args, quick=5, full=20, warmup=3)
    else:
        repeats, warmup = common.rounds(args, quick=4, full=20, warmup=1)
    images = args.images or (2 if args.quick else 8)
    torch.manual_seed(args.seed)

    transformer, inputs, notes = load_model(args.model, device, args.seed, images, args.blocks)
    sites = len(ditlens.adapter_for(transformer).sites())
    notes += thread_notes + [f"{sites} hooked sites; {repeats} timed rounds after {warmup} warm-up round(s); medians"]
    title = f"recording overhead per step ({args.model}{', torch.compile ' + args.backend if args.compile else ''})"
    common.print_header(title, device, notes)
    if args.compile:
        compiled(transformer, inputs, device, args.backend, repeats, warmup)
    else:
        eager(transformer, inputs, device, repeats, warmup, breakdown=args.breakdown or device.type == "cuda")
    common.print_footer()


def eager(
    transformer: torch.nn.Module, inputs: dict, device: torch.device, repeats: int, warmup: int, breakdown: bool
) -> None:
    """Plain forwards next to forwards inside a recording `hooks(...)` context, end to end and
    the recording work alone; `breakdown`: also idle hooks and other RecordConfigs."""

    def plain() -> None:
        transformer(**inputs)

    def hooked(record: RecordConfig | bool) -> Any:
        def run() -> None:
            with ditlens.hooks(transformer, record=record):
                transformer(**inputs)

        return run

    cases = {PLAIN: plain, DEFAULT: hooked(RecordConfig())}
    if breakdown:
        cases["ditlens hooks attached, nothing recorded"] = hooked(False)
        cases["ditlens record (img + txt, 3 statistics)"] = hooked(RecordConfig(streams=("img", "txt")))
        cases["ditlens record (img, abs_mean only)"] = hooked(RecordConfig(statistics=("abs_mean",)))
    with torch.inference_mode():
        timings = common.time_interleaved(cases, device, repeats, warmup)
        work = isolated_costs(transformer, inputs, device, max(repeats, 10))
        peaks = {name: common.peak_memory(fn, device) for name, fn in cases.items()}

    print("## End to end: one transformer forward per step")
    common.print_ratio_table(("case", "median ms/step", "+/- ms"), 1e3, timings, PLAIN, peaks)
    print()
    base = timings[PLAIN]
    print(f"## Recording work alone, summed over the {len(ditlens.adapter_for(transformer).sites())} sites of one step")
    rows = [
        [n, t.median * 1e3, t.spread * 1e3, t.cpu_median * 1e3, 100 * t.median / base.median] for n, t in work.items()
    ]
    common.print_table(["work", "ms/step", "+/- ms", "CPU ms/step", "% of plain step"], rows)

    ratio, error = common.paired_ratio(timings[DEFAULT], base), common.ratio_error(timings[DEFAULT], base)
    cpu_ratio = common.paired_ratio(timings[DEFAULT], base, cpu=True)
    work_s = next(iter(work.values())).median
    print(
        f"RESULT recording overhead (default RecordConfig), end to end: x{ratio:.3f} +/- {error:.3f} per step (wall), "
        f"x{cpu_ratio:.3f} (process CPU time) -> {common.verdict(ratio, TARGET[device.type], error)}"
    )
    print(
        f"RESULT recording work alone: {work_s * 1e3:.2f} ms per step = x{1 + work_s / base.median:.3f} of a plain step"
    )


def isolated_costs(
    transformer: torch.nn.Module, inputs: dict, device: torch.device, repeats: int
) -> dict[str, common.Timing]:
    """The recording work alone, on block outputs captured from one forward: short,
    repeatable samples that stay precise where whole forwards drown in other jobs' noise."""
    captured: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def capture(img: torch.Tensor, txt: torch.Tensor | None, ctx: Any) -> None:
        captured.append((img, txt))

    with ditlens.hooks(transformer, observers=[capture]):
        transformer(**inputs)
    names = [s.name for s in ditlens.adapter_for(transformer).sites()]

    def statistic(stream: int, name: str) -> Any:
        def run() -> None:
            for pair in captured:
                if pair[stream] is not None:
                    channel_statistic(pair[stream], name)

        return run

    def observe_all() -> None:
        recorder = Recorder(RecordConfig(), names)
        for index, (img, txt) in enumerate(captured):
            recorder.reduce(index, img, txt)

    cases = {"Recorder.reduce, default RecordConfig (all of the recording work)": observe_all}
    for stream, label in ((0, "img"), (1, "txt")):
        for name in STATISTICS:
            cases[f"  of which {name} on {label}"] = statistic(stream, name)
    return common.time_interleaved(cases, device, repeats, warmup=2)


def compiled(
    transformer: torch.nn.Module, inputs: dict, device: torch.device, backend: str, repeats: int, warmup: int
) -> None:
    """Plain eager, plain compiled and compiled-with-hooks, interleaved; compile facts first."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    # By default dynamo does not guard on module hooks: the hooked copy would silently run the
    # graph traced for the plain model (same forward code), hooks skipped. Guard on them.
    dynamo.config.skip_nnmodule_hook_guards = False
    print(
        "compile: torch._dynamo.config.skip_nnmodule_hook_guards = False "
        "(else hooks attached after a compile are skipped)"
    )
    dynamo.reset()
    counters.clear()
    hooked_model = copy.deepcopy(transformer)  # outside inference_mode: the same kind of parameters
    with torch.inference_mode():
        plain_c = torch.compile(transformer, backend=backend)
        seconds = _first_call(lambda: plain_c(**inputs), device)
        print(f"compile: plain, first call (compiles) {seconds:.1f} s, {_graphs()} graph(s)", flush=True)

        context = ditlens.hooks(hooked_model, record=RecordConfig())
        context_run = context.__enter__()  # open for the whole benchmark: every sample is one more step
        try:
            hooked_c = torch.compile(hooked_model, backend=backend)
            cases = {
                "plain diffusers (eager)": lambda: transformer(**inputs),
                "compiled: plain diffusers": lambda: plain_c(**inputs),
            }
            if _compiles_once(lambda: hooked_c(**inputs), device):
                cases[COMPILED_HOOKED] = lambda: hooked_c(**inputs)
            timings = common.time_interleaved(cases, device, repeats, warmup)
        finally:
            context.__exit__(None, None, None)
    stats = context_run.stats
    print(f"check: the compiled hooked run recorded {stats.num_steps} steps x {len(stats.sites)} sites")
    print()
    _print_compiled(timings, device)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _first_call(fn: Any, device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    common.sync(device)
    return time.perf_counter() - t0


def _compiles_once(hooked: Any, device: torch.device) -> bool:
    """Steps 0 and 1 of the compiled hooked model, with what dynamo did: True if step 1 reused
    step 0's graph (else it recompiles at every step and is not worth timing)."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    before = _graphs()
    step0 = _first_call(hooked, device)
    print(f"compile: with recording hooks, step 0 (compiles) {step0:.1f} s", flush=True)
    seen = len(_recompile_reasons())
    step1 = _first_call(hooked, device)  # must reuse the step-0 graph
    new_graphs, breaks = _graphs() - before, dict(counters["graph_break"])
    print(
        f"compile: with recording hooks, step 1 {step1:.1f} s; {new_graphs} graph(s) for 2 steps; "
        f"graph breaks: {sum(breaks.values())}",
        flush=True,
    )
    for reason, count in list(breaks.items())[:5]:
        print(f"  graph break x{count}: {reason[:300]}")
    if new_graphs <= 1:
        return True
    limit = getattr(dynamo.config, "recompile_limit", getattr(dynamo.config, "cache_size_limit", "?"))
    print(
        f"compile: RECOMPILES at every step ({new_graphs} graphs for 2 steps): a 28-step run compiles "
        f"{limit} times, then dynamo runs the transformer eagerly for the rest. Not timed further."
    )
    for reason in _recompile_reasons()[seen:][:3]:
        print(f"  guard failure at step 1: {reason.split('User stack')[0].strip()[:500]}")
    return False


def _print_compiled(timings: dict[str, common.Timing], device: torch.device) -> None:
    eager, plain = timings["plain diffusers (eager)"], timings["compiled: plain diffusers"]
    rows = [
        [
            n,
            t.median * 1e3,
            t.spread * 1e3,
            common.paired_ratio(t, eager),
            common.paired_ratio(t, plain),
            common.ratio_error(t, plain),
        ]
        for n, t in timings.items()
    ]
    common.print_table(["case", "median ms/step", "+/- ms", "x eager plain", "x compiled plain", "+/- s.e."], rows)
    hooked = timings.get(COMPILED_HOOKED)
    if hooked is not None:
        ratio, error = common.paired_ratio(hooked, plain), common.ratio_error(hooked, plain)
        print(
            f"RESULT compiled recording overhead: x{ratio:.3f} +/- {error:.3f} per step -> "
            f"{common.verdict(ratio, TARGET[device.type], error)}"
        )
    else:
        print("RESULT compiled recording: recompiles at every step (see above); no steady state to time")


def _recompile_reasons() -> list[str]:
    try:
        from torch._dynamo.utils import guard_failures
    except ImportError:
        return []
    return [f"{getattr(code, 'co_name', code)}: {f}" for code, failures in guard_failures.items() for f in failures]


if __name__ == "__main__":
    main()
