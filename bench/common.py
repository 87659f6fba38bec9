"""Shared helpers of the bench scripts: timing, peak memory, the machine line and ratio
tables (the models they measure: bench/models.py).

Each script prints, from ONE run: the command, the machine (with the load average, since the
CPUs may be shared) and a table whose ratios compare ditlens to plain diffusers measured in
the same process, interleaved, so that drift and other people's jobs hit both sides alike.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/x.py` from a fresh clone: ditlens and tests/ import from the repo
    sys.path.insert(0, str(REPO))

MB = 1e6


# ---- what ran where ---------------------------------------------------------------------
def command_line() -> str:
    """The command as typed from the repo root, e.g. `.venv/bin/python bench/x.py --quick`."""
    exe = sys.executable
    try:
        rel = os.path.relpath(exe, Path.cwd())
        exe = rel if not rel.startswith("..") else exe
    except ValueError:
        pass
    script = sys.argv[0]
    try:
        script = os.path.relpath(Path(script).resolve(), Path.cwd())
    except ValueError:
        pass
    return shlex.join([exe, script, *sys.argv[1:]])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line(device: torch.device) -> str:
    import diffusers

    parts = [
        f"{platform.system()} {platform.machine()}",
        f"{_cpu_model()} x{os.cpu_count()} (torch threads {torch.get_num_threads()})",
        f"python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts.insert(0, f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})")
    return "; ".join(parts)


def print_header(title: str, device: torch.device, notes: Sequence[str] = ()) -> None:
    print(f"# {title}")
    print(f"command: {command_line()}")
    print(f"machine: {machine_line(device)}")
    print(f"load average (1, 5, 15 min) at start: {load_average()}")
    for note in notes:
        print(f"note: {note}")
    print(flush=True)


def print_footer() -> None:
    print(f"load average (1, 5, 15 min) at end: {load_average()}", flush=True)


def base_parser(description: str, device: bool = True) -> argparse.ArgumentParser:
    """The options every script takes; `device`: also --device (scripts that run on one kind only take none)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats: a smoke run within a minute on CPU")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default: per script)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs per case before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default 1 on the CPU: see the note it prints)"
    )
    if device:
        parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    return parser


def rounds(args: argparse.Namespace, quick: int, full: int, warmup: int) -> tuple[int, int]:
    """(timed rounds, warm-up rounds): as asked, else the script's own (`quick` with --quick)."""
    return args.repeats or (quick if args.quick else full), warmup if args.warmup is None else args.warmup


def pick_device(name: str | None) -> torch.device:
    """As asked, else the GPU where there is one."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---- timing -------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call. On a GPU the wall time comes from CUDA
    events (after a sync, so no earlier work is counted). The CPU time counts every thread of
    this process and no other process: on a shared CPU it is the figure that other people's
    jobs disturb least (with one torch thread; with more, OpenMP spin-waits count too)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        c0 = time.process_time()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, time.process_time() - c0
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)  # wall, one per round
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time, one per round

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds)

    @property
    def spread(self) -> float:
        """Half the inter-quartile range of the wall times: a robust +/- next to the median."""
        if len(self.seconds) < 4:
            return (max(self.seconds) - min(self.seconds)) / 2
        q = statistics.quantiles(self.seconds, n=4)
        return (q[2] - q[0]) / 2


def time_interleaved(
    cases: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Timings of each case, run in rounds: every round runs every case once, in an order
    that alternates (forwards, backwards), so drift and load hit all cases alike."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    sync(device)
    timings = {name: Timing(name) for name in cases}
    names = list(cases)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            wall, cpu = time_once(cases[name], device)
            timings[name].seconds.append(wall)
            timings[name].cpu_seconds.append(cpu)
    return timings


def round_ratios(case: Timing, base: Timing, cpu: bool = False) -> list[float]:
    """case / base within each round (`cpu`: of process CPU times instead of wall times)."""
    a, b = (case.cpu_seconds, base.cpu_seconds) if cpu else (case.seconds, base.seconds)
    return [x / y for x, y in zip(a, b)]


def paired_ratio(case: Timing, base: Timing, cpu: bool = False) -> float:
    """Median over rounds of case / base within the same round: the two samples of a round
    ran back to back, so slow drift and other jobs' load cancel better than in a ratio of
    medians."""
    return statistics.median(round_ratios(case, base, cpu))


def ratio_error(case: Timing, base: Timing, cpu: bool = False) -> float:
    """Standard error of `paired_ratio`, from the spread of the per-round ratios: the median
    of n samples strays 1.25 sigma / sqrt(n), and sigma ~ IQR / 1.35 for a normal core."""
    ratios = round_ratios(case, base, cpu)
    if len(ratios) < 4:
        return (max(ratios) - min(ratios)) / 2
    q = statistics.quantiles(ratios, n=4)
    return 1.2533 * (q[2] - q[0]) / 1.349 / len(ratios) ** 0.5


RATIO_LEGEND = (
    "paired ratio: median over rounds of case / baseline wall time within the round (cancels drift and\n"
    "  load best); +/- s.e.: its standard error, from the spread of the per-round ratios;\n"
    "CPU-time ratio: the same with this process's CPU time; ratio of minima: fastest case sample /\n"
    "  fastest baseline sample, the runs least disturbed by other jobs"
)


PEAK_LEGEND = "peak: tensor bytes allocated above what was live before the call (weights and inputs excluded)"


def min_ratio(case: Timing, base: Timing) -> float:
    """Ratio of the fastest samples: the runs least disturbed by other jobs (timeit's advice)."""
    return min(case.seconds) / min(base.seconds)


#: why the CPU scripts default to one torch thread, printed with their results
ONE_THREAD_NOTE = (
    "1 torch thread (--threads to change): on a shared 2-core CPU, 2 threads wait on each other "
    "at every op's OpenMP barrier while the other core runs someone else's job (a block forward "
    "was 12x slower at load 7), which measures the neighbours instead of the code"
)


def apply_threads(threads: int | None, device: torch.device) -> list[str]:
    """Set torch's CPU threads: as asked, else 1 on the CPU. Returns notes for the header."""
    if threads:
        torch.set_num_threads(threads)
        return []
    if device.type == "cpu":
        torch.set_num_threads(1)
        return [ONE_THREAD_NOTE]
    return []


# ---- memory -------------------------------------------------------------------------------
def peak_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Bytes of tensors allocated during the call above what was live before it, at the
    call's peak; None where this torch cannot tell.

    Both after one unmeasured call that pays one-off allocations (without it, the first case
    measured reads lower on the CPU: 18.3 MB for a built-in generation, then 24.1 MB for the
    very same call). CUDA: the caching allocator's own peak counter. CPU: torch.profiler's
    memory timeline, which follows every tensor's creation and destruction; RSS deltas are no
    use here, since glibc keeps freed chunks and reuses them without new page faults (they
    read 0 MB for a forward that allocates 70 MB)."""
    gc.collect()
    if device.type == "cuda":
        fn()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action
    except ImportError:
        return None
    fn()
    with (
        _quiet_stderr(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof,
    ):
        fn()
    before: set = set()  # tensors that were there already: their release does not count
    live = peak = 0
    for _, action, key, size in prof._memory_profile().timeline:
        if action == Action.PREEXISTING:
            before.add(key)
        elif action == Action.CREATE:
            live += size
        elif action == Action.DESTROY and key not in before:
            live -= size
        peak = max(peak, live)
    return peak


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (kineto prints two lines per profiler start and stop there,
    whatever KINETO_LOG_LEVEL says); Python exceptions still propagate afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def megabytes(nbytes: int | None) -> float | str:
    return "n/a" if nbytes is None else nbytes / MB


def memory_ratio(nbytes: int | None, base: int | None) -> float | str:
    return "n/a" if nbytes is None or not base else nbytes / base


# ---- tables -------------------------------------------------------------------------------
def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table (also valid Markdown), numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        out = []
        for i, c in enumerate(row):
            out.append(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]))
        return "| " + " | ".join(out) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    print(flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.3f}"
        return f"{value:.4f}"
    return str(value)


def print_ratio_table(
    columns: tuple[str, str, str],
    scale: float,
    timings: dict[str, Timing],
    base: str,
    peaks: dict[str, int | None],
) -> None:
    """One row per case: its median and spread (seconds x `scale`), its ratios to the case
    `base` (paired, its error, CPU time, minima) and its peak memory; then the legends.
    columns: the headers of the name, median and spread columns (e.g. "case", "median ms/step", "+/- ms")."""
    b = timings[base]
    rows = [
        [
            name,
            t.median * scale,
            t.spread * scale,
            paired_ratio(t, b),
            ratio_error(t, b),
            paired_ratio(t, b, cpu=True),
            min_ratio(t, b),
            megabytes(peaks[name]),
            memory_ratio(peaks[name], peaks[base]),
        ]
        for name, t in timings.items()
    ]
    ratios = ["paired ratio", "+/- s.e.", "CPU-time ratio", "ratio of minima", "peak MB", "peak ratio"]
    print_table([*columns, *ratios], rows)
    print(RATIO_LEGEND)
    print(PEAK_LEGEND)


def verdict(value: float, target: float, error: float = 0.0) -> str:
    """'meets' / 'MISSES' an upper bound; with a standard error, says when the two are closer
    than two of them (the measurement cannot tell)."""
    word = "meets" if value <= target else "MISSES"
    out = f"{word} target <= {target:g}"
    if error and abs(value - target) < 2 * error:
        out += f" (within 2 s.e. = {2 * error:.3f} of it: not resolved at this load)"
    return out


# ---- what the scripts time ----------------------------------------------------------------
def transport_pair(
    pipe: Any,
    config: Any,
    prompts: tuple[str, str],
    seed: int,
    embeds: dict[str, torch.Tensor] | None = None,
    performance: Any = None,
) -> None:
    """ditlens' transport as the scripts time it: `transport_text(..., alphas=[1.0],
    include_target=False)`, ONE batch [source, transported target] of seeds seed, seed + 1.
    With a `performance` config, the same batch through `ditlens.hooks(..., performance=...)`,
    since transport_text takes none: the same edits (`ditlens.transport._edits`), prompts,
    seeds and pipeline arguments, and the images read back the same way."""
    from ditlens.transport import transport_text

    source, target = prompts
    if performance is None:
        transport_text(
            pipe,
            source,
            target,
            config,
            alphas=[1.0],
            source_seed=seed,
            target_seed=seed + 1,
            include_target=False,
            prompt_embeds=embeds,
        )
        return
    import ditlens
    from ditlens.generation import image_size
    from ditlens.transport import _edits, _images

    prompt_args = embeds if embeds is not None else {"prompt": [source, target]}
    edits = _edits(config, [1.0], 1, 2, None, image_size(pipe, config.generation))
    generators = [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)]
    with ditlens.hooks(pipe, edits=edits, performance=performance):
        kwargs = config.generation.kwargs(pipe, 2, prompt_args)
        _images(pipe(**prompt_args, generator=generators, output_type="pt", **kwargs))
