"""Memory of the recorded statistics for a whole run at the full FLUX.1 size.

    .venv/bin/python bench/stats_memory.py [--quick] [--all-tokens]

A real `ChannelStats`, produced by ditlens' `Recorder` fed (through `Recorder.reduce` and
`Recorder.file`, as the hooks feed it) with synthetic block outputs of FLUX.1's shapes: 28 steps x 57 sites (19
double + 38 single blocks, all of which carry text), hidden 3072, batch 1, 4096 image and
512 text tokens. It is compared with a naive cache of the image hidden states:
steps x sites x 4096 tokens x 3072 channels x 2 bytes (bf16).

The statistics do not depend on the token count (that is the point of reducing on the fly),
so to keep the CPU run short only step 0 is fed at the real token counts and the other steps
at 64 + 8 tokens; the script checks that both give the same bytes per step.
`--all-tokens` feeds every step at the real size (about 2 minutes more on a 2-core CPU).

Target (issue 6): at most 100 MB for 28 steps of full-size FLUX.1.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import common
import torch

from ditlens import ChannelStats, RecordConfig
from ditlens.core.record import Recorder

STEPS, DOUBLE, SINGLE, HIDDEN, ROWS = 28, 19, 38, 3072, 1  # FLUX.1 [dev], 28 steps, one image
N_IMG, N_TXT = 4096, 512  # 1024x1024: 64 x 64 packed latent tokens; T5 at 512 tokens
SMALL = (64, 8)  # image, text tokens of the steps not fed at full size
TARGET_BYTES = 100e6
DEFAULT = "default RecordConfig (img, 3 statistics, fp32)"
SITES = [f"transformer_blocks.{i}" for i in range(DOUBLE)] + [f"single_transformer_blocks.{i}" for i in range(SINGLE)]


def record(config: RecordConfig, full_steps: set[int], seed: int) -> tuple[ChannelStats, float, int]:
    """(stats, seconds to assemble them at the end of the run, bytes the recorder held before)."""
    gen = torch.Generator().manual_seed(seed)
    full = (
        torch.randn(ROWS, N_IMG, HIDDEN, generator=gen).bfloat16(),
        torch.randn(ROWS, N_TXT, HIDDEN, generator=gen).bfloat16(),
    )
    small = (full[0][:, : SMALL[0]].contiguous(), full[1][:, : SMALL[1]].contiguous())
    recorder = Recorder(config, SITES)
    for step in range(STEPS):
        img, txt = full if step in full_steps else small
        for index in range(len(SITES)):
            recorder.reduce(index, img, txt)  # what each site's hook does
        recorder.file(step)  # what the transformer's pre-hook does before the next call
    held = sum(
        t.numel() * t.element_size()
        for call in recorder._calls
        for v in call.values
        if v is not None
        for t in v
        if t is not None
    )
    t0 = time.perf_counter()
    stats = recorder.result({"num_steps": STEPS})
    return stats, time.perf_counter() - t0, held


#: the recordings measured, the default first (it alone is fed at the real token counts)
CONFIGS = {
    DEFAULT: RecordConfig(),
    "storage_dtype=float16 (img, 3 statistics)": RecordConfig(storage_dtype=torch.float16),
    "streams=('img', 'txt') (3 statistics, fp32)": RecordConfig(streams=("img", "txt")),
    "streams=('img', 'txt'), storage_dtype=float16": RecordConfig(streams=("img", "txt"), storage_dtype=torch.float16),
    "statistics=('abs_mean',) (img, fp32)": RecordConfig(statistics=("abs_mean",)),
}
NAIVE = STEPS * len(SITES) * N_IMG * HIDDEN * 2  # bytes of a bf16 cache of the image hidden states


def main() -> None:
    parser = common.base_parser(__doc__, device=False)
    parser.add_argument("--all-tokens", action="store_true", help="feed every step at 4096 + 512 tokens")
    args = parser.parse_args()
    device = torch.device("cpu")
    thread_notes = common.apply_threads(args.threads, device)
    full_steps = set(range(STEPS)) if args.all_tokens else ({0} if not args.quick else set())
    fed = (
        "every step at 4096 image + 512 text tokens"
        if args.all_tokens
        else ("step 0 at 4096 + 512 tokens, steps 1-27" if full_steps else "all steps (--quick)")
        + f" at {SMALL[0]} + {SMALL[1]} tokens"
    )
    common.print_header(
        "recorded statistics for a whole run (full-size FLUX.1)",
        device,
        [
            f"{STEPS} steps x {len(SITES)} sites ({DOUBLE} double + {SINGLE} single) x hidden {HIDDEN}, batch {ROWS}",
            f"synthetic bf16 block outputs fed through Recorder.reduce: {fed}",
            *thread_notes,
        ],
    )
    rows, results = [], {}
    for name, config in CONFIGS.items():
        stats, assemble_s, held = record(config, full_steps if name == DEFAULT else set(), args.seed)
        results[name] = nbytes = stats.nbytes()
        over = nbytes / TARGET_BYTES
        rows.append(
            [name, nbytes / common.MB, nbytes / NAIVE, "meets" if nbytes <= TARGET_BYTES else f"MISSES (x{over:.2f})"]
        )
        if name == DEFAULT:
            default_run = (stats, assemble_s, held)
    print("## Bytes of ChannelStats (ChannelStats.nbytes) for the whole run")
    common.print_table(["recording", "MB", "ratio to naive cache", "<= 100 MB"], rows)
    sizes = f"{STEPS} x {len(SITES)} x {N_IMG} x {HIDDEN} x 2 B"
    print(f"naive cache of the image hidden states: {sizes} = {NAIVE / 1e9:.1f} GB")
    describe_default_run(*default_run)
    check_token_independence(args.seed)
    print()
    print_verdicts(results)
    common.print_footer()


def describe_default_run(stats: ChannelStats, assemble_s: float, held: int) -> None:
    shapes = {f"{stream}.{k}": tuple(v.shape) for stream in ("img", "txt") for k, v in getattr(stats, stream).items()}
    with tempfile.TemporaryDirectory() as tmp:
        file_bytes = stats.save(Path(tmp) / "stats.safetensors").stat().st_size
    print(f"default run's tables: {shapes}")
    print(f"default run: the recorder held {held / common.MB:.1f} MB of per-step parts before assembling;")
    took = f"{assemble_s * 1e3:.0f} ms"
    print(f"  assembling them (Recorder.result, once per run) took {took} and briefly holds parts + tables")
    print(f"  saved with ChannelStats.save: {file_bytes / common.MB:.1f} MB on disk")


def check_token_independence(seed: int) -> None:
    """The token count must not change the bytes: one step at the real size vs one at the small size."""
    one = {}
    for tokens in ("real", "small"):
        rec = Recorder(RecordConfig(streams=("img", "txt")), SITES[:1])
        gen = torch.Generator().manual_seed(seed)
        n_img, n_txt = (N_IMG, N_TXT) if tokens == "real" else SMALL
        img, txt = torch.randn(ROWS, n_img, HIDDEN, generator=gen), torch.randn(ROWS, n_txt, HIDDEN, generator=gen)
        rec.reduce(0, img, txt)
        rec.file(0)
        one[tokens] = rec.result({}).nbytes()
    same = one["real"] == one["small"]
    print(
        f"bytes of one site-step at 4096+512 vs {SMALL[0]}+{SMALL[1]} tokens: {one['real']} vs {one['small']} -> "
        f"{'independent of the token count' if same else 'DEPEND ON TOKENS (bug)'}"
    )


def print_verdicts(results: dict[str, int]) -> None:
    default = results[DEFAULT]
    print(
        f"RESULT default RecordConfig: {default / common.MB:.1f} MB for {STEPS} steps = {default / NAIVE:.5f} of the "
        f"naive cache ({NAIVE / default:.0f}x smaller) -> {common.verdict(default / 1e6, TARGET_BYTES / 1e6)} MB"
    )
    both = results["streams=('img', 'txt') (3 statistics, fp32)"]
    verdict = common.verdict(both / 1e6, 100)
    print(f"RESULT RecordConfig(streams=('img', 'txt')): {both / common.MB:.1f} MB -> {verdict} MB")


if __name__ == "__main__":
    main()
