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
other way from what the size rule (`ditlens.core.intervene.GRAPH_MAX_BYTES`) picks: off where it
graphs, forced where it does not.

--pipeline builtin (default): the built-in pipeline (shipped weights, else its architecture
with random weights), prompts through its own text encoder. tiny-flux: the tiny random
FluxPipeline of tests/pipelines.py with precomputed embeddings (`prompt_embeds=`).

Target (issue 6): a transported image costs at most 1.1x a plain batch-2 generation.
"""

from __future__ import annotations

from typing import Any

import common
import torch
from common import MB

from ditlens import intervene
from ditlens.builtin.examples import EXAMPLE_TRANSPORT_PAIRS
from ditlens.generation import GenerationSettings
from ditlens.transport import TransportConfig, transport_text

TARGET = 1.10


def load(name: str, seed: int, device: torch.device) -> tuple[Any, str, GenerationSettings, dict[str, Any] | None]:
    """(pipeline, description, size settings, prompt embeddings or None for text prompts)."""
    if name == "flux-full":
        common.require_cuda(device, "--pipeline flux-full")
        pipe, embeds = common.flux_full_pipeline(device, seed)
        note = (
            "FluxPipeline with the FLUX.1 [dev] transformer (random bf16 weights), a small random VAE, "
            "random prompt embeddings (512 T5 tokens); 1024x1024, guidance-distilled (no CFG): 2 rows per call"
        )
        return pipe, note, GenerationSettings(height=1024, width=1024, guidance_scale=3.5), embeds
    if name == "builtin":
        pipe, note = common.builtin_pipeline(seed)
        return pipe, note, GenerationSettings(), None
    from tests.pipelines import TXT_DIM, tiny_flux_pipeline

    pipe = tiny_flux_pipeline(seed)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(100 + seed)
    embeds = {
        "prompt_embeds": torch.randn(2, 8, TXT_DIM, generator=gen),
        "pooled_prompt_embeds": torch.randn(2, TXT_DIM, generator=gen),
    }
    note = "tiny random FluxPipeline of tests/pipelines.py (2 + 2 blocks, hidden 32), 32x32, precomputed embeddings"
    return pipe, note, GenerationSettings(height=32, width=32), embeds


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--pipeline", choices=["builtin", "tiny-flux", "flux-full"], default="builtin")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 12, --quick or flux-full 4)")
    parser.add_argument(
        "--k",
        type=int,
        default=TransportConfig.k,
        help=f"channels moved per site and step (default {TransportConfig.k}: TransportConfig's)",
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args()
    device = common.pick_device(args.device)
    thread_notes = common.apply_threads(args.threads, device)
    steps = args.steps or (4 if args.quick or args.pipeline == "flux-full" else 12)
    repeats = args.repeats or (2 if args.quick else 4)
    warmup = 1 if args.warmup is None else args.warmup

    pipe, note, size, embeds = load(args.pipeline, args.seed, device)
    pipe.to(device)
    settings = GenerationSettings(
        num_inference_steps=steps, height=size.height, width=size.width, guidance_scale=size.guidance_scale
    )
    source, target = EXAMPLE_TRANSPORT_PAIRS[0]
    common.print_header(
        f"transport cost ({args.pipeline})",
        device,
        [
            note,
            f"{steps} steps, source {source!r}, target {target!r}",
            *thread_notes,
            f"{repeats} timed rounds after {warmup} warm-up round(s); medians",
        ],
    )

    def plain() -> None:
        prompts = prompt_args_for(embeds, source, target)
        generators = [torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(args.seed + 1)]
        pipe(**prompts, generator=generators, output_type="pt", **settings.kwargs())

    def transported(mask: str, streams: str = "img", graph_max_bytes: int | None = None) -> Any:
        """graph_max_bytes: override intervene.GRAPH_MAX_BYTES (0: never a CUDA graph of the edit)."""
        config = TransportConfig(k=args.k, mask=mask, streams=streams, generation=settings)

        def run() -> None:
            default = intervene.GRAPH_MAX_BYTES
            intervene.GRAPH_MAX_BYTES = default if graph_max_bytes is None else graph_max_bytes
            try:
                transport_text(
                    pipe,
                    source,
                    target,
                    config,
                    alphas=[1.0],
                    source_seed=args.seed,
                    target_seed=args.seed + 1,
                    include_target=False,
                    prompt_embeds=embeds,
                )
            finally:
                intervene.GRAPH_MAX_BYTES = default

        return run

    # the default mask (all tokens since the bench's measured choice), and the paper's source
    # mask: the worst case, one K = 2 clustering per site and step
    # the defaults (the bench's measured choice: the source's K=2 masks, both streams), the
    # paper's image-stream edit under the same masks (one K = 2 clustering per site and step),
    # and the cheapest edit: the image stream on every token (no mask at all)
    default = (
        f"ditlens transport_text (mask='{TransportConfig.mask}', streams='{TransportConfig.streams}': the defaults)"
    )
    worst = "ditlens transport_text (mask='source': K=2 masks, streams='img')"
    cheapest = "ditlens transport_text (mask='all', streams='img': no mask)"
    cases = {
        "plain diffusers, batch 2": plain,
        default: transported(TransportConfig.mask, TransportConfig.streams),
        worst: transported("source"),
        cheapest: transported("all"),
    }
    if device.type == "cuda":  # the edit's CUDA graph against none, where the size rule would pick one (or not)
        graphed = edit_is_graphed(pipe, prompt_args_for(embeds, source, target), settings)
        for mask in ("source", "all"):
            if graphed:
                cases[f"ditlens transport_text (mask='{mask}', edit graph off: eager kernels)"] = transported(
                    mask, "img", 0
                )
            else:
                cases[f"ditlens transport_text (mask='{mask}', edit graph forced)"] = transported(mask, "img", 2**62)
    with torch.inference_mode():
        timings = common.time_interleaved(cases, device, repeats, warmup)
        peaks = {name: common.peak_memory(fn, device) for name, fn in cases.items()}

    held = graph_memory(device)
    with torch.inference_mode():
        prompt_args = prompt_args_for(embeds, source, target)
        parts = edit_parts(pipe, prompt_args, settings, args.k, device, max(3 * repeats, 10))
    base = timings["plain diffusers, batch 2"]
    rows = [
        [
            n,
            t.median,
            t.spread,
            common.paired_ratio(t, base),
            common.ratio_error(t, base),
            common.paired_ratio(t, base, cpu=True),
            common.min_ratio(t, base),
            common.megabytes(peaks[n]),
            common.memory_ratio(peaks[n], peaks["plain diffusers, batch 2"]),
        ]
        for n, t in timings.items()
    ]
    common.print_table(
        [
            "generation",
            "median s",
            "+/- s",
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
    if held is not None:
        plain_peak = peaks["plain diffusers, batch 2"]
        print(
            f"held between calls by the shared captured edits (not in peak, which starts from them): "
            f"{held / MB:.3f} MB = x{held / plain_peak:.3f} of the plain peak (freed by ditlens.core.intervene.release_graphs())"
        )
    print()
    steps_sites = steps * len(parts["sites"])
    print(
        f"## The edit alone, per site and step, on a captured {parts['shape']} block output (x {steps_sites} per generation)"
    )
    rows = [
        [n, t.median * 1e3, t.spread * 1e3, 100 * t.median * steps_sites / base.median]
        for n, t in parts["timings"].items()
    ]
    common.print_table(["work", "ms per site-step", "+/- ms", "% of a plain generation"], rows)
    for label, name in (
        (f"defaults: mask {TransportConfig.mask!r}, streams {TransportConfig.streams!r}", default),
        ("mask 'source', image stream", worst),
        ("every token, image stream", cheapest),
    ):
        ratio, error = common.paired_ratio(timings[name], base), common.ratio_error(timings[name], base)
        verdict = common.verdict(ratio, TARGET, error)
        print(f"RESULT transport ({label}) vs plain batch 2: x{ratio:.3f} +/- {error:.3f} -> {verdict}")
        memory = common.memory_ratio(peaks[name], peaks["plain diffusers, batch 2"])
        print(
            f"RESULT transport ({label}) peak memory vs plain batch 2: {f'x{memory:.3f}' if isinstance(memory, float) else memory}"
        )
    common.print_footer()


def graph_memory(device: torch.device) -> int | None:
    """Bytes the shared captured edits keep allocated between calls (None off CUDA)."""
    if device.type != "cuda":
        return None
    import gc

    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    intervene.release_graphs()
    gc.collect()
    torch.cuda.synchronize(device)
    return before - torch.cuda.memory_allocated(device)


def prompt_args_for(embeds: dict[str, Any] | None, source: str, target: str) -> dict[str, Any]:
    return embeds if embeds is not None else {"prompt": [source, target]}


def edit_is_graphed(pipe: Any, prompt_args: dict, settings: GenerationSettings) -> bool:
    """Whether the size rule (intervene.GRAPH_MAX_BYTES) graphs the edit on this pipeline's block outputs."""
    import ditlens

    captured: list[torch.Tensor] = []
    with torch.inference_mode(), ditlens.hooks(pipe, observers=[lambda img, txt, ctx: captured.append(img)]):
        pipe(**prompt_args, output_type="pt", **(settings.kwargs() | {"num_inference_steps": 1}))
    img = captured[0]
    return img.numel() * img.element_size() <= intervene.GRAPH_MAX_BYTES


def edit_parts(
    pipe: Any, prompt_args: dict, settings: GenerationSettings, k: int, device: torch.device, repeats: int
) -> dict:
    """Time transport's per-site work alone on a block output captured from one call on the
    two prompts (with CFG: rows [uncond source, uncond target, cond source, cond target])."""
    import ditlens
    from ditlens.core.intervene import ReplaceFromRows
    from ditlens.transport import SpatialMask

    captured: list[torch.Tensor] = []
    with ditlens.hooks(pipe, observers=[lambda img, txt, ctx: captured.append(img)]):
        pipe(**prompt_args, output_type="pt", **(settings.kwargs() | {"num_inference_steps": 1}))
    img, source_of = captured[0], {1: 0}  # prompt 1 (target) takes from prompt 0 (source)
    ctx = ditlens.HookContext("transformer_blocks.0", 0, 0, img.shape[0])
    cases = {}
    for mask in ("source", "all"):
        spatial = SpatialMask(mask, k, "abs_mean", 2, source_of)
        tokens = None if mask == "all" else spatial  # as ditlens.transport builds it
        edit = ReplaceFromRows(source_of=source_of, group_size=2, channels=ditlens.TopK(k), tokens=tokens)
        if mask == "source":
            cases["spatial mask alone (TopK + foreground_tokens, all rows)"] = lambda s=spatial: s(img, ctx)
        cases[f"whole edit, mask='{mask}' (selection, mask, gather, lerp)"] = lambda e=edit: e(img, ctx)
        if edit._graphable(img):
            cases[f"whole edit, mask='{mask}', eager kernels (no CUDA graph)"] = lambda e=edit: e._edit(img, ctx)
    sites = ditlens.adapter_for(pipe).sites()
    return {
        "sites": sites,
        "shape": tuple(img.shape),
        "timings": common.time_interleaved(cases, device, repeats, warmup=2),
    }


if __name__ == "__main__":
    main()
