"""`ditlens bench transport` on the built-in model (or a folder of its family): Finding 3
(massive activations carry a prompt's meaning into another's generation) and both uses,
with the defaults chosen by measurement, into report.md, transport.json and the figures.

    ditlens bench transport [--quick]
    ditlens bench transport --model OUT/model [--classifier FOLDER]

The steps: choose the defaults one factor at a time at alpha = 1 (k, step window, block
kinds, mask origin, streams), with random-k controls; the strength curve of the chosen
setting against text-embedding interpolation and pixel blending; two-object targets (does
the edit stay on the source's slot?); image-conditioned transport from exact renders. Every
pair is held out of training (`worlds.transport_pairs`); the tables and the verdict are
worded in `transport_report.py`.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..adapters import adapter_for
from ..builtin.pipeline import DEFAULT_WEIGHTS
from ..builtin.text_encoder import scenes_of
from ..generation import GenerationSettings, generate
from ..io.outputs import write_atomic
from ..metrics.classifier import load_classifier
from ..reporting.plots import plot_image_table
from ..reporting.report import write_markdown
from ..reporting.verdicts import Verdict, transfer_score, transport_verdict
from ..transport import TransportConfig, transport_image, transport_text_pairs
from . import transport_report as report
from .builtin_model import model_summary, report_title
from .configs import TransportBenchConfig
from .reports import not_measured_section, report_folder
from .worlds import (
    BENCH_SEED,
    classifier_for,
    metrics_of,
    needs_classifier,
    perfect_transfers,
    render_seeds,
    transport_pairs,
    world_of,
)

EMBEDDING, PIXEL = "text-embedding interpolation", "pixel blending"  # the two baselines
Scores = dict[str, float]  # one condition's transport scores, mean over pairs
Strip = list[torch.Tensor | None]  # a row of images, as plot_image_table takes it


@dataclass
class _Run:
    """What every step of one transport run reads, and the scoring of a setting on the pairs."""

    pipe: Any
    out: Path
    config: TransportBenchConfig
    world: ModuleType
    metrics: ModuleType  # the world's scores (metrics_of)
    classifier: Any  # None: transfer is not measured, the defaults are not chosen
    pairs: list[tuple[str, str]]
    textured: bool  # world v2: objects have a texture to move too
    say: Callable[[str], None]

    def evaluate(
        self, tconfig: TransportConfig, alphas: list[float], keep_strip: bool = False, same_seed: bool = False
    ) -> tuple[dict[float, Scores], list[Strip]]:
        """Mean scores per alpha over the pairs, and (keep_strip) the first four pairs' images.
        same_seed: the target runs from the source's noise (by default each prompt has its own seed)."""
        per_alpha: dict[float, list[Scores]] = {a: [] for a in alphas}
        strips: list[Strip] = []
        seeds = [
            (BENCH_SEED + i, BENCH_SEED + i if same_seed else BENCH_SEED + 1000 + i) for i in range(len(self.pairs))
        ]
        for i, r in enumerate(self.run_pairs(self.pairs, tconfig, alphas, seeds)):
            source, target = self.pairs[i]
            self.score_into(per_alpha, alphas, r.transported, source, target, _present(r.target))
            if keep_strip and i < 4:
                strips.append([r.source, _present(r.target), *r.transported])
        return {a: mean_scores(rows) for a, rows in per_alpha.items()}, strips

    def run_pairs(
        self, pairs: list[tuple[str, str]], tconfig: TransportConfig, alphas: list[float], seeds: list[tuple[int, int]]
    ) -> list[Any]:
        """Every pair's text-conditioned transport, `config.pairs_per_call` pairs per pipeline call."""
        n = self.config.pairs_per_call
        return [
            r
            for at in range(0, len(pairs), n)
            for r in transport_text_pairs(
                self.pipe, pairs[at : at + n], tconfig, alphas=alphas, seeds=seeds[at : at + n]
            )
        ]

    def at_one(self, tconfig: TransportConfig, same_seed: bool = False) -> Scores:
        """The setting's mean scores at alpha = 1 (the sweep's strength)."""
        return self.evaluate(tconfig, [1.0], same_seed=same_seed)[0][1.0]

    def score_into(
        self,
        rows: dict[float, list[Scores]],
        alphas: list[float],
        images: torch.Tensor,
        source: str,
        target: str,
        alone: torch.Tensor,
    ) -> None:
        """Append the scores of `images` (one per alpha, `alone`: the target alone) to rows[alpha]."""
        for a, row in zip(alphas, self.metrics.transport_scores(images, source, target, alone, self.classifier)):
            rows[a].append(row)


def mean_scores(rows: list[Scores]) -> Scores:
    """Every score's mean over the pairs."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def perfect_transfer_scores(pairs: list[tuple[str, str]], world: ModuleType, classifier: Any) -> Scores:
    """The oracle's mean scores on the pairs: `perfect_transfers` scored as transport is, each
    exact transfer against its target's render (classifier: as `bench_transport` takes it)."""
    metrics = metrics_of(world)
    return mean_scores(
        [
            metrics.transport_scores(moved[None], source, target, alone, classifier)[0]
            for (source, target), alone, moved in zip(pairs, *perfect_transfers(pairs, world))
        ]
    )


def perfect_transfer_of_report(numbers: dict[str, Any]) -> Scores:
    """The oracle's scores on a transport.json's pairs: its own, or, for a report written
    before the oracle, computed now (renders and the world's shipped classifier; no model)."""
    if "perfect_transfer" in numbers:
        return numbers["perfect_transfer"]
    return _perfect_transfer_of(_reported_model(numbers)["world"], tuple(tuple(p) for p in numbers["pairs"]))


@functools.cache
def _perfect_transfer_of(world: str, pairs: tuple[tuple[str, str], ...]) -> Scores:
    return perfect_transfer_scores(list(pairs), scenes_of(world), load_classifier("shipped", world))


def _reported_model(numbers: dict[str, Any]) -> dict[str, Any]:
    """A transport.json's model summary; reports written before it had one are of the shipped model."""
    if "model" in numbers:
        return numbers["model"]
    config = json.loads((DEFAULT_WEIGHTS / "transformer" / "config.json").read_text())
    return {"world": "v1", "hidden_size": config["num_attention_heads"] * config["attention_head_dim"]}


def verdict_from_numbers(numbers: dict[str, Any]) -> Verdict | None:
    """Finding 3's verdict on a transport.json's numbers under the current rule, which a report
    written before the perfect-transfer oracle did not apply (its own verdict stays in it); None
    where the report decided none (no classifier)."""
    if "verdict" not in numbers:
        return None
    curve = numbers["strength_curve"]
    top = max(curve["transport"], key=float)  # "1.0": JSON keys are strings
    per_k: dict[int, Scores] = {}
    random_k: dict[int, Scores] = {}
    for name, scores in numbers["defaults_sweep"].items():  # rows "k=8" and "random k=8 (control)"
        if found := re.fullmatch(r"(random )?k=(\d+)( \(control\))?", name):
            (random_k if found[1] else per_k)[int(found[2])] = scores
    chosen = numbers["chosen"]
    return transport_verdict(
        per_k,
        random_k,
        _reported_model(numbers)["hidden_size"],
        curve["transport"][top],
        f"k = {chosen['k']}, mask = {chosen['mask']}, streams = {chosen['streams']}",
        {name: table[top] for name, table in curve.items() if name != "transport"},
        perfect_transfer_of_report(numbers),
    )


#: the defaults sweep's stages in `choose_defaults`' order: (stage, the chosen config's key, the
#: candidate name of a value of that key)
CHOICE_STAGES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("k", "k", lambda k: f"k={k}"),
    ("window", "step_window", lambda w: _window_name(None if w is None else tuple(w))),
    ("sites", "blocks", lambda b: f"sites={b}"),
    ("mask", "mask", lambda m: f"mask={m}"),
    ("streams", "streams", lambda s: f"streams={s}"),
)


def first_changed_choice(numbers: dict[str, Any]) -> tuple[str, str, str] | None:
    """Where `transfer_score` as it is now would have chosen otherwise than a transport.json's
    defaults sweep did: (stage, the report's candidate, the current score's), at the first
    stage that differs, or None where every stage agrees (or the report chose nothing by
    measurement). Only the first difference can be read: the later stages' rows ran with the
    report's own earlier choice. Candidates tie as in `choose_defaults`: the first listed wins."""
    chosen = numbers["chosen"]
    if not chosen.get("by_measurement", False):
        return None
    rows = numbers["defaults_sweep"]
    for stage, key, name in CHOICE_STAGES:
        candidates = {n: m for n, m in rows.items() if n.startswith(f"{stage}=")}
        if not candidates:
            continue
        current = max(candidates, key=lambda n: transfer_score(candidates[n]))
        reported = name(chosen.get(key, chosen.get("steps")) if key == "step_window" else chosen[key])
        if current != reported:
            return stage, reported, current
    return None


def _present(image: torch.Tensor | None) -> torch.Tensor:
    """The target alone, which every transport here runs (include_target is left True)."""
    assert image is not None, "transport ran without the target alone"
    return image


def bench_transport(
    pipe: Any,
    out_dir: str | Path,
    config: TransportBenchConfig,
    command: str,
    say: Callable[[str], None] = print,
    classifier: Any = None,
) -> Path:
    """Finding 3 and both uses on a built-in-family pipeline of either world. classifier: as
    in `bench_findings`; without one (v2), the transfer scores are not measured, the
    defaults are not chosen (the sweep's base setting runs throughout) and Finding 3 is not
    decided, while layout IoU and ghosting still are."""
    started = time.perf_counter()
    world = world_of(pipe)
    classifier = classifier_for(pipe, classifier)
    out = report_folder(out_dir)
    pairs = transport_pairs(config.n_pairs, world=world)
    run = _Run(pipe, out, config, world, metrics_of(world), classifier, pairs, hasattr(world, "TEXTURES"), say)
    model = model_summary(pipe)
    numbers: dict[str, Any] = {"config": asdict(config), "model": model, "pairs": pairs}
    not_measured: list[str] = []
    if classifier is None:
        not_measured.append(
            needs_classifier(
                "transfer (the source's colour, shape and texture at the target's slot), background kept, the other "
                "object kept, the defaults' choice (its score multiplies transfer by layout IoU, 1 - ghosting and the "
                "background kept) and so Finding 3's verdict"
            )
        )

    say(f"transport: choosing defaults on {len(pairs)} held-out pairs")
    sweep = choose_defaults(run)
    numbers.update(sweep.numbers())
    say("transport: strength curve and baselines")
    curve, baselines, strips = _strength_curve(run, sweep.chosen)
    numbers["strength_curve"] = {"transport": curve, **baselines}
    oracle = perfect_transfer_scores(pairs, world, classifier)
    numbers["perfect_transfer"] = oracle
    _plot_strips(strips, out / "transport_strips.png", [f"pair {i}" for i in range(len(strips))], config.alphas)
    say("transport: two-object targets")
    two = _two_object_targets(run, sweep.chosen)
    numbers["two_object_targets"] = {"pairs": two.pairs, **two.means()}
    _plot_strips(two.strips, out / "transport_two_object_strips.png", two.labels, config.alphas)
    say("transport: image-conditioned")
    image_cond = _image_conditioned(run, sweep.chosen)
    numbers["image_conditioned"] = image_cond

    first, verdict = report.verdict_section(run.textured, sweep, curve, baselines, oracle)
    if verdict is not None:
        numbers["verdict"] = verdict.as_dict()
    if not_measured:
        numbers["not_measured"] = not_measured
    write_atomic(out / "transport.json", json.dumps(numbers, indent=1, default=str))
    sections = [
        first,
        report.defaults_section(run.textured, sweep),
        report.curve_section(run.textured, curve, baselines, oracle),
        report.two_object_section(run.textured, two.pairs, two.means()),
        report.image_section(run.textured, image_cond),
        *not_measured_section(not_measured),
    ]
    intro = report.intro(command, started, model, len(pairs), run.textured)
    return write_markdown(out / "report.md", f"ditlens bench transport ({report_title(model)})", intro, sections)


def _plot_strips(strips: list[Strip], path: Path, labels: list[str], alphas: list[float]) -> None:
    plot_image_table(strips, path, labels, ["source", "target", *[f"a={a:g}" for a in alphas]])


# ---- 1. the defaults: one factor at a time around the base, at alpha = 1 -------------------------------


@dataclass
class Sweep:
    """The defaults sweep: every setting's scores at alpha = 1, and what it chose."""

    scores: dict[str, Scores]  # setting name -> scores, in the order they ran
    chosen: TransportConfig
    top_k: dict[int, Scores]  # the k candidates
    random_k: dict[int, Scores]  # their controls: k random channels (every k short of all of them)
    sweep_k: list[int]  # the ks run (capped at the model's width)
    hidden: int  # the model's width
    block_kinds: dict[str, tuple[str, ...] | None]  # kind -> its sites (None: every site)
    scored: bool  # False: no transfer score, the base ran throughout
    k_capped: bool  # the model is narrower than config.sweep_k

    @property
    def past_the_winner(self) -> list[int]:
        return [k for k in self.sweep_k if k > self.chosen.k]

    @property
    def blocks(self) -> str:
        """The block kind of the chosen sites."""
        return next(kind for kind, names in self.block_kinds.items() if names == self.chosen.sites)

    def numbers(self) -> dict[str, Any]:
        """The sweep's part of transport.json."""
        c = self.chosen
        return {
            **({"sweep_k_run": self.sweep_k} if self.k_capped else {}),
            "defaults_sweep": self.scores,
            "chosen": {
                "k": c.k,
                "step_window": c.step_window,
                "mask": c.mask,
                "sites": c.sites,
                "streams": c.streams,
                "foreground": c.foreground,
                "by_measurement": self.scored,
                "blocks": self.blocks,
            },
            "k_sweep_edge": {"best_k": c.k, "largest_k": max(self.sweep_k), "past_the_winner": self.past_the_winner},
        }


def choose_defaults(run: _Run) -> Sweep:
    """k, then the step window, then the block kinds, then the mask origin, then the streams:
    each the best by `transfer_score` with the earlier choices fixed (no classifier: the base's).
    Transfer that keeps the composition counts, so the score multiplies transfer by layout IoU,
    1 - ghosting and the background kept; colour and shape count separately: requiring both at
    once scored every setting 0 on the built-in model (docs/transport.md), leaving the choice
    to the order."""
    config, base, scored = run.config, run.config.base, run.classifier is not None
    hidden = adapter_for(run.pipe).hidden_size
    # a model narrower than the sweep (the CPU smoke model has 32 channels) sweeps up to all of its channels
    sweep_k = list(dict.fromkeys(min(k, hidden) for k in config.sweep_k))
    scores: dict[str, Scores] = {}

    def best(candidates: dict[str, TransportConfig], fallback: TransportConfig) -> TransportConfig:
        """Run every candidate (into `scores`); the one of the highest score, or without a score the fallback."""
        ran = {}
        for name, tc in candidates.items():
            run.say(f"  {name}")
            ran[name] = (tc, run.at_one(tc))
            scores[name] = ran[name][1]
        return max(ran.values(), key=lambda v: transfer_score(v[1]))[0] if scored else fallback

    by_k = {f"k={k}": replace(base, k=k) for k in sweep_k}
    k = best(by_k, base).k
    random_k = {}
    for q in sweep_k:
        if q < hidden:  # the control of the same size: not a candidate
            run.say(f"  random k={q}")
            random_k[q] = scores[f"random k={q} (control)"] = run.at_one(replace(base, k=q, channels="random"))
    windows = {_window_name(w): replace(base, k=k, step_window=w) for w in config.sweep_windows}
    step_window = best(windows, base).step_window
    kinds = block_kinds(run.pipe)
    by_kind = {f"sites={s}": replace(base, k=k, step_window=step_window, sites=kinds[s]) for s in config.sweep_sites}
    sites = best(by_kind, base).sites
    masks = {f"mask={m}": replace(base, k=k, mask=m, step_window=step_window, sites=sites) for m in config.sweep_masks}
    masked = best(masks, replace(base, k=k, step_window=step_window, sites=sites))
    chosen = best({f"streams={s}": replace(masked, streams=s) for s in config.sweep_streams}, masked)
    # not a candidate: the chosen setting with the target on the source's own noise. Copied hidden
    # states carry the source's velocity, which only fits the source's noise
    run.say("  same seed")
    scores["chosen, target on the source's seed (not a candidate)"] = run.at_one(chosen, same_seed=True)
    top_k = {tc.k: scores[name] for name, tc in by_k.items()}
    return Sweep(scores, chosen, top_k, random_k, sweep_k, hidden, kinds, scored, sweep_k != config.sweep_k)


def _window_name(window: tuple[int, int] | None) -> str:
    return f"window={'all' if window is None else f'[{window[0]},{window[1]})'}"


def block_kinds(pipe: Any) -> dict[str, tuple[str, ...] | None]:
    """The sweep's block kinds: every site, and the sites of each of the built-in model's two
    block lists (FLUX architecture, in forward order: double-stream blocks, then single-stream)."""
    adapter = adapter_for(pipe)
    names = [s.name for s in adapter.sites()]
    double, single = adapter.block_lists
    return {
        "all": None,
        "double": tuple(n for n in names if n.startswith(f"{double}.")),
        "single": tuple(n for n in names if n.startswith(f"{single}.")),
    }


# ---- 2. the strength curve of the chosen setting, against the two baselines ----------------------------


def _strength_curve(
    run: _Run, chosen: TransportConfig
) -> tuple[dict[float, Scores], dict[str, dict[float, Scores]], list[Strip]]:
    """Transport over alpha, text-embedding interpolation and pixel blending at the same
    alphas (each pair's target on its own seed), and the first pairs' transport strips."""
    alphas = run.config.alphas
    curve, strips = run.evaluate(chosen, alphas, keep_strip=True)
    rows: dict[str, dict[float, list[Scores]]] = {m: {a: [] for a in alphas} for m in (EMBEDDING, PIXEL)}
    for i, (source, target) in enumerate(run.pairs):
        target_alone = generate(run.pipe, [target], [BENCH_SEED + 1000 + i], GenerationSettings())[0]
        source_image = generate(run.pipe, [source], [BENCH_SEED + i], GenerationSettings())[0]
        emb = _embedding_lerp(run.pipe, source, target, alphas, BENCH_SEED + 1000 + i)
        pix = torch.stack([torch.lerp(target_alone, source_image, a) for a in alphas])
        run.score_into(rows[EMBEDDING], alphas, emb, source, target, target_alone)
        run.score_into(rows[PIXEL], alphas, pix, source, target, target_alone)
    baselines = {m: {a: mean_scores(r) for a, r in table.items()} for m, table in rows.items()}
    return curve, baselines, strips


def _embedding_lerp(pipe: Any, source: str, target: str, alphas: list[float], seed: int) -> torch.Tensor:
    """Baseline: lerp of the two prompts' text embeddings (sequence and pooled), same seed.
    (len(alphas), 3, H, W)."""
    txt, vec = pipe.encode_prompt([source, target])
    a = torch.tensor(alphas, dtype=txt.dtype, device=txt.device)
    embeds = torch.lerp(txt[1:2], txt[0:1], a.view(-1, 1, 1))
    pooled = torch.lerp(vec[1:2], vec[0:1], a.view(-1, 1))
    gens = [torch.Generator().manual_seed(seed) for _ in alphas]
    out = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, generator=gens, output_type="pt")
    return out.images.float().cpu()


# ---- 2b. two-object targets: does the edit stay on the source's slot? ----------------------------------


@dataclass
class _TwoObjects:
    pairs: list[tuple[str, str]]
    rows: dict[str, dict[float, list[Scores]]]  # method -> alpha -> per pair
    strips: list[Strip]
    labels: list[str]

    def means(self) -> dict[str, dict[float, Scores]]:
        return {m: {a: mean_scores(rows) for a, rows in t.items()} for m, t in self.rows.items()}


def _two_object_targets(run: _Run, chosen: TransportConfig) -> _TwoObjects:
    """More held-out pairs whose target has a second object: transport under every mask
    origin of the sweep (at the chosen k, window, sites and streams) and the two baselines."""
    alphas = run.config.alphas
    two = transport_pairs(run.config.n_pairs, seed=BENCH_SEED + 1, second_object=True, world=run.world)
    transports = {f"massive-channel transport (mask = {m})": replace(chosen, mask=m) for m in run.config.sweep_masks}
    found = _TwoObjects(two, {m: {a: [] for a in alphas} for m in [*transports, EMBEDDING, PIXEL]}, [], [])
    seeds = [(BENCH_SEED + i, BENCH_SEED + 2000 + i) for i in range(len(two))]
    by_setting = {name: run.run_pairs(two, tc, alphas, seeds) for name, tc in transports.items()}
    for i, (source, target) in enumerate(two):
        target_seed = seeds[i][1]
        results = {name: pair_results[i] for name, pair_results in by_setting.items()}
        r = next(iter(results.values()))  # source and target alone are the same in every result
        alone = _present(r.target)
        images_of = {name: res.transported for name, res in results.items()}
        images_of[EMBEDDING] = _embedding_lerp(run.pipe, source, target, alphas, target_seed)
        images_of[PIXEL] = torch.stack([torch.lerp(alone, r.source, a) for a in alphas])
        for method, images in images_of.items():
            run.score_into(found.rows[method], alphas, images, source, target, alone)
        if i < 2:
            for res in results.values():
                found.strips.append([res.source, _present(res.target), *res.transported])
                found.labels.append(f"pair {i}" + (f" ({res.settings['mask']})" if len(results) > 1 else ""))
    return found


# ---- 3. image-conditioned: renders with known attributes into new prompts --------------------------------


def _image_conditioned(run: _Run, chosen: TransportConfig) -> dict[str, Scores]:
    """Each pair's source render as the reference of its target, at alpha = 1, the reference
    row re-noised (renoise) or ODE-inverted (invert); writes the strips of the first pairs."""
    image_cond: dict[str, Scores] = {}
    strips: list[Strip] = []
    references = run.metrics.renders([source for source, _ in run.pairs], render_seeds(len(run.pairs)))
    for path in ("renoise", "invert"):
        rows: list[Scores] = []
        for i, (source, target) in enumerate(run.pairs):
            r = transport_image(
                run.pipe,
                references[i],
                target,
                chosen,
                reference_prompt=source,
                alphas=[1.0],
                seed=BENCH_SEED + i,
                reference_path=path,
            )
            alone = _present(r.target)
            rows += run.metrics.transport_scores(r.transported, source, target, alone, run.classifier)
            if i < 4:
                strips.append([r.source, alone, r.transported[0]])
        image_cond[path] = mean_scores(rows)
    n_shown = len(strips) // 2
    labels = [f"pair {i} ({path})" for path in ("renoise", "invert") for i in range(n_shown)]
    columns = ["reference (render)", "target alone", "transported"]
    plot_image_table(strips, run.out / "transport_image_strips.png", labels, columns)
    return image_cond
