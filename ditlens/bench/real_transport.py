"""`ditlens bench transport --model M --pairs FILE`: Finding 3 (text-conditioned transport) on
any supported pipeline, against its control and two baselines at matched strength.

    ditlens bench transport --model ./FLUX.1-schnell --pairs pairs.txt --clip ./clip-vit-large-patch14

pairs.txt holds one pair per line, `source prompt | target prompt`. For each pair and seed,
source and target on the same seed:
- top-k transport: `transport_text` with the measured defaults (`TransportConfig()`), at
  each alpha;
- random-k transport: the same with k random channels (`channels="random"`), the control of
  the same size;
- text-embedding interpolation: the target's text conditioning lerped towards the source's
  at the transformer's input (`text_interpolation.interpolated_text`), the target's seed;
- pixel blending: `(1 - alpha) * target alone + alpha * source`.
Scores (`scores.transport_scores`): PSNR to the target alone and to the source, and with a CLIP,
CLIP-T to the source's and the target's prompts and CLIP-I to the target alone and to the
source. The report says what it could not measure and why; every number in it comes from
the run that wrote it, and its verdict is worded from those numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from ..io.outputs import write_atomic
from ..metrics.scores import TRANSPORT_COLUMNS, Scorers, transport_scores
from ..reporting.plots import plot_image_table, plot_metric_over_alpha
from ..reporting.report import Section, write_markdown
from ..transport import TransportConfig, TransportResult, transport_text
from .configs import TransportProtocolConfig, read_pairs  # noqa: F401 (cli/bench.py imports read_pairs from here)
from .reports import model_name, not_measured_section, provenance, report_folder
from .text_interpolation import embedding_interpolation

#: the four methods, in the order of the tables
TOP, RANDOM, EMBEDDING, PIXEL = (
    "top-k transport",
    "random-k transport (control)",
    "text-embedding interpolation",
    "pixel blending",
)
METHODS = (TOP, RANDOM, EMBEDDING, PIXEL)
SHORT = {TOP: "top-k", RANDOM: "random-k", EMBEDDING: "text emb.", PIXEL: "pixel"}  # figure labels
TARGET_ALONE = "target alone"
#: the scores in the tables, in order, with their formats (CLIP scores are absent without a CLIP)
FORMATS = {
    "clip_t_to_source": ".2f",
    "clip_t_to_target": ".2f",
    "clip_i_to_target_alone": ".3f",
    "clip_i_to_source": ".3f",
    "psnr_to_target_alone": ".1f",
    "psnr_to_source": ".1f",
}


# ---- the run ---------------------------------------------------------------------------------


def run_sample(
    pipe: Any, config: TransportProtocolConfig, source: str, target: str, seed: int
) -> dict[str, TransportResult]:
    """The four methods on one pair and seed, each as a TransportResult that shares the top-k
    run's source and target alone (the references every method is scored against)."""
    alphas = config.alphas
    top = transport_text(pipe, source, target, config.transport, alphas=alphas, source_seed=seed, target_seed=seed)
    control = replace(config.transport, channels="random")
    rnd = transport_text(
        pipe, source, target, control, alphas=alphas, source_seed=seed, target_seed=seed, include_target=False
    )
    emb = embedding_interpolation(pipe, source, target, alphas, seed, config.transport.generation)
    alone = _target_alone(top)
    pix = torch.stack([torch.lerp(alone, top.source, a) for a in alphas])  # lerp: exact at 0 and 1

    def like_top(transported: torch.Tensor, settings: dict[str, Any]) -> TransportResult:
        return TransportResult(
            source=top.source, target=alone, transported=transported, alphas=alphas, settings=settings
        )

    return {
        TOP: top,
        RANDOM: like_top(rnd.transported, rnd.settings),
        EMBEDDING: like_top(emb, {"method": EMBEDDING, "seed": seed}),
        PIXEL: like_top(pix, {"method": PIXEL, "seed": seed}),
    }


def _target_alone(result: TransportResult) -> torch.Tensor:
    """The target alone of a transport run with include_target (every top-k run here)."""
    assert result.target is not None, "the top-k transport runs the target alone"
    return result.target


def _alpha(a: float) -> str:
    return f"a={a:g}"  # transport_scores' row names


def _mean_and_std(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation over samples of every score, and the count."""
    out: dict[str, float] = {"n": len(rows)}
    for key in rows[0]:
        values = torch.tensor([row[key] for row in rows], dtype=torch.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
    return out


def bench_transport_any(
    pipe: Any,
    out_dir: str | Path,
    config: TransportProtocolConfig,
    command: str,
    *,
    scorers: Scorers,
    say: Callable[[str], None] = print,
) -> Path:
    """Run the protocol and write report.md, findings.json and the figures into out_dir."""
    started = time.perf_counter()
    _validate(pipe, config)  # before the first generation
    out = report_folder(out_dir)
    samples, strips, unmoved = _run_samples(pipe, config, scorers, say)
    n = len(samples)
    summary = _summary_of(samples, config.alphas)
    keys = [k for k in FORMATS if k in summary[TARGET_ALONE]]
    figures = _figures(summary, keys, samples, strips, config.alphas, out)
    alpha = max(config.alphas)
    wins = _top_beats_random(samples, alpha, "clip_t_to_source" if scorers.clip is not None else "psnr_to_source")
    headline, sentence = transport_sentence(summary, alpha, config.transport.k, wins, unmoved, n)
    not_measured = _not_measured(scorers)
    numbers = {
        "config": asdict(config) | {"transport": asdict(config.transport)},
        "model": model_name(pipe),
        "scores": summary,
        "samples": samples,
        "verdict": {"headline": headline, "text": sentence, "top_beats_random": wins, "unmoved_samples": unmoved},
        "not_measured": not_measured,
    }
    seeds = f"{len(config.seeds)} seed{'s' * (len(config.seeds) != 1)}"
    sections = [
        Section(headline, sentence, [], None),
        Section(
            "Transport, its control and two baselines at matched strength",
            _methods_text(config.transport, n, f"{len(config.pairs)} pairs x {seeds}"),
            figures,
            _table(summary, keys, config.alphas),
        ),
        *not_measured_section(not_measured),
    ]
    write_atomic(out / "findings.json", json.dumps(numbers, indent=1, default=str))
    intro = (
        f"{provenance(command, f'seeds {config.seeds}', started)}. Model {model_name(pipe)} "
        f"({type(pipe.transformer).__name__}); {len(config.pairs)} prompt pairs x {seeds}; alphas {config.alphas}."
    )
    return write_markdown(out / "report.md", f"ditlens bench transport ({type(pipe).__name__})", intro, sections)


def _validate(pipe: Any, config: TransportProtocolConfig) -> None:
    """The config, and its transport settings against the model (k, sites, the step window)."""
    from ..adapters import adapter_for
    from ..generation import default_steps

    config.validate()
    adapter = adapter_for(pipe)
    steps = config.transport.generation.num_inference_steps or default_steps(pipe)
    config.transport.validate(adapter.hidden_size, [s.name for s in adapter.sites()], steps)


Sample = dict[str, Any]  # pair, source, target, seed and scores[method][a=ALPHA | target alone]
Strip = list[torch.Tensor | None]  # a row of images, as plot_image_table takes it


def _run_samples(
    pipe: Any, config: TransportProtocolConfig, scorers: Scorers, say: Callable[[str], None]
) -> tuple[list[Sample], list[Strip], int]:
    """Every pair on every seed: each sample's scores, the first two samples' strips (one row
    a method) and the count of samples where top-k transport changed no pixel."""
    samples: list[Sample] = []
    strips: list[Strip] = []
    unmoved = 0
    n = len(config.pairs) * len(config.seeds)
    for seed in config.seeds:
        for p, (source, target) in enumerate(config.pairs):
            say(f"  {len(samples) + 1}/{n}: pair {p}, seed {seed}")
            results = run_sample(pipe, config, source, target, seed)
            scores = {method: transport_scores(r, source, target, scorers) for method, r in results.items()}
            top = results[TOP]
            unmoved += int(all(torch.equal(image, _target_alone(top)) for image in top.transported))
            by_method = {m: {k: v for k, v in s.items() if k != TARGET_ALONE} for m, s in scores.items()}
            sample = {"pair": p, "source": source, "target": target, "seed": seed}
            samples.append(sample | {"scores": {TARGET_ALONE: scores[TOP][TARGET_ALONE]} | by_method})
            if len(strips) < 2 * len(METHODS):  # the first two samples
                strips += [[r.source, r.target, *r.transported] for r in results.values()]
    return samples, strips, unmoved


def _summary_of(samples: list[Sample], alphas: list[float]) -> dict[str, Any]:
    """The target alone's and each method's scores at each alpha, summarised over the samples."""
    summary: dict[str, Any] = {TARGET_ALONE: _mean_and_std([s["scores"][TARGET_ALONE] for s in samples])}
    for method in METHODS:
        summary[method] = {_alpha(a): _mean_and_std([s["scores"][method][_alpha(a)] for s in samples]) for a in alphas}
    return summary


def _table(summary: dict[str, Any], keys: list[str], alphas: list[float]) -> list[list[str]]:
    table = [["method", "alpha", *[TRANSPORT_COLUMNS[k] for k in keys]]]
    table.append([TARGET_ALONE, "-", *[_cell(summary[TARGET_ALONE], k) for k in keys]])
    for method in METHODS:
        table += [[method, f"{a:g}", *[_cell(summary[method][_alpha(a)], k) for k in keys]] for a in alphas]
    return table


def _figures(
    summary: dict[str, Any],
    keys: list[str],
    samples: list[Sample],
    strips: list[Strip],
    alphas: list[float],
    out: Path,
) -> list[tuple[str, str]]:
    """The first samples' strips, and each score there is over alpha (one line a method)."""
    labels = [f"p{s['pair']} s{s['seed']} {SHORT[m]}" for s in samples[:2] for m in METHODS]
    columns = ["source", "target alone", *[_alpha(a) for a in alphas]]
    plot_image_table(strips, out / "transport_strips.png", labels, columns)
    figures = [("transport_strips.png", "the first samples: source, target alone, each method over alpha")]
    along = sorted(alphas)  # the curves' x axis
    for key in ("clip_t_to_source", "clip_i_to_target_alone", "psnr_to_target_alone", "psnr_to_source"):
        if key not in keys:
            continue
        curves: dict[str, tuple[list[float], list[float], list[float] | None]] = {
            m: (
                along,
                [summary[m][_alpha(a)][key] for a in along],
                [summary[m][_alpha(a)][f"{key}_std"] for a in along],
            )
            for m in METHODS
        }
        name = TRANSPORT_COLUMNS[key]
        reference = (TARGET_ALONE, summary[TARGET_ALONE][key])
        plot_metric_over_alpha(curves, out / f"transport_{key}.png", name, f"{name} over alpha", reference=reference)
        figures.append((f"transport_{key}.png", f"{name} over alpha (dashed: the target alone)"))
    return figures


def _not_measured(scorers: Scorers) -> list[str]:
    """What this protocol cannot say, and why (some by design, some for want of a scorer)."""
    not_measured = []
    if scorers.clip is None:
        not_measured.append(
            "CLIP-T to the source's and the target's prompts and CLIP-I to the target alone and to the source: "
            "no CLIP model given (--clip PATH, a local CLIPModel folder), so the tables hold pixel distances only"
        )
    if not scorers.builtin:
        not_measured.append(
            "attribute transfer, layout kept and ghosting: they need the built-in model's exact ground truth "
            "(ditlens bench transport on the built-in model)"
        )
    not_measured.append(
        "which transport settings (k, step window, blocks, mask, streams) work best on this model: this run "
        "uses TransportConfig's defaults, chosen on the built-in model (--k sets k); the built-in bench sweeps them"
    )
    not_measured.append("image-conditioned transport (a reference image's subject): not part of this protocol")
    return not_measured


def _methods_text(tc: TransportConfig, n: int, runs: str) -> str:
    """What the table's four methods are, on `n` samples (`runs`: pairs x seeds, in words)."""
    setting = (
        f"k = {tc.k}, streams = {tc.streams}"
        + ("" if tc.streams == "txt" else f", mask = {tc.mask}")  # the mask is the image stream's
        + f", channels from the {tc.channels_from}"
    )
    return (
        f"Top-k transport ({setting}; every site and step), random-k transport (k random channels, one seeded draw, "
        "otherwise the same), text-embedding interpolation (the target's text conditioning lerped towards the "
        "source's at the transformer's input) and pixel blending ((1 - alpha) target alone + alpha source), "
        f"source and target on the same seed. Mean over {n} samples ({runs})"
        + (", ± standard deviation" if n > 1 else "")
        + ". Pixel blending at alpha = 1 is the source image itself: an upper bound on a copy, not a method."
    )


def _cell(row: dict[str, float], key: str) -> str:
    """A table cell: the mean, and ± the standard deviation where there are several samples."""
    fmt = FORMATS[key]
    return f"{row[key]:{fmt}}" + (f" ± {row[f'{key}_std']:{fmt}}" if row["n"] > 1 else "")


def _top_beats_random(samples: list[Sample], alpha: float, key: str) -> dict[str, Any]:
    """In how many samples top-k transport's `key` is higher than random-k's at `alpha`."""
    higher = sum(s["scores"][TOP][_alpha(alpha)][key] > s["scores"][RANDOM][_alpha(alpha)][key] for s in samples)
    return {"score": key, "alpha": alpha, "higher": int(higher), "samples": len(samples)}


def transport_sentence(
    summary: dict[str, Any], alpha: float, k: int, wins: dict[str, Any], unmoved: int, n: int
) -> tuple[str, str]:
    """The verdict (headline, sentence) at the largest alpha, worded from the numbers: does
    top-k transport move the images towards the source more than random-k of the same size,
    and how much of the target's composition does it keep next to the two baselines."""
    at = {m: summary[m][_alpha(alpha)] for m in METHODS}
    alone = summary[TARGET_ALONE]
    notes = ""
    if unmoved:
        notes = (
            f" In {unmoved} of {n} samples top-k transport left every image exactly the target alone: the edit moved "
            "nothing there (streams = txt on blocks that carry no text stream moves nothing)."
        )
    wording = _clip_sentence if "clip_t_to_source" in alone else _pixel_sentence
    headline, sentence = wording(at, alone, alpha, k, wins)
    return headline, sentence + notes


def _clip_sentence(
    at: dict[str, dict[str, float]], alone: dict[str, float], alpha: float, k: int, wins: dict[str, Any]
) -> tuple[str, str]:
    """The verdict in CLIP-T (meaning moved) and CLIP-I (composition kept)."""
    # compared as shown (2 and 3 decimals), so that the sentence never contradicts its numbers
    gain = {m: round(round(at[m]["clip_t_to_source"], 2) - round(alone["clip_t_to_source"], 2), 2) for m in METHODS}
    more = gain[TOP] > gain[RANDOM]
    headline = (
        f"Top-k transport {'moves' if more else 'does not move'} CLIP-T towards the source more than random-k "
        f"of the same size (k = {k}, alpha = {alpha:g})"
    )
    kept = {m: round(at[m]["clip_i_to_target_alone"], 3) for m in (TOP, EMBEDDING, PIXEL)}
    relation = {
        m: "more than" if kept[TOP] > kept[m] else "as much as" if kept[TOP] == kept[m] else "less than"
        for m in (EMBEDDING, PIXEL)
    }
    first = {
        "more than": "more of the target's composition than",
        "as much as": "as much of the target's composition as",
        "less than": "less of the target's composition than",
    }[relation[EMBEDDING]]
    keeps = f"{first} {EMBEDDING}, and {relation[PIXEL]} {PIXEL}"
    t = {m: at[m]["clip_t_to_source"] for m in METHODS}
    sentence = (
        f"At alpha = {alpha:g}, CLIP-T to the source prompt goes from {alone['clip_t_to_source']:.2f} (target alone) "
        f"to {t[TOP]:.2f} with top-k transport ({gain[TOP]:+.2f}) and to {t[RANDOM]:.2f} with random-k "
        f"({gain[RANDOM]:+.2f}); top-k is higher than random-k in {wins['higher']} of {wins['samples']} samples. "
        f"Text-embedding interpolation reaches {t[EMBEDDING]:.2f} ({gain[EMBEDDING]:+.2f}), pixel blending "
        f"{t[PIXEL]:.2f} ({gain[PIXEL]:+.2f}). CLIP-I to the target alone (composition kept): top-k "
        f"{kept[TOP]:.3f}, text-embedding interpolation {kept[EMBEDDING]:.3f}, pixel blending {kept[PIXEL]:.3f}: top-k "
        f"transport keeps {keeps}."
    )
    return headline, sentence


def _pixel_sentence(
    at: dict[str, dict[str, float]], alone: dict[str, float], alpha: float, k: int, wins: dict[str, Any]
) -> tuple[str, str]:
    """The verdict in pixel distances alone (no CLIP): to the source image and to the target alone."""
    source = {m: at[m]["psnr_to_source"] for m in METHODS}
    target = {m: at[m]["psnr_to_target_alone"] for m in METHODS}
    closer = round(source[TOP], 1) > round(source[RANDOM], 1)
    headline = f"Transport against its control and the baselines in pixels only (k = {k}, alpha = {alpha:g}; no CLIP)"
    sentence = (
        f"At alpha = {alpha:g}, PSNR to the source image (dB, higher = closer): top-k transport {source[TOP]:.1f}, "
        f"random-k {source[RANDOM]:.1f}, text-embedding interpolation {source[EMBEDDING]:.1f}, "
        f"pixel blending {source[PIXEL]:.1f}; top-k transport {'moves' if closer else 'does not move'} the images "
        f"closer to the source image than random-k of the same size (higher in {wins['higher']} of "
        f"{wins['samples']} samples). PSNR to the target alone (higher = more of it kept): top-k {target[TOP]:.1f}, "
        f"random-k {target[RANDOM]:.1f}, text-embedding interpolation {target[EMBEDDING]:.1f}, "
        f"pixel blending {target[PIXEL]:.1f}. Pixel distances do not say whether the source's meaning "
        "moved: give --clip PATH for CLIP-T and CLIP-I."
    )
    return headline, sentence
