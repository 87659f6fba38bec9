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

import copy
import time
from typing import Any

import common
import torch

import ditlens
from ditlens import RecordConfig
from ditlens.core.channels import STATISTICS, channel_statistic
from ditlens.core.record import Recorder

TARGET = {"cpu": 1.10, "cuda": 1.03}


def load_model(
    name: str, device: torch.device, seed: int, images: int, blocks: tuple[int, int] | None = None
) -> tuple[torch.nn.Module, dict, list[str]]:
    """The transformer, its forward inputs and notes for the header. `blocks`: flux-full with
    (double, single) blocks instead of FLUX.1's (19, 38), same width."""
    if name == "builtin":
        pipe, note = common.builtin_pipeline(seed)
        transformer = pipe.transformer.to(device)
        shape = common.builtin_shape(pipe, images)
        notes = [
            note,
            f"one CFG step of {images} images: batch {shape.batch}, {shape.n_img} image + {shape.n_txt} text tokens",
        ]
    else:
        common.require_cuda(device, "--model flux-full")
        t0 = time.perf_counter()
        depth = {} if blocks is None else {"num_layers": blocks[0], "num_single_layers": blocks[1]}
        transformer = common.flux_full_transformer(device, torch.bfloat16, seed, **depth)
        common.sync(device)
        shape = common.FLUX1_SHAPE
        what = (
            "FLUX.1 [dev] architecture"
            if blocks is None
            else f"FLUX.1 width, REDUCED depth {blocks[0]} + {blocks[1]} blocks"
        )
        notes = [
            f"{what}, random bf16 weights, built on the GPU in {time.perf_counter() - t0:.1f} s",
            f"1024x1024: batch {shape.batch}, {shape.n_img} image + {shape.n_txt} text tokens, guidance-distilled (no CFG)",
        ]
    notes.append(common.describe_transformer(transformer))
    return transformer, common.flux_inputs(transformer, shape, seed), notes


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--model", choices=["builtin", "flux-full"], default="builtin")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
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
    blocks = tuple(int(n) for n in args.blocks.split(",")) if args.blocks else None
    if blocks is not None and (args.model != "flux-full" or len(blocks) != 2):
        parser.error(f"--blocks takes DOUBLE,SINGLE and only with --model flux-full; got {args.blocks!r}")
    device = common.pick_device(args.device)
    thread_notes = common.apply_threads(args.threads, device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        repeats, warmup = args.repeats or (5 if args.quick else 20), 3 if args.warmup is None else args.warmup
    else:
        repeats, warmup = args.repeats or (4 if args.quick else 20), 1 if args.warmup is None else args.warmup
    images = args.images or (2 if args.quick else 8)
    torch.manual_seed(args.seed)

    transformer, inputs, notes = load_model(args.model, device, args.seed, images, blocks)
    sites = len(ditlens.adapter_for(transformer).sites())
    notes += thread_notes + [f"{sites} hooked sites; {repeats} timed rounds after {warmup} warm-up round(s); medians"]
    title = f"recording overhead per step ({args.model}{', torch.compile ' + args.backend if args.compile else ''})"
    common.print_header(title, device, notes)
    if args.compile:
        compiled(transformer, inputs, device, args.backend, repeats, warmup)
        common.print_footer()
        return

    def plain() -> None:
        transformer(**inputs)

    def hooked(record: RecordConfig | bool, observers: tuple = ()) -> Any:
        def run() -> None:
            with ditlens.hooks(transformer, record=record, observers=observers):
                transformer(**inputs)

        return run

    default = "ditlens record (default: img, 3 statistics, fp32)"
    cases = {"plain diffusers": plain, default: hooked(RecordConfig())}
    if on_gpu or args.breakdown:
        cases["ditlens hooks attached, nothing recorded"] = hooked(False)
        cases["ditlens record (img + txt, 3 statistics)"] = hooked(RecordConfig(streams=("img", "txt")))
        cases["ditlens record (img, abs_mean only)"] = hooked(RecordConfig(statistics=("abs_mean",)))

    with torch.inference_mode():
        timings = common.time_interleaved(cases, device, repeats, warmup)
        work = isolated_costs(transformer, inputs, device, max(repeats, 10))
        peaks = {name: common.peak_memory(fn, device) for name, fn in cases.items()}

    print("## End to end: one transformer forward per step")
    base = timings["plain diffusers"]
    rows = [
        [
            name,
            t.median * 1e3,
            t.spread * 1e3,
            common.paired_ratio(t, base),
            common.ratio_error(t, base),
            common.paired_ratio(t, base, cpu=True),
            common.min_ratio(t, base),
            common.megabytes(peaks[name]),
            common.memory_ratio(peaks[name], peaks["plain diffusers"]),
        ]
        for name, t in timings.items()
    ]
    common.print_table(
        [
            "case",
            "median ms/step",
            "+/- ms",
            "paired ratio",
            "+/- s.e.",
            "CPU-time ratio",
            "ratio of minima",
            "peak MB",
            "peak ratio",
        ],
        rows,
    )
    print(common.RATIO_LEGEND)
    print("peak: tensor bytes allocated above what was live before the call (weights and inputs excluded)")
    print()

    print(f"## Recording work alone, summed over the {sites} sites of one step")
    rows = [
        [n, t.median * 1e3, t.spread * 1e3, t.cpu_median * 1e3, 100 * t.median / base.median] for n, t in work.items()
    ]
    common.print_table(["work", "ms/step", "+/- ms", "CPU ms/step", "% of plain step"], rows)

    ratio, error = common.paired_ratio(timings[default], base), common.ratio_error(timings[default], base)
    cpu_ratio = common.paired_ratio(timings[default], base, cpu=True)
    work_s = next(iter(work.values())).median
    print(
        f"RESULT recording overhead (default RecordConfig), end to end: x{ratio:.3f} +/- {error:.3f} per step (wall), "
        f"x{cpu_ratio:.3f} (process CPU time) -> {common.verdict(ratio, TARGET[device.type], error)}"
    )
    print(
        f"RESULT recording work alone: {work_s * 1e3:.2f} ms per step = x{1 + work_s / base.median:.3f} of a plain step"
    )
    common.print_footer()


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
        "compile: torch._dynamo.config.skip_nnmodule_hook_guards = False (else hooks attached after a compile are skipped)"
    )
    dynamo.reset()
    counters.clear()

    def graphs() -> int:
        return int(counters["stats"]["unique_graphs"])

    def first_call(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        common.sync(device)
        return time.perf_counter() - t0

    hooked_model = copy.deepcopy(transformer)  # outside inference_mode: the same kind of parameters
    with torch.inference_mode():
        plain_c = torch.compile(transformer, backend=backend)
        seconds = first_call(lambda: plain_c(**inputs))
        print(f"compile: plain, first call (compiles) {seconds:.1f} s, {graphs()} graph(s)", flush=True)

        context = ditlens.hooks(hooked_model, record=RecordConfig())
        context_run = context.__enter__()  # open for the whole benchmark: every sample is one more step
        try:
            hooked_c = torch.compile(hooked_model, backend=backend)
            before = graphs()
            step0 = first_call(lambda: hooked_c(**inputs))
            print(f"compile: with recording hooks, step 0 (compiles) {step0:.1f} s", flush=True)
            seen = len(_recompile_reasons())
            step1 = first_call(lambda: hooked_c(**inputs))  # must reuse the step-0 graph
            new_graphs, breaks = graphs() - before, dict(counters["graph_break"])
            print(
                f"compile: with recording hooks, step 1 {step1:.1f} s; {new_graphs} graph(s) for 2 steps; "
                f"graph breaks: {sum(breaks.values())}",
                flush=True,
            )
            for reason, count in list(breaks.items())[:5]:
                print(f"  graph break x{count}: {reason[:300]}")
            cases = {
                "plain diffusers (eager)": lambda: transformer(**inputs),
                "compiled: plain diffusers": lambda: plain_c(**inputs),
            }
            if new_graphs > 1:
                limit = getattr(dynamo.config, "recompile_limit", getattr(dynamo.config, "cache_size_limit", "?"))
                print(
                    f"compile: RECOMPILES at every step ({new_graphs} graphs for 2 steps): a 28-step run compiles "
                    f"{limit} times, then dynamo runs the transformer eagerly for the rest. Not timed further."
                )
                for reason in _recompile_reasons()[seen:][:3]:
                    print(f"  guard failure at step 1: {reason.split('User stack')[0].strip()[:500]}")
            else:
                cases["compiled: ditlens record (hooks before compile)"] = lambda: hooked_c(**inputs)
            timings = common.time_interleaved(cases, device, repeats, warmup)
        finally:
            context.__exit__(None, None, None)
    stats = context_run.stats
    print(f"check: the compiled hooked run recorded {stats.num_steps} steps x {len(stats.sites)} sites")
    print()
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
    hooked = timings.get("compiled: ditlens record (hooks before compile)")
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
