"""Transport cost: one transported generation next to a plain batch-2 generation.

    .venv/bin/python bench/transport_cost.py [--quick] [--pipeline builtin|tiny-flux]

`ditlens.transport.transport_text(..., include_target=False)` with one alpha runs ONE batch
of two prompts (source, transported target), with its edit at every site and step: the
defaults (TransportConfig's: top-k channels under the source's K = 2 mask, image and text
streams), the image stream alone under that mask (the paper's edit), and the image stream
on every token (no mask: the cheapest); a verdict for each.
The baseline is the same pipeline called on the same two prompts, same seeds and steps,
without ditlens. With the built-in pipeline's classifier-free guidance, both are 4 rows per
transformer call. On a GPU two more rows time the edit with its CUDA graph switched the
other way from what the size rule (`PerformanceConfig.graph_max_bytes`, ditlens.core.performance)
picks: off where it graphs, forced where it does not.

--pipeline builtin (default): the built-in pipeline (shipped weights, else its architecture
with random weights), prompts through its own text encoder. tiny-flux: the tiny random
FluxPipeline of tests/pipelines.py with precomputed embeddings (`prompt_embeds=`).

Target (issue 6): a transported image costs at most 1.1x a plain batch-2 generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import common
import models
import torch
from common import MB

from ditlens.adapters import adapter_for
from ditlens.builtin.examples import EXAMPLE_TRANSPORT_PAIRS
from ditlens.core.cuda_graphs import EditGraphs, release_graphs
from ditlens.core.performance import DEFAULT_PERFORMANCE, PerformanceConfig
from ditlens.generation import GenerationSettings
from ditlens.transport import TransportConfig

TARGET = 1.10
PLAIN = "plain diffusers, batch 2"
DEFAULT = f"ditlens transport_text (mask='{TransportConfig.mask}', streams='{TransportConfig.streams}': the defaults)"
WORST = "ditlens transport_text (mask='source': K=2 masks, streams='img')"  # one K = 2 clustering per site and step
CHEAPEST = "ditlens transport_text (mask='all', streams='img': no mask)"
VERDICTS = {  # the label of each RESULT line -> its case
    f"defaults: mask {TransportConfig.mask!r}, streams {TransportConfig.streams!r}": DEFAULT,
    "mask 'source', image stream": WORST,
    "every token, image stream": CHEAPEST,
}


@dataclass
class Setup:
    """What every case generates with: the pipeline, its prompts (or embeddings) and settings."""

    pipe: Any
    settings: GenerationSettings
    seed: int
    k: int
    embeds: dict[str, Any] | None  # prompt embeddings, or None for text prompts
    prompts: tuple[str, str] = EXAMPLE_TRANSPORT_PAIRS[0]

    def prompt_args(self) -> dict[str, Any]:
        return self.embeds if self.embeds is not None else {"prompt": list(self.prompts)}

    def plain(self) -> None:
        generators = [torch.Generator().manual_seed(self.seed), torch.Generator().manual_seed(self.seed + 1)]
        self.pipe(**self.prompt_args(), generator=generators, output_type="pt", **self.settings.kwargs())

    def transported(self, mask: str, streams: str = "img", performance: PerformanceConfig | None = None) -> Any:
        config = TransportConfig(k=self.k, mask=mask, streams=streams, generation=self.settings)
        return lambda: common.transport_pair(self.pipe, config, self.prompts, self.seed, self.embeds, performance)


def load(name: str, seed: int, device: torch.device) -> tuple[Any, str, GenerationSettings, dict[str, Any] | None]:
    """(pipeline, description, size settings, prompt embeddings or None for text prompts)."""
    if name == "flux-full":
        models.require_cuda(device, "--pipeline flux-full")
        pipe, embeds = models.flux_full_pipeline(device, seed)
        note = (
            "FluxPipeline with the FLUX.1 [dev] transformer (random bf16 weights), a small random VAE, "
            "random prompt embeddings (512 T5 tokens); 1024x1024, guidance-distilled (no CFG): 2 rows per call"
        )
        return pipe, note, GenerationSettings(height=1024, width=1024, guidance_scale=3.5), embeds
    if name == "builtin":
        pipe, note = models.builtin_pipeline(seed)
        return pipe, note, GenerationSettings(), None
    pipe, embeds = models.tiny_flux_pipeline(seed)
    note = "tiny random FluxPipeline of tests/pipelines.py (2 + 2 blocks, hidden 32), 32x32, precomputed embeddings"
    return pipe, note, GenerationSettings(height=32, width=32), embeds


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--pipeline", choices=["builtin", "tiny-flux", "flux-full"], default="builtin")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 12, --quick or flux-full 4)")
    k_help = f"channels moved per site and step (default: TransportConfig's {TransportConfig.k}, or the hidden size "
    parser.add_argument("--k", type=int, default=None, help=k_help + "where that is smaller)")
    args = parser.parse_args()
    device = common.pick_device(args.device)
    thread_notes = common.apply_threads(args.threads, device)
    steps = args.steps or (4 if args.quick or args.pipeline == "flux-full" else 12)
    repeats, warmup = common.rounds(args, quick=2, full=4, warmup=1)

    pipe, note, size, embeds = load(args.pipeline, args.seed, device)
    pipe.to(device)
    settings = GenerationSettings(
        num_inference_steps=steps, height=size.height, width=size.width, guidance_scale=size.guidance_scale
    )
    k = args.k or min(TransportConfig.k, adapter_for(pipe).hidden_size)  # tiny-flux is 32 wide
    setup = Setup(pipe, settings, args.seed, k, embeds)
    source, target = setup.prompts
    common.print_header(
        f"transport cost ({args.pipeline})",
        device,
        [
            note,
            f"{steps} steps, k = {k}, source {source!r}, target {target!r}",
            *thread_notes,
            f"{repeats} timed rounds after {warmup} warm-up round(s); medians",
        ],
    )
    cases = make_cases(setup, device)
    with torch.inference_mode():
        timings = common.time_interleaved(cases, device, repeats, warmup)
        peaks = {name: common.peak_memory(fn, device) for name, fn in cases.items()}
    held = graph_memory(device)
    with torch.inference_mode():
        parts = edit_parts(setup, device, max(3 * repeats, 10))

    common.print_ratio_table(("generation", "median s", "+/- s"), 1.0, timings, PLAIN, peaks)
    if held is not None:
        print(
            f"held between calls by the captured CUDA graphs (not in peak, which starts from them): "
            f"{held / MB:.3f} MB = x{held / peaks[PLAIN]:.3f} of the plain peak "
            "(freed by ditlens.core.cuda_graphs.release_graphs())"
        )
    print()
    print_edit_parts(parts, steps, timings[PLAIN])
    print_verdicts(timings, peaks)
    common.print_footer()


def make_cases(setup: Setup, device: torch.device) -> dict[str, Any]:
    """The plain generation, the three transports, and on a GPU the edit's CUDA graph switched
    the other way from the size rule's pick: off where it graphs, forced where it does not."""
    cases = {
        PLAIN: setup.plain,
        DEFAULT: setup.transported(TransportConfig.mask, TransportConfig.streams),
        WORST: setup.transported("source"),
        CHEAPEST: setup.transported("all"),
    }
    if device.type == "cuda":
        graphed = edit_is_graphed(setup)
        for mask in ("source", "all"):
            if graphed:
                label = f"ditlens transport_text (mask='{mask}', edit graph off: eager kernels)"
                cases[label] = setup.transported(mask, "img", PerformanceConfig(graph_max_bytes=0))
            else:
                label = f"ditlens transport_text (mask='{mask}', edit graph forced)"
                cases[label] = setup.transported(mask, "img", PerformanceConfig(graph_max_bytes=2**62))
    return cases


def print_edit_parts(parts: dict, steps: int, plain: common.Timing) -> None:
    steps_sites = steps * len(parts["sites"])
    shape = parts["shape"]
    print(f"## The edit alone, per site and step, on a captured {shape} block output (x {steps_sites} per generation)")
    rows = [
        [n, t.median * 1e3, t.spread * 1e3, 100 * t.median * steps_sites / plain.median]
        for n, t in parts["timings"].items()
    ]
    common.print_table(["work", "ms per site-step", "+/- ms", "% of a plain generation"], rows)


def print_verdicts(timings: dict[str, common.Timing], peaks: dict[str, int | None]) -> None:
    base = timings[PLAIN]
    for label, name in VERDICTS.items():
        ratio, error = common.paired_ratio(timings[name], base), common.ratio_error(timings[name], base)
        verdict = common.verdict(ratio, TARGET, error)
        print(f"RESULT transport ({label}) vs plain batch 2: x{ratio:.3f} +/- {error:.3f} -> {verdict}")
        memory = common.memory_ratio(peaks[name], peaks[PLAIN])
        memory = f"x{memory:.3f}" if isinstance(memory, float) else memory
        print(f"RESULT transport ({label}) peak memory vs plain batch 2: {memory}")


def graph_memory(device: torch.device) -> int | None:
    """Bytes the captured CUDA graphs keep allocated between calls (None off CUDA)."""
    if device.type != "cuda":
        return None
    import gc

    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    release_graphs()
    gc.collect()
    torch.cuda.synchronize(device)
    return before - torch.cuda.memory_allocated(device)


def first_block_output(setup: Setup) -> torch.Tensor:
    """The image stream of the first site in a one-step generation on the two prompts (with
    CFG: rows [uncond source, uncond target, cond source, cond target])."""
    import ditlens

    captured: list[torch.Tensor] = []
    with torch.inference_mode(), ditlens.hooks(setup.pipe, observers=[lambda img, txt, ctx: captured.append(img)]):
        setup.pipe(**setup.prompt_args(), output_type="pt", **(setup.settings.kwargs() | {"num_inference_steps": 1}))
    return captured[0]


def edit_is_graphed(setup: Setup) -> bool:
    """Whether the size rule (PerformanceConfig.graph_max_bytes) graphs the edit on this pipeline's block outputs."""
    img = first_block_output(setup)
    return img.numel() * img.element_size() <= DEFAULT_PERFORMANCE.graph_max_bytes


def edit_parts(setup: Setup, device: torch.device, repeats: int) -> dict:
    """Time transport's per-site work alone on a captured block output: the whole edit as the
    hooks apply it (from its CUDA graph where the defaults capture it), and then its eager kernels."""
    import ditlens
    from ditlens.core.intervene import ReplaceFromRows
    from ditlens.transport import SpatialMask

    img, source_of = first_block_output(setup), {1: 0}  # prompt 1 (target) takes from prompt 0 (source)
    ctx = ditlens.HookContext("transformer_blocks.0", 0, 0, img.shape[0])
    graphs = EditGraphs(DEFAULT_PERFORMANCE)
    cases = {}
    for mask in ("source", "all"):
        spatial = SpatialMask(mask, setup.k, "abs_mean", 2, source_of)
        tokens = None if mask == "all" else spatial  # as ditlens.transport builds it
        edit = ReplaceFromRows(source_of=source_of, group_size=2, channels=ditlens.TopK(setup.k), tokens=tokens)
        if mask == "source":
            cases["spatial mask alone (TopK + foreground_tokens, all rows)"] = lambda s=spatial: s(img, ctx)
        cases[f"whole edit, mask='{mask}' (selection, mask, gather, lerp)"] = lambda e=edit: graphs.apply(e, img, ctx)
        if graphs.captures(edit, img):
            cases[f"whole edit, mask='{mask}', eager kernels (no CUDA graph)"] = lambda e=edit: e(img, ctx)
    return {
        "sites": ditlens.adapter_for(setup.pipe).sites(),
        "shape": tuple(img.shape),
        "timings": common.time_interleaved(cases, device, repeats, warmup=2),
    }


if __name__ == "__main__":
    main()
