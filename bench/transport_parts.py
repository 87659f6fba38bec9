"""Where a transported generation's extra time goes, part by part, on the built-in pipeline.

    .venv/bin/python bench/transport_parts.py [--quick] [--device cuda]

Each case adds one thing to the one before, all against plain diffusers on the same two
prompts and seeds (12 steps, CFG: 4 rows per transformer call), interleaved in one run:
  - hooks at every block, nothing done there;
  - an identity edit at every block (the hook's split/merge path, no tensor work);
  - the default transport edit (TransportConfig's), ONE edit object kept over all calls:
    on a GPU its CUDA graph is captured once and then only replayed;
  - the same with the graph switched off (GPU only): eager kernels;
  - `transport_text`, the public call: a new edit each call (on a GPU it finds the graph of
    an equal earlier edit: PerformanceConfig.shared_graph_edits, ditlens.core.performance).
"""

from __future__ import annotations

from typing import Any

import common
import models
import torch

import ditlens
from ditlens.builtin.examples import EXAMPLE_TRANSPORT_PAIRS
from ditlens.core.performance import DEFAULT_PERFORMANCE, PerformanceConfig
from ditlens.generation import GenerationSettings, image_size
from ditlens.transport import TransportConfig, _edits


class IdentityEdit:
    """Applies everywhere and changes nothing: what the hooks cost when an edit runs."""

    def applies(self, ctx: Any) -> bool:
        return True

    def __call__(self, img: torch.Tensor, ctx: Any) -> torch.Tensor:
        return img


def main() -> None:
    args = common.base_parser(__doc__).parse_args()
    device = common.pick_device(args.device)
    thread_notes = common.apply_threads(args.threads, device)
    steps = 4 if args.quick else 12
    repeats, warmup = common.rounds(args, quick=2, full=8, warmup=1)

    pipe, note = models.builtin_pipeline(args.seed)
    pipe.to(device)
    settings = GenerationSettings(num_inference_steps=steps)
    config = TransportConfig(streams="img", generation=settings)  # the image stream's edit: the costly one
    source, target = EXAMPLE_TRANSPORT_PAIRS[0]
    common.print_header(
        "transport cost by part (builtin)",
        device,
        [
            note,
            f"{steps} steps, k = {config.k}, mask {config.mask!r}",
            *thread_notes,
            f"{repeats} timed rounds after {warmup} warm-up round(s); medians",
        ],
    )

    def plain() -> None:
        generators = [torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(args.seed + 1)]
        pipe(prompt=[source, target], generator=generators, output_type="pt", **settings.kwargs())

    def hooked(edits: list, performance: PerformanceConfig = DEFAULT_PERFORMANCE) -> Any:
        def run() -> None:
            with ditlens.hooks(pipe, edits=edits, performance=performance):
                plain()

        return run

    def public() -> None:
        common.transport_pair(pipe, config, (source, target), args.seed)

    held = _edits(config, [1.0], 1, 2, None, image_size(pipe, settings))[0]  # prompt 1 takes from prompt 0
    cases = {
        "plain diffusers, batch 2": plain,
        "+ hooks, nothing done": hooked([]),
        "+ an identity edit at every block": hooked([IdentityEdit()]),
        "+ the transport edit, one edit object for all calls": hooked([held]),
    }
    if device.type == "cuda":
        cases["+ the same, CUDA graph off (eager kernels)"] = hooked([held], PerformanceConfig(cuda_graphs=False))
    cases["transport_text (a new edit per call)"] = public
    with torch.inference_mode():
        timings = common.time_interleaved(cases, device, repeats, warmup)
    base = timings["plain diffusers, batch 2"]
    rows = [
        [name, t.median * 1e3, common.paired_ratio(t, base), common.ratio_error(t, base), common.min_ratio(t, base)]
        for name, t in timings.items()
    ]
    common.print_table(["generation", "median ms", "paired ratio", "+/- s.e.", "ratio of minima"], rows)
    print(common.RATIO_LEGEND)
    for name in list(cases)[1:]:
        t = timings[name]
        print(f"RESULT {name}: x{common.paired_ratio(t, base):.3f} +/- {common.ratio_error(t, base):.3f}")
    common.print_footer()


if __name__ == "__main__":
    main()
