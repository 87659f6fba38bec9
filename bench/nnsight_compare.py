"""The same recording with ditlens, nnsight and naive forward hooks, next to plain diffusers.

    .venv/bin/python bench/nnsight_compare.py [--quick]               # built-in model, CPU
    python3 bench/nnsight_compare.py --model flux-full                # FLUX.1 size, CUDA

The recording: |mean over tokens|, mean |x| and max |x| per channel of every block's image
output, at every step (one step = one transformer forward here). Each method hands back the
same (3 statistics, sites, rows, D) numbers, checked equal before timing:

- ditlens: `ditlens.hooks(transformer, record=RecordConfig(streams=("img",)))`, `run.stats`;
- nnsight: `NNsight(transformer).trace(...)`, the statistics computed on `block.output[1]`
  inside the trace and saved (nnsight's documented way); nnsight wraps a separate copy of
  the transformer, since it replaces every module's `forward` for good;
- naive hooks: `register_forward_hook` on each block keeping the full image output (on the
  model's device), the statistics computed from that cache after the forward.

nnsight is optional: `.venv/bin/pip install nnsight` (it needs transformers >= 5, already a
ditlens dependency); without it the script says so and compares the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import common
import models
import torch
from recording_overhead import load_model

import ditlens
from ditlens import RecordConfig
from ditlens.core.channels import STATISTICS, channel_statistic


def block_lists(transformer: torch.nn.Module) -> list[str]:
    return list(ditlens.adapter_for(transformer).block_lists)


def via_ditlens(transformer: torch.nn.Module, inputs: dict) -> Callable[[], torch.Tensor]:
    config = RecordConfig(streams=("img",))

    def run() -> torch.Tensor:
        with ditlens.hooks(transformer, record=config) as r:
            transformer(**inputs)
        stats = r.stats
        return torch.stack([stats.img[s][0] for s in STATISTICS])  # (3, sites, rows, D)

    return run


def via_naive_hooks(transformer: torch.nn.Module, inputs: dict) -> Callable[[], torch.Tensor]:
    blocks = [b for name in block_lists(transformer) for b in getattr(transformer, name)]

    def run() -> torch.Tensor:
        cache: list[torch.Tensor] = []
        handles = [b.register_forward_hook(lambda m, a, out: cache.append(out[1].detach())) for b in blocks]
        try:
            transformer(**inputs)
        finally:
            for h in handles:
                h.remove()
        return torch.stack([torch.stack([channel_statistic(x, s) for x in cache]) for s in STATISTICS]).cpu()

    return run


def wrap_nnsight(transformer: torch.nn.Module) -> Any:
    """nnsight's wrapper around a copy of the transformer, or a string saying why not."""
    try:
        import nnsight
    except ImportError as error:
        return f"nnsight is not installed ({error}); install it with: .venv/bin/pip install nnsight"
    return nnsight.NNsight(copy.deepcopy(transformer))


def via_nnsight(model: Any, names: list[str], inputs: dict) -> Callable[[], torch.Tensor] | str:
    """A callable, or why nnsight cannot run here."""
    import nnsight

    def run() -> torch.Tensor:
        with model.trace(**inputs):
            saved = nnsight.save([])
            for name in names:
                for block in getattr(model, name):
                    img = block.output[1]
                    saved.append(
                        torch.stack(
                            [
                                img.mean(dim=1, dtype=torch.float32).abs(),
                                img.abs().mean(dim=1, dtype=torch.float32),
                                img.abs().amax(dim=1).float(),
                            ]
                        )
                    )
        return torch.stack(list(saved), dim=1).cpu()  # (3, sites, rows, D)

    try:
        run()
    except Exception as error:  # report exactly why, then compare the rest
        return f"nnsight {nnsight.__version__} failed on this model: {type(error).__name__}: {error}"
    return run


PLAIN, DITLENS, NAIVE = (
    "plain diffusers (no recording)",
    "ditlens hooks (record=RecordConfig(streams=('img',)))",
    "naive forward hooks keeping hidden states",
)


def make_cases(
    transformer: torch.nn.Module, nn_model: Any, inputs: dict, notes: list[str]
) -> dict[str, Callable[[], Any]]:
    cases: dict[str, Callable[[], Any]] = {
        PLAIN: lambda: transformer(**inputs),
        DITLENS: via_ditlens(transformer, inputs),
        NAIVE: via_naive_hooks(transformer, inputs),
    }
    nn = nn_model if isinstance(nn_model, str) else via_nnsight(nn_model, block_lists(transformer), inputs)
    if isinstance(nn, str):
        if nn not in notes:
            notes.append(nn)
    else:
        import nnsight

        cases[f"nnsight {nnsight.__version__} trace, statistics saved"] = nn
    return cases


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--model", choices=["builtin", "flux-full"], default="builtin")
    parser.add_argument(
        "--images", type=int, default=None, help="built-in model: images per CFG step (default 8, --quick 2)"
    )
    args = parser.parse_args()
    device = common.pick_device(args.device)
    thread_notes = common.apply_threads(args.threads, device)
    on_gpu = device.type == "cuda"
    repeats, warmup = common.rounds(args, quick=5 if on_gpu else 3, full=20 if on_gpu else 7, warmup=3 if on_gpu else 1)
    images = args.images or (2 if args.quick else 8)
    torch.manual_seed(args.seed)

    transformer, inputs, notes = load_model(args.model, device, args.seed, images)
    notes += thread_notes + [f"{repeats} timed rounds after {warmup} warm-up round(s); medians"]

    with torch.no_grad():  # nnsight traces under no_grad, not inference_mode: the same for all
        nn_model = wrap_nnsight(transformer)
        cases = make_cases(transformer, nn_model, inputs, notes)
        # fixed cost per forward: the same recording on a 1-row, 16 + 8 token input
        small = models.flux_inputs(transformer, models.FluxShape(batch=1, grid=4, n_txt=8), args.seed)
        small_cases = make_cases(transformer, nn_model, small, notes)
        common.print_header(f"the same recording: ditlens vs nnsight vs naive hooks ({args.model})", device, notes)
        check_same_statistics(cases)
        timings = common.time_interleaved(cases, device, repeats, warmup)
        small_timings = common.time_interleaved(small_cases, device, 15 * repeats, warmup + 2)  # short calls
        peaks = {name: common.peak_memory(fn, device) for name, fn in cases.items()}

    print(f"## One step at the benchmark size: {notes[1] if len(notes) > 1 else ''}")
    print_step_table(timings, peaks)
    print("## Fixed cost per forward: the same recording on a 1-row input of 16 image + 8 text tokens")
    print_fixed_cost_table(small_timings)
    print_verdicts(timings, small_timings, peaks)
    common.print_footer()


def check_same_statistics(cases: dict[str, Callable[[], Any]]) -> None:
    """Every method's statistics next to ditlens' (the first two cases are plain and ditlens)."""
    reference = cases[DITLENS]()
    for name, fn in list(cases.items())[2:]:
        got = fn()
        diff = (got.float() - reference.float()).abs().max().item()
        scale = reference.float().abs().max().item()
        print(f"check: {name} matches ditlens' statistics: max |difference| {diff:.3g} (values up to {scale:.3g})")
    print()


def print_step_table(timings: dict[str, common.Timing], peaks: dict[str, int | None]) -> None:
    plain, ours = timings[PLAIN], timings[DITLENS]
    rows = [
        [
            name,
            t.median * 1e3,
            t.spread * 1e3,
            common.paired_ratio(t, plain),
            common.paired_ratio(t, ours),
            common.ratio_error(t, ours),
            common.paired_ratio(t, ours, cpu=True),
            common.min_ratio(t, ours),
            common.megabytes(peaks[name]),
        ]
        for name, t in timings.items()
    ]
    headers = ["method", "median ms/step", "+/- ms", "x plain", "x ditlens", "+/- s.e."]
    common.print_table([*headers, "x ditlens CPU time", "x ditlens minima", "peak MB"], rows)
    print("x plain, x ditlens: paired ratios, the median over rounds of the within-round ratio; +/- s.e.: the")
    print("standard error of 'x ditlens'; minima: fastest sample over ditlens' fastest sample")
    print("peak: tensor bytes allocated above weights and inputs during one step")
    print()


def print_fixed_cost_table(small_timings: dict[str, common.Timing]) -> None:
    plain_small = small_timings[PLAIN]
    rows = [
        [
            n,
            t.median * 1e3,
            t.spread * 1e3,
            (common.paired_ratio(t, plain_small) - 1) * plain_small.median * 1e3,
            common.paired_ratio(t, plain_small),
            common.ratio_error(t, plain_small),
        ]
        for n, t in small_timings.items()
    ]
    common.print_table(["method", "median ms/call", "+/- ms", "ms above plain", "x plain", "+/- s.e."], rows)


def print_verdicts(
    timings: dict[str, common.Timing], small_timings: dict[str, common.Timing], peaks: dict[str, int | None]
) -> None:
    for name in timings:
        if name.startswith("nnsight"):
            ratio = common.paired_ratio(timings[name], timings[DITLENS])
            error = common.ratio_error(timings[name], timings[DITLENS])
            resolved = abs(ratio - 1) >= 2 * error
            word = ("faster" if ratio > 1 else "NOT faster") if resolved else "not resolved (within 2 s.e. of 1)"
            print(f"RESULT nnsight / ditlens for the same recording: x{ratio:.3f} +/- {error:.3f} -> ditlens is {word}")
    plain_ms = small_timings[PLAIN].median * 1e3
    for name in small_timings:
        if name.startswith("nnsight"):
            extra = {
                n: (common.paired_ratio(small_timings[n], small_timings[PLAIN]) - 1) * plain_ms for n in (name, DITLENS)
            }
            error = {n: common.ratio_error(small_timings[n], small_timings[PLAIN]) * plain_ms for n in (name, DITLENS)}
            print(
                f"RESULT fixed cost per forward: nnsight {extra[name]:.2f} +/- {error[name]:.2f} ms, "
                f"ditlens {extra[DITLENS]:.2f} +/- {error[DITLENS]:.2f} ms"
            )
    naive = common.paired_ratio(timings[NAIVE], timings[DITLENS])
    memory = common.memory_ratio(peaks[NAIVE], peaks[DITLENS])
    memory = f"x{memory:.2f}" if isinstance(memory, float) else memory
    print(f"RESULT naive hooks / ditlens: x{naive:.3f} time, {memory} peak memory")


if __name__ == "__main__":
    main()
