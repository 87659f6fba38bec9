"""Measure the built-in model: prompt fidelity on held-out captions and CPU generation time.

    python scripts/eval_builtin.py --json builtin_eval.json

(a) Fidelity: 512 held-out single-object captions and 512 held-out two-object captions
    (`scenes.sample_batch(..., split="heldout")`: captions never seen in training) are
    generated at the given settings and read back by the shipped attribute classifier.
    Reported: single-object shape / colour / position accuracy (and size, background), and
    the share of objects fully correct (all four attributes) in two-object images.
(b) Speed: time to generate 8 images (the 4 example prompts x 2) at the pipeline's default
    settings on the CPU with torch.set_num_threads(2): median of 5 runs after one warm-up.

`--sweep 12:4,16:4,16:5` scores several (steps:guidance) settings (fidelity only for all but
the first); useful on a GPU to choose defaults.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ditlens.builtin import scenes  # noqa: E402
from ditlens.builtin.examples import EXAMPLE_PROMPTS  # noqa: E402
from ditlens.builtin.pipeline import DEFAULT_WEIGHTS, BuiltinPipeline, BuiltinPipelineOutput  # noqa: E402
from ditlens.metrics.classifier import AttributeClassifier, score_fidelity  # noqa: E402

TARGETS = {
    "single_shape": 0.90,
    "single_colour": 0.90,
    "single_position": 0.90,
    "two_full_object": 0.70,
    "cpu_seconds_8": 20.0,
}


def _defaults() -> tuple[int, float]:
    params = inspect.signature(BuiltinPipeline.__call__).parameters
    return params["num_inference_steps"].default, params["guidance_scale"].default


def fidelity(
    pipe: BuiltinPipeline,
    classifier: AttributeClassifier,
    n: int,
    seed: int,
    steps: int,
    guidance: float,
    batch_size: int,
) -> dict:
    out = {}
    for n_objects, name in ((1, "single"), (2, "two")):
        batch = scenes.sample_batch(n, seed=seed + n_objects, split="heldout", n_objects=n_objects)
        images = []
        for i in range(0, n, batch_size):
            g = torch.Generator(pipe.device).manual_seed(seed * 1000 + i)
            output = pipe(
                batch.captions[i : i + batch_size],
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=g,
                output_type="pt",
            )
            assert isinstance(output, BuiltinPipelineOutput) and isinstance(output.images, torch.Tensor)
            images.append(output.images.cpu())
        scores = score_fidelity(classifier, torch.cat(images) * 2 - 1, batch.captions)
        out[name] = scores.to_dict()
    return out


def cpu_time(weights: Path, runs: int = 5) -> dict:
    torch.set_num_threads(2)
    pipe = BuiltinPipeline.from_pretrained(weights, dtype=torch.float32).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    prompts = list(EXAMPLE_PROMPTS) * (8 // len(EXAMPLE_PROMPTS))
    pipe(prompts, generator=torch.Generator().manual_seed(0), output_type="pt")  # warm-up
    times, cpu = [], []
    for r in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        pipe(prompts, generator=torch.Generator().manual_seed(r), output_type="pt")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    # Wall time is the target; CPU seconds / threads is what the wall time would be on two
    # otherwise idle cores, and shows when other processes were competing for them.
    return {
        "images": len(prompts),
        "threads": 2,
        "runs_s": [round(t, 3) for t in times],
        "median_s": statistics.median(times),
        "process_cpu_s": [round(c, 3) for c in cpu],
        "median_cpu_s_per_thread": statistics.median(cpu) / 2,
        "load_average": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> None:
    steps, guidance = _defaults()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=512, help="held-out captions per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sweep", default=f"{steps}:{guidance:g}", help="steps:guidance[,steps:guidance...]")
    parser.add_argument("--fidelity", action=argparse.BooleanOptionalAction, default=True, help="prompt fidelity (a)")
    parser.add_argument("--timing", action=argparse.BooleanOptionalAction, default=True, help="CPU timing (b)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    settings = [(int(s), float(g)) for s, g in (item.split(":") for item in args.sweep.split(","))]
    pipe = BuiltinPipeline.from_pretrained(args.weights, dtype=torch.float32).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    classifier = AttributeClassifier.from_pretrained().to(args.device)
    results = {"weights": str(args.weights), "device": args.device, "n": args.n, "seed": args.seed, "settings": []}
    for s, g in settings if args.fidelity else []:
        start = time.perf_counter()
        fid = fidelity(pipe, classifier, args.n, args.seed, s, g, args.batch_size)
        single, two = fid["single"]["accuracy"], fid["two"]["accuracy"]
        row = {
            "steps": s,
            "guidance": g,
            "single_shape": single["shape"],
            "single_colour": single["colour"],
            "single_position": single["position"],
            "single_size": single["size"],
            "single_full_object": single["full_object"],
            "single_background": single["background"],
            "two_full_object": two["full_object"],
            "two_position": two["position"],
            "seconds": round(time.perf_counter() - start, 1),
            "details": fid,
        }
        results["settings"].append(row)
        print(
            f"steps {s:3d} guidance {g:4.1f} | single: shape {row['single_shape']:.3f} "
            f"colour {row['single_colour']:.3f} position {row['single_position']:.3f} "
            f"size {row['single_size']:.3f} bg {row['single_background']:.3f} "
            f"| two: full object {row['two_full_object']:.3f} | {row['seconds']} s",
            flush=True,
        )
    if args.timing:
        results["cpu_time"] = cpu_time(args.weights)

    print(f"\n{'metric':<34}{'value':>10}{'target':>10}")
    if results["settings"]:
        first = results["settings"][0]
        print(f"{'(at ' + str(first['steps']) + ' steps, guidance ' + format(first['guidance'], 'g') + ')':<34}")
        for key in ("single_shape", "single_colour", "single_position", "two_full_object"):
            print(f"{key:<34}{first[key]:>10.3f}{'>= ' + format(TARGETS[key], '.2f'):>10}")
    if args.timing:
        t = results["cpu_time"]
        print(f"{'cpu_seconds_8 (median of 5)':<34}{t['median_s']:>10.2f}{'<= 20':>10}")
        per_thread = t["median_cpu_s_per_thread"]
        print(f"{'  process CPU s / 2 threads':<34}{per_thread:>10.2f}   (load average {t['load_average'][0]:.1f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
