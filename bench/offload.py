"""Recording under diffusers' CPU offload: the same statistics, and the overhead next to a
plain offloaded generation, at FLUX.1 size on the GPU.

    python3 bench/offload.py                  # CUDA; needs accelerate (diffusers' offload uses it)

The pipeline is `models.flux_full_pipeline` (FLUX.1 transformer with random bf16 weights,
small VAE, precomputed embeddings), one 1024x1024 image, 2 steps. Two offload modes, each
timed as plain diffusers vs the same call inside `ditlens.hooks(pipe, record=True)`:

- model: `pipe.enable_model_cpu_offload()` (accelerate hooks move the whole transformer to
  the GPU when it is called, and back when the next model runs);
- group: `transformer.enable_group_offload(block_level, 1 block per group, use_stream)`
  (diffusers' own hooks move each block just before it runs).

ditlens' hooks are plain PyTorch hooks on the same modules; the check compares the recorded
statistics with a run without offload.
"""

from __future__ import annotations

import common
import models
import torch

import ditlens
from ditlens.core.record import ChannelStats

TARGET = 1.03  # issue 6's GPU target for recording, offloaded or not


def main() -> None:
    parser = common.base_parser(__doc__, device=False)
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per generation (default 2)")
    parser.add_argument(
        "--modes", nargs="+", choices=["model", "group"], default=["model", "group"], help="offload modes to run"
    )
    args = parser.parse_args()
    device = common.pick_device("cuda")
    models.require_cuda(device, "bench/offload.py")
    # each offloaded call moves the 24 GB transformer over PCIe: few rounds; the check's call warms up
    repeats, warmup = args.repeats or 2, 0 if args.warmup is None else args.warmup
    pipe, embeds = models.flux_full_pipeline(device, args.seed)
    one = {name: value[:1] for name, value in embeds.items()}
    kwargs = dict(height=1024, width=1024, num_inference_steps=args.steps, guidance_scale=3.5, output_type="pt")
    common.print_header(
        "recording under CPU offload (flux-full pipeline)",
        device,
        [
            "FluxPipeline with the FLUX.1 [dev] transformer (random bf16 weights), a small random VAE, "
            "precomputed embeddings",
            f"1 image, 1024x1024, {args.steps} steps; {repeats} timed rounds after {warmup} warm-up round(s); medians",
        ],
    )

    def generate() -> None:
        pipe(**one, generator=torch.Generator().manual_seed(args.seed), **kwargs)

    def recorded() -> ChannelStats:
        with ditlens.hooks(pipe, record=True) as run:
            generate()
        return run.stats

    with torch.inference_mode():
        reference = recorded()  # everything on the GPU, no offload
        for mode in args.modes:
            if mode == "model":
                pipe.enable_model_cpu_offload(device=device)
            else:
                if "model" in args.modes:
                    pipe.remove_all_hooks()
                    pipe.to(device)
                torch.cuda.empty_cache()
                pipe.transformer.enable_group_offload(
                    onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=True
                )
            stats = recorded()
            worst = max((stats.img[s] - reference.img[s]).abs().max().item() for s in reference.img)
            scale = max(reference.img[s].abs().max().item() for s in reference.img)
            print(f"## {mode} offload")
            print(
                f"check: statistics with {mode} offload vs without: max |difference| {worst:.3g} "
                f"(values up to {scale:.3g}); {stats.num_steps} steps x {len(stats.sites)} sites"
            )
            cases = {"plain diffusers (offloaded)": generate, "ditlens record (offloaded)": recorded}
            timings = common.time_interleaved(cases, device, repeats, warmup)
            base = timings["plain diffusers (offloaded)"]
            rows = [
                [n, t.median, t.spread, common.paired_ratio(t, base), common.ratio_error(t, base)]
                for n, t in timings.items()
            ]
            common.print_table(["generation", "median s", "+/- s", "paired ratio", "+/- s.e."], rows)
            case = timings["ditlens record (offloaded)"]
            ratio, error = common.paired_ratio(case, base), common.ratio_error(case, base)
            print(
                f"RESULT recording under {mode} CPU offload: x{ratio:.3f} +/- {error:.3f} per generation -> "
                f"{common.verdict(ratio, TARGET, error)}"
            )
            print()
    common.print_footer()


if __name__ == "__main__":
    main()
