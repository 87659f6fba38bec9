"""`ditlens bench`: reproduce the paper's findings and uses on the built-in model, with numbers.

    ditlens bench findings [--quick]   -> report.md + figures (findings 1 and 2)
    ditlens bench transport [--quick]  -> report.md + figures (finding 3, both uses, defaults)
    ditlens bench findings --model OUT/model [--classifier FOLDER]   -> the same on a model
                                          `python -m ditlens.builtin.train` wrote (world v1 or v2)

Prompts and seeds are held out: captions the model never saw in training (the world's
held-out split), seeds disjoint from the demo's. Every number in a report comes from the
run that wrote it; the report names the command, seed, commit and model (folder, world,
training settings). The model's world (`pipe.world`) picks the grammar, the renders and
their exact masks, the foreground rule for generated images and the attribute classifier:
`scenes.py` and `metrics/fidelity.py` for v1, `scenes_v2.py` and `metrics/fidelity_v2.py`
for v2. A v2 run scores fidelity and transfer with the classifier of `--classifier`; without
one, its report lists the scores it could not measure and runs the rest.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..adapters import adapter_for
from ..builtin import scenes as scenes_v1
from ..core.hooks import hooks
from ..disrupt import DisruptConfig, disrupt
from ..generation import GenerationSettings, generate, pixel_distances
from ..metrics.classifier import TRAIN_COMMAND_V2, load_classifier
from ..reporting.plots import plot_image_table, plot_metric_over_k, plot_miou_curves, plot_segment_overlays
from ..reporting.report import Section, write_markdown
from ..reporting.verdicts import disruption_verdict, segmentation_verdict, transfer_score, transport_verdict
from ..segment import MaskObserver, MaskScores, SegmentConfig, SegmentResult, segment_generated
from ..transport import TransportConfig, transport_image, transport_text

BENCH_SEED = 1234  # held-out prompts and generation seeds start here (the demo uses 0..)


def _commit() -> str:
    """The checkout's commit; DITLENS_COMMIT overrides it where the tree's .git is a stale copy
    (the GPU machine's)."""
    if os.environ.get("DITLENS_COMMIT"):
        return os.environ["DITLENS_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        )
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _provenance(command: str, started: float) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    return (
        f"Command: `{command}` · seed {BENCH_SEED} · commit {_commit()} · {device} · torch {torch.__version__} · "
        f"{platform.machine()} · {time.perf_counter() - started:.0f} s"
    )


def world_of(pipe: Any) -> ModuleType:
    """The scenes module of the pipeline's world (`pipe.world`; pipelines without one: v1)."""
    from ..builtin.text_encoder import scenes_of

    return scenes_of(getattr(pipe, "world", "v1"))


def metrics_of(world: ModuleType) -> ModuleType:
    """The world's scoring module: renders, their exact masks, the foreground truth of
    generated images, fidelity and transport scores (the same functions in both)."""
    if world is scenes_v1:
        from ..metrics import fidelity

        return fidelity
    from ..metrics import fidelity_v2

    return fidelity_v2


def render_seeds(n: int) -> list[int]:
    """The seeds of the held-out prompts' renders (world v2 draws a layout per seed; v1 ignores them)."""
    return [BENCH_SEED + i for i in range(n)]


# the files `BuiltinPipeline.from_pretrained` reads (what `python -m ditlens.builtin.train` writes to OUT/model)
MODEL_FILES = (
    "model_index.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
)


def check_model_folder(folder: str | Path) -> str:
    """The world ("v1" or "v2") of a built-in-family model folder, checked without loading
    any weight: it holds every file of MODEL_FILES and its model_index.json names
    BuiltinPipeline. Anything else is a ValueError or FileNotFoundError that names the folder."""
    from ..builtin.text_encoder import WORLDS

    path = Path(folder)
    hint = "give the model folder `python -m ditlens.builtin.train --out OUT` wrote (OUT/model)"
    if not path.is_dir():
        raise FileNotFoundError(f"Model folder {str(folder)!r} does not exist; {hint}.")
    if not (path / "model_index.json").is_file() and (path / "model" / "model_index.json").is_file():
        raise ValueError(f"{str(folder)!r} is a training run's folder; give its model: --model {path / 'model'}")
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if "model_index.json" in missing:
        raise ValueError(
            f"{str(folder)!r} is not a model folder (no model_index.json in it); give a diffusers pipeline "
            "folder, or for the built-in bench the model folder `python -m ditlens.builtin.train --out OUT` wrote (OUT/model)."
        )
    try:
        index = json.loads((path / "model_index.json").read_text())
        encoder = (
            json.loads((path / "text_encoder" / "config.json").read_text())
            if "text_encoder/config.json" not in missing
            else {}
        )
    except ValueError as err:
        raise ValueError(f"Cannot read the model folder {str(folder)!r}: {err}") from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name != "BuiltinPipeline":
        raise ValueError(
            f"{str(folder)!r} holds a {name or 'non-pipeline'} folder, not a built-in-family model (BuiltinPipeline); {hint}."
        )
    if missing:
        raise FileNotFoundError(
            f"The model folder {str(folder)!r} lacks {', '.join(missing)}; {hint} (a finished run: "
            "an interrupted one has OUT/checkpoint.pt and no OUT/model yet)."
        )
    world = index.get("world") or encoder.get("world") or "v1"  # folders written before worlds: v1
    if world not in WORLDS or (encoder.get("world") or "v1") != world:
        raise ValueError(
            f"The model folder {str(folder)!r} names world {world!r} in model_index.json and "
            f"{encoder.get('world') or 'v1'!r} in text_encoder/config.json; allowed: {', '.join(WORLDS)}, the same in both."
        )
    return world


TRAIN_SETTINGS = ("world", "size", "steps", "batch_size", "lr", "seed")  # the train_config.json fields a report names


def model_summary(pipe: Any) -> dict[str, Any]:
    """What the bench ran on: the folder (or the shipped model), its world and architecture,
    and the settings of the train_config.json beside it (OUT/train_config.json for OUT/model)."""
    from ..builtin.pipeline import DEFAULT_WEIGHTS

    name = getattr(pipe.config, "_name_or_path", None)  # from_pretrained's folder; None: a pipeline never saved
    folder = Path(name) if name else None
    tc = pipe.transformer.config
    summary: dict[str, Any] = {
        "folder": str(folder) if folder else None,
        "shipped": folder is not None and folder.resolve() == DEFAULT_WEIGHTS.resolve(),
        "world": getattr(pipe, "world", "v1"),
        "image_size": pipe.config.image_size,
        "hidden_size": tc.num_attention_heads * tc.attention_head_dim,
        "double_blocks": tc.num_layers,
        "single_blocks": tc.num_single_layers,
        "train_config": None,
    }
    for path in (folder / "train_config.json", folder.parent / "train_config.json") if folder else ():
        if path.is_file():
            try:
                values = json.loads(path.read_text())
            except ValueError:
                continue
            if isinstance(values, dict):
                summary["train_config"] = {"path": str(path), **{k: values[k] for k in TRAIN_SETTINGS if k in values}}
                # a time limit cuts `steps`: the log's last "trained N steps" says how many ran
                log = path.parent / "train.log"
                done = re.findall(r"^trained (\d+) steps", log.read_text(), flags=re.M) if log.is_file() else []
                if done:
                    summary["train_config"]["steps_trained"] = int(done[-1])
                break
    return summary


def _model_sentence(m: dict[str, Any]) -> str:
    name = (
        "the shipped built-in model"
        if m["shipped"]
        else f"`{m['folder']}`"
        if m["folder"]
        else "a pipeline never saved to a folder"
    )
    arch = f"{m['image_size']} px images, hidden size {m['hidden_size']}, {m['double_blocks']} double + {m['single_blocks']} single blocks"
    train = m["train_config"]
    if train is not None:
        settings = ", ".join(
            f"{k.replace('_', ' ')} {train[k]}" for k in TRAIN_SETTINGS[1:] if train.get(k) not in (None, "")
        )
        if train.get("steps_trained") not in (None, train.get("steps")):
            settings += f" ({train['steps_trained']} trained: train.log)"
        arch += f"; trained with {settings or 'the defaults'} (`{train['path']}`)"
    elif m["folder"] and not m["shipped"]:
        arch += "; no train_config.json beside it"
    return f"Model: {name} (world {m['world']}; {arch})"


def subject_positions(prompt: str, world: ModuleType = scenes_v1) -> list[int]:
    """Text-token positions of the object words (size, texture in v2, colour, shape) in the
    built-in tokenisation `[CLS] w_1 ... w_n`: word i sits at position i + 1. Only words
    before the background phrase (`on a ... background`) count: v2's background has a
    texture word too."""
    words = prompt.split()
    end = max((i for i in range(len(words) - 1) if words[i : i + 2] == ["on", "a"]), default=len(words))
    subject = {*world.SIZES, *getattr(world, "TEXTURES", ()), *world.COLOURS, *world.SHAPES}
    return [i + 1 for i, w in enumerate(words[:end]) if w in subject]


def held_out_prompts(
    n: int, n_objects: int | None = None, seed: int = BENCH_SEED, world: ModuleType = scenes_v1
) -> list[str]:
    return world.sample_batch(n, seed, split="heldout", n_objects=n_objects).captions


# ---- findings 1 and 2 ----------------------------------------------------------------------


@dataclass
class FindingsConfig:
    n_prompts: int = 64  # held-out captions (1-3 objects); quick: 16
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])  # disruption sweep
    random_draws: int = 3  # random-k spread
    k_segment: int = 2  # the built-in model's massive channels number 1-2 per site
    noise_level: float = 0.5  # renders are noised to this sigma before the one forward pass
    batch_size: int = 16  # prompts per pipeline call

    @classmethod
    def quick(cls) -> FindingsConfig:
        return cls(n_prompts=16, ks=[2, 16], random_draws=2)


def renders_through_model(
    pipe: Any, prompts: list[str], rules: list[str], k: int, sigma: float, seed: int, seeds: list[int] | None = None
) -> SegmentResult:
    """K = 2 masks of exact renders noised to `sigma`, from ONE conditional forward pass,
    each split named by every foreground rule (the default first). seeds: the renders'
    (world v2; default: render_seeds)."""
    from ..builtin.pipeline import image_ids, patchify

    world = world_of(pipe)
    size = pipe.config.image_size
    seeds = seeds if seeds is not None else render_seeds(len(prompts))
    x0 = metrics_of(world).renders(prompts, seeds) * 2 - 1  # (n, 3, H, W) in [-1, 1]
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen)
    p = pipe.patch_size
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    x_t = patchify((1 - sigma) * x0 + sigma * noise, p).to(device, dtype)
    txt, vec = pipe.encode_prompt(prompts, device)
    from ..attention import AttentionMaps, attention_masks

    foregrounds = SegmentConfig(prompts=prompts, compare_foregrounds=True).foregrounds
    observer = MaskObserver(rules, k, foregrounds=foregrounds, image_size=(size, size))
    maps = AttentionMaps(pipe.transformer, [subject_positions(p, world) for p in prompts])
    with torch.no_grad(), hooks(pipe.transformer, observers=[observer]), maps:
        pipe.transformer(
            hidden_states=x_t,
            encoder_hidden_states=txt,
            pooled_projections=vec,
            timestep=torch.full((len(prompts),), sigma, device=device, dtype=dtype),
            img_ids=image_ids(size, size, p, device, dtype),
            txt_ids=torch.zeros(txt.shape[1], 3, device=device, dtype=dtype),
            return_dict=False,
        )
    attention = attention_masks(maps.result())
    named = {fg: masks | {"attention": attention} for fg, masks in observer.result().items()}
    return SegmentResult(
        sites=observer.sites,
        masks=named.pop(foregrounds[0]),
        image_size=(size, size),
        images=(x0 + 1) / 2,
        foreground=foregrounds[0],
        other_foregrounds=named,
        heat=observer.heat(),
    )


def background_groups(prompts: list[str], world: ModuleType = scenes_v1) -> dict[str, list[int]]:
    """Prompt indices: all, and by background. v1: one colour, or split in two (which gives
    K = 2 a competing split: left against right). v2: plain, or textured (a pattern that
    K = 2 may split instead of the objects)."""
    scenes = [world.parse_caption(p) for p in prompts]
    if world is scenes_v1:
        single = [i for i, scene in enumerate(scenes) if len(scene.background) == 1]
        split = [i for i in range(len(prompts)) if i not in single]
        return {"all images": list(range(len(prompts))), "one-colour backgrounds": single, "split backgrounds": split}
    plain = [i for i, scene in enumerate(scenes) if scene.background_texture == "plain"]
    return {
        "all images": list(range(len(prompts))),
        "plain backgrounds": plain,
        "textured backgrounds": [i for i in range(len(prompts)) if i not in plain],
    }


def mask_scores_table(
    result: SegmentResult,
    truth: torch.Tensor,
    groups: dict[str, list[int]],
    label: str,
    k: int,
    scores: dict[str, MaskScores] | None = None,
) -> tuple[dict[str, Any], list[list[str]]]:
    """Per image group and channel rule: the foreground rule's best-site mIoU, and at that
    site the oracle labelling's mIoU, the share of images where the rule picked the oracle's
    cluster and the adjusted Rand index; plus the oracle's own best site. Returns the
    numbers and the table rows. scores: `result.scores(truth)`, if already computed."""
    numbers: dict[str, Any] = {}
    rows = []
    scores = scores if scores is not None else result.scores(truth)
    for group, index in groups.items():
        if not index:
            continue
        numbers[group] = {"images": len(index)}
        for rule, sc in scores.items():
            curves = sc.samples(index).per_site()
            b, o = int(curves["miou"].argmax()), int(curves["oracle"].argmax())
            n = {
                "best_site": result.sites[b],
                "miou": float(curves["miou"][b]),
                "oracle": float(curves["oracle"][b]),
                "agreement": float(curves["agreement"][b]),
                "ari": float(curves["ari"][b]),
                "oracle_best": float(curves["oracle"][o]),
                "oracle_best_site": result.sites[o],
                "miou_mean_over_sites": float(curves["miou"].mean()),
                "curves": {name: c.tolist() for name, c in curves.items()},
            }
            numbers[group][rule] = n
            name = rule if rule in ("all", "attention") else f"{rule}-{k}"
            rows.append(
                [
                    f"{label}, {group} ({len(index)})",
                    name,
                    f"{n['miou']:.3f} ({n['best_site']})",
                    f"{n['oracle']:.3f}",
                    f"{n['agreement']:.2f}",
                    f"{n['ari']:.3f}",
                    f"{n['oracle_best']:.3f} ({n['oracle_best_site']})",
                    f"{n['miou_mean_over_sites']:.3f}",
                ]
            )
    return numbers, rows


def foreground_rule_table(
    results: dict[str, tuple[SegmentResult, torch.Tensor, list[int]]], k: int
) -> tuple[dict[str, Any], list[list[str]]]:
    """For each foreground rule, on the top-k masks of each image set: the share of images
    (over every step and site) where it picks the oracle's cluster, and its best-site mIoU."""
    from ..core.masks import FOREGROUND_RULES

    numbers: dict[str, Any] = {}
    rows = [
        [
            "foreground rule",
            *[f"{name}: picks the oracle's cluster" for name in results],
            *[f"{name}: top-{k} best-site mIoU" for name in results],
        ]
    ]
    for fg in FOREGROUND_RULES:
        numbers[fg] = {}
        for name, (result, truth, index) in results.items():
            sc = result.scores(truth, fg)["top"].samples(index)
            numbers[fg][name] = {
                "agreement": float(sc.agrees.float().mean()),
                "best_site_miou": float(sc.per_site()["miou"].max()),
            }
        rows.append(
            [
                fg,
                *[f"{numbers[fg][n]['agreement']:.3f}" for n in results],
                *[f"{numbers[fg][n]['best_site_miou']:.3f}" for n in results],
            ]
        )
    return numbers, rows


def _batched(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _classifier_for(pipe: Any, classifier: Any) -> Any:
    """The classifier a bench scores with: the given one, which must read the pipeline's world,
    else the world's default (the shipped one for v1; None for v2: given, never assumed)."""
    from ..metrics.classifier import AttributeClassifierV2

    world = getattr(pipe, "world", "v1")
    if classifier is None:
        return load_classifier(None, world)
    found = "v2" if isinstance(classifier, AttributeClassifierV2) else "v1"
    if found != world:
        raise ValueError(
            f"The classifier is for world {found}, but the model is of world {world}; give a world {world} classifier."
        )
    return classifier


def _not_measured_classifier(what: str) -> str:
    return (
        f"{what}: they need a world v2 attribute classifier (--classifier FOLDER, a folder written by "
        f"`{TRAIN_COMMAND_V2}`)"
    )


def _over_k(
    scores: dict[str, dict[str, Any]], key: str, ks: list[int]
) -> dict[str, tuple[list[int], list[float], list[float] | None]]:
    """Per rule, the mean of `key` over the rule's conditions at each k (random-k: over its
    draws, with their spread)."""
    curves = {}
    for rule in ("top", "bottom", "random"):
        means, spread = [], []
        for k in ks:
            labels = [
                lbl for lbl in scores if lbl.startswith(f"{rule}-{k}") and lbl.split("-")[1].split("#")[0] == str(k)
            ]
            values = torch.tensor([scores[lbl][key] for lbl in labels])
            means.append(float(values.mean()))
            spread.append(float(values.std()) if len(values) > 1 else 0.0)
        curves[rule] = (ks, means, spread if rule == "random" else None)
    return curves


def _over_k_rows(curves: dict[str, tuple], ks: list[int], fmt: str) -> list[list[str]]:
    """Table cells per (rule, k): the mean, and for random-k its spread."""
    rows = []
    for rule in ("top", "bottom", "random"):
        for i, k in enumerate(ks):
            value, spread = curves[rule][1][i], (curves[rule][2] or [0] * len(ks))[i]
            rows.append([rule, str(k), f"{value:{fmt}}" + (f" ± {spread:{fmt}}" if rule == "random" else "")])
    return rows


def bench_findings(
    pipe: Any,
    out_dir: str | Path,
    config: FindingsConfig,
    command: str,
    say: Callable[[str], None] = print,
    classifier: Any = None,
) -> Path:
    """Findings 1 and 2 on a built-in-family pipeline of either world. classifier: the
    attribute classifier of the pipeline's world (default: the shipped one for v1; none for
    v2, whose fidelity scores are then listed as not measured)."""
    started = time.perf_counter()
    world = world_of(pipe)
    metrics = metrics_of(world)
    classifier = _classifier_for(pipe, classifier)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompts = held_out_prompts(config.n_prompts, world=world)
    seeds = render_seeds(len(prompts))  # of the renders (v2 draws one layout per seed)
    settings = GenerationSettings()
    model = model_summary(pipe)
    numbers: dict[str, Any] = {"config": asdict(config), "model": model, "prompts": prompts}
    not_measured: list[str] = []

    # Finding 1: disruption ------------------------------------------------------------------
    say(f"finding 1: disruption sweep over k={config.ks} on {len(prompts)} held-out prompts")
    images: dict[str, list[torch.Tensor]] = {}
    first_grid = None
    for b, batch in enumerate(_batched(prompts, config.batch_size)):
        dconfig = DisruptConfig(
            prompts=batch, seeds=[BENCH_SEED + b], ks=config.ks, random_draws=config.random_draws, generation=settings
        )
        result = disrupt(pipe, dconfig, progress=lambda i, n, label: say(f"  batch {b + 1}: {i + 1}/{n} {label}"))
        for condition, imgs in result.images.items():
            images.setdefault(condition.label, []).append(imgs)
        if first_grid is None:
            first_grid = result
    rules, ks, cells = first_grid.grid_rows(0)
    plot_image_table(
        [[first_grid.baseline[0]] + row for row in cells],
        out / "finding1_grid.png",
        [f"{r}-k" for r in rules],
        ["none"] + [f"k={k}" for k in ks],
        title=first_grid.config.prompts[0],
    )
    grid = ("finding1_grid.png", "one prompt, rows: rule, columns: k")
    if classifier is not None:
        scores = {
            label: metrics.builtin_scores(torch.cat(parts), prompts, classifier, seeds)
            for label, parts in images.items()
        }
        numbers["finding1"] = {
            label: {
                "full_object_accuracy": s["full_object_accuracy"],
                "frechet_distance": s["frechet_distance"],
                "accuracy": s["fidelity"]["accuracy"],
            }
            for label, s in scores.items()
        }
        curves_acc, curves_fd = (
            _over_k(scores, "full_object_accuracy", config.ks),
            _over_k(scores, "frechet_distance", config.ks),
        )
        plot_metric_over_k(
            curves_acc, out / "finding1_fidelity.png", "objects fully correct", "Zeroing k channels: prompt fidelity"
        )
        plot_metric_over_k(
            curves_fd, out / "finding1_frechet.png", "Frechet distance to renders", "Zeroing k channels: image quality"
        )
        base_acc = scores["none"]["full_object_accuracy"]
        table1 = [["condition", "k", "objects fully correct", "Frechet distance"]]
        table1.append(["none", "0", f"{base_acc:.3f}", f"{scores['none']['frechet_distance']:.1f}"])
        table1 += [
            acc + fd[2:]
            for acc, fd in zip(_over_k_rows(curves_acc, config.ks, ".3f"), _over_k_rows(curves_fd, config.ks, ".1f"))
        ]
        by_rule = {
            rule: {
                k: {"accuracy": curves_acc[rule][1][i], "frechet": curves_fd[rule][1][i]}
                for i, k in enumerate(config.ks)
            }
            for rule in ("top", "bottom", "random")
        }
        verdict1 = disruption_verdict({"accuracy": base_acc, "frechet": scores["none"]["frechet_distance"]}, by_rule)
        numbers["finding1"]["verdict"] = verdict1.as_dict()
        section1 = Section(
            verdict1.headline,
            verdict1.sentence(),
            [
                ("finding1_fidelity.png", "prompt fidelity over k"),
                ("finding1_frechet.png", "Frechet distance over k"),
                grid,
            ],
            table1,
        )
    else:  # what needs no classifier: how far each condition moves the images
        baseline = torch.cat(images["none"])
        scores = {label: pixel_distances(torch.cat(parts), baseline) for label, parts in images.items()}
        numbers["finding1"] = {label: {"psnr_db_to_unedited": s["psnr_db"]} for label, s in scores.items()}
        curves = _over_k(scores, "psnr_db", config.ks)
        plot_metric_over_k(
            curves, out / "finding1_psnr.png", "PSNR to unedited (dB)", "Zeroing k channels: pixel change"
        )
        table1 = [["condition", "k", "PSNR to unedited (dB)"], *_over_k_rows(curves, config.ks, ".1f")]
        not_measured.append(
            _not_measured_classifier(
                "Finding 1's prompt fidelity (objects fully correct, per attribute), its Frechet distance to renders, and so its verdict"
            )
        )
        section1 = Section(
            "Finding 1 (functionally critical): not decided",
            "Not decided: the finding is decided on prompt fidelity and the Frechet distance, which need a v2 attribute "
            "classifier (see Not measured). The table shows how far zeroing each rule's channels moves the images: PSNR "
            "to the unedited images of the same prompts and seeds (lower = further).",
            [("finding1_psnr.png", "PSNR to the unedited images over k"), grid],
            table1,
        )

    # Finding 2: K = 2 masks ---------------------------------------------------------------------
    say("finding 2: K=2 masks on generated images and on noised renders")
    rules = ["top", "bottom", "random", "all"]
    seg_parts, truth_parts = [], []
    for b, batch in enumerate(_batched(prompts, config.batch_size)):
        seg = segment_generated(
            pipe,
            SegmentConfig(
                prompts=batch,
                seeds=[BENCH_SEED + b],
                k=config.k_segment,
                rules=rules,
                generation=settings,
                compare_foregrounds=True,
            ),
            attention_positions=[subject_positions(p, world) for p in batch],
        )
        seg_parts.append(seg)
        truth_parts.append(metrics.foreground_masks(seg.images, batch))
    generated, gen_truth = SegmentResult.concatenate(seg_parts), torch.cat(truth_parts)
    rend = SegmentResult.concatenate(
        [
            renders_through_model(pipe, batch, rules, config.k_segment, config.noise_level, BENCH_SEED + b, seeds_b)
            for b, (batch, seeds_b) in enumerate(
                zip(_batched(prompts, config.batch_size), _batched(seeds, config.batch_size))
            )
        ]
    )
    rend_truth = metrics.render_masks(prompts, seeds)
    groups = background_groups(prompts, world)
    sets = {"generated": (generated, gen_truth), "renders": (rend, rend_truth)}
    header = [
        "images (count)",
        "channels",
        f"mIoU, {generated.foreground} rule (best site)",
        "oracle at that site",
        "picks the oracle's cluster",
        "ARI",
        "oracle, best site",
        "mIoU mean over sites",
    ]
    table2 = [header]
    numbers["finding2"] = {"foreground": generated.foreground, "k": config.k_segment, "image_sets": {}}
    figures = []
    for label, (result, truth) in sets.items():
        all_scores = result.scores(truth)  # every image, once; the groups select from it
        found, rows = mask_scores_table(result, truth, groups, label, config.k_segment, all_scores)
        numbers["finding2"]["image_sets"][label] = found
        table2 += rows
        for group, index in groups.items():
            if not index:
                continue
            scores = {r: sc.samples(index) for r, sc in all_scores.items()}
            name = f"finding2_miou_{label}_{group.split()[0].replace('-', '_')}.png"
            plot_miou_curves(
                {r: sc.miou.mean(-1) for r, sc in scores.items()},
                result.sites,
                out / name,
                f"{label}, {group}: k={config.k_segment}, {result.foreground} rule (solid), oracle (dotted)",
                oracle={r: sc.oracle.mean(-1) for r, sc in scores.items()},
            )
            figures.append((name, f"{label}, {group}"))
    # v1: the headline stands on one-colour backgrounds (no competing left/right split), if the prompts have any;
    # v2: on every image (each background is one colour word; the textured ones are shown apart)
    headline = "one-colour backgrounds" if groups.get("one-colour backgrounds") else "all images"
    numbers["finding2"]["headline_group"] = headline
    one = groups[headline]
    fg_numbers, fg_table = foreground_rule_table(
        {"generated": (generated, gen_truth, one), "renders": (rend, rend_truth, one)}, config.k_segment
    )
    numbers["finding2"]["foreground_rules"] = fg_numbers
    best_rule = max(fg_numbers, key=lambda fg: fg_numbers[fg]["generated"]["agreement"])
    best_site = numbers["finding2"]["image_sets"]["generated"][headline]["top"]["best_site"]
    step = generated.steps // 2
    plot_segment_overlays(generated, out / "finding2_overlays.png", best_site, step, gen_truth, max_rows=6)
    headline_sets = {f"{label}, {headline}": numbers["finding2"]["image_sets"][label][headline] for label in sets}
    verdict2 = segmentation_verdict(
        {name: {r: v["miou"] for r, v in found.items() if r != "images"} for name, found in headline_sets.items()},
        config.k_segment,
    )
    numbers["finding2"]["verdict"] = verdict2.as_dict()
    fg_text = (
        f"On {headline}, the rule that most often names the oracle's cluster on top-{config.k_segment} masks of "
        f"generated images is '{best_rule}' ({fg_numbers[best_rule]['generated']['agreement']:.3f} of images over every step and "
        f"site); ditlens' default is '{generated.foreground}' ({fg_numbers[generated.foreground]['generated']['agreement']:.3f})"
        + (
            ". The measurement agrees with the default."
            if best_rule == generated.foreground
            else f". The measurement favours '{best_rule}': the default should be reconsidered."
        )
    )
    numbers["finding2"]["foreground_choice"] = {"measured_best": best_rule, "default": generated.foreground}
    if not_measured:
        numbers["not_measured"] = not_measured
    (out / "findings.json").write_text(json.dumps(numbers, indent=1))

    if world is scenes_v1:
        groups_text = (
            f" The headline is decided on {headline}; split backgrounds (two colours, left and right) give K=2 a "
            "competing split and are reported apart below."
        )
        truth_text = (
            "Generated images' ground truth = pixels off the prompt's background colour; renders' = exact object masks."
        )
    else:
        groups_text = (
            f" The headline is decided on {headline}; plain and textured backgrounds are reported apart below (a "
            "background's pattern is a split K=2 can find instead of the objects)."
        )
        truth_text = (
            "Generated images' ground truth = pixels whose nearest colour band is an object colour's (world v2 draws every "
            "pixel on its colour word's band, and object and background bands lie apart, so textures stay background); "
            f"renders' = exact object masks (render seeds {seeds[0]} on)."
        )
    sections = [
        section1,
        Section(
            verdict2.headline,
            verdict2.sentence() + groups_text + " mIoU is the two-class (foreground/background) IoU averaged over "
            f"images, of the '{generated.foreground}' rule's labelling; the oracle takes the better labelling of each image (an "
            "upper bound that reads the ground truth); ARI, the adjusted Rand index, scores the split with no labelling at all. "
            f"{truth_text} The attention baseline labels by its own polarity (high attention to the subject's words).",
            [
                *figures,
                (
                    "finding2_overlays.png",
                    "images, truth, the top-1 channel's heat map, the masks' outlines, at the best site",
                ),
            ],
            table2,
        ),
        Section("Which K=2 cluster is the subject", fg_text, [], fg_table),
    ]
    if not_measured:
        sections.append(Section("Not measured", "; ".join(not_measured) + ".", [], None))
    intro = (
        f"{_provenance(command, started)}. {_model_sentence(model)}. {len(prompts)} held-out captions (never seen in training), "
        f"{settings.num_inference_steps or 'default'} steps; random-k over {config.random_draws} seeded draws (mean ± std)."
    )
    return write_markdown(out / "report.md", f"ditlens bench findings ({_title(model)})", intro, sections)


def _title(model: dict[str, Any]) -> str:
    return "built-in model" if model["shipped"] else f"built-in family, world {model['world']}"


# ---- finding 3 and the two uses ---------------------------------------------------------------


@dataclass
class TransportBenchConfig:
    n_pairs: int = 32  # quick: 8
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    # 2 = the truly massive ones; up to every channel (256 on the built-in model): k = 64 won the
    # earlier sweep at its edge, so the sweep now runs past it
    sweep_k: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32, 64, 128, 256])
    sweep_windows: list[tuple[int, int] | None] = field(
        default_factory=lambda: [None, (0, 2), (0, 4), (4, 8)]
    )  # of 8 steps
    sweep_sites: list[str] = field(default_factory=lambda: ["all", "double", "single"])  # block kinds
    sweep_masks: list[str] = field(default_factory=lambda: ["source", "target", "union", "all"])
    sweep_streams: list[str] = field(default_factory=lambda: ["img", "txt", "both"])  # which streams move
    # where the one-factor-at-a-time sweep starts: the paper's source mask, both streams; every
    # candidate is this with one factor changed, fixed here so that the procedure does not move
    # with the defaults it chooses (commit 953c2e1 ran its candidates this way, through the then
    # defaults, except its random-k rows: the image stream alone)
    base: TransportConfig = field(
        default_factory=lambda: TransportConfig(
            k=2,
            alpha=1.0,
            mask="source",
            streams="both",
            channels="top",
            statistic="abs_mean",
            channels_from="source",
            sites=None,
            steps=None,
        )
    )

    @classmethod
    def quick(cls) -> TransportBenchConfig:
        return cls(
            n_pairs=4,
            sweep_k=[2, 32],
            sweep_windows=[None, (0, 4)],
            sweep_sites=["all"],
            sweep_masks=["source", "all"],
            sweep_streams=["img", "both"],
        )


def transport_pairs(
    n: int, seed: int = BENCH_SEED, second_object: bool = False, world: ModuleType = scenes_v1
) -> list[tuple[str, str]]:
    """(source, target) captions: one source object; the target's first object at the same
    position and size with another shape AND colour (world v2: and texture), each caption
    with its own background. second_object: the target also has a second object elsewhere
    (another position, shape and colour, v2: texture, than its first, both at least
    MIN_VISIBLE visible), which transport should leave alone. Both captions are held out of
    training."""
    rng = np.random.default_rng(seed)
    pairs: list[tuple[str, str]] = []
    positions, sizes, shapes, colours, backgrounds = (
        world.POSITIONS,
        world.SIZES,
        world.SHAPES,
        world.COLOURS,
        world.BACKGROUNDS,
    )
    textures = getattr(world, "TEXTURES", None)  # v1 has none

    def thing(shape: int, colour: int, texture: int, size: str, position: str) -> Any:
        extra = {"texture": textures[texture]} if textures else {}
        return world.SceneObject(shape=shapes[shape], colour=colours[colour], size=size, position=position, **extra)

    def scene(objects: list[Any], background: int, texture: int) -> Any:
        if textures:
            return world.Scene(tuple(objects), backgrounds[background], textures[texture])
        return world.Scene(tuple(objects), (backgrounds[background],))

    while len(pairs) < n:
        # v1 draws exactly these, in this order (its bench pairs stay what they were); v2 adds its textures after them
        pos, size = positions[rng.integers(len(positions))], sizes[rng.integers(len(sizes))]
        s_shape, t_shape, o_shape = rng.choice(len(shapes), 3, replace=False)
        s_col, t_col, o_col = rng.choice(len(colours), 3, replace=False)
        s_bg, t_bg = rng.integers(len(backgrounds)), rng.integers(len(backgrounds))
        s_tex = t_tex = o_tex = s_bt = t_bt = 0
        if textures:
            s_tex, t_tex, o_tex = rng.choice(len(textures), 3, replace=False)
            s_bt, t_bt = rng.integers(len(textures)), rng.integers(len(textures))
        src = scene([thing(s_shape, s_col, s_tex, size, pos)], s_bg, s_bt)
        objects = [thing(t_shape, t_col, t_tex, size, pos)]
        if second_object:
            other = [q for q in positions if q != pos][rng.integers(len(positions) - 1)]
            objects.append(thing(o_shape, o_col, o_tex, sizes[rng.integers(len(sizes))], other))
        tgt = scene(objects, t_bg, t_bt)
        if (
            second_object
            and (world.render(tgt) if world is scenes_v1 else world.render(tgt, 0)).visible.min() < world.MIN_VISIBLE
        ):
            continue
        if world.is_heldout(src) and world.is_heldout(tgt):  # 1 draw in 100: cheap rejection sampling
            pairs.append((world.caption(src), world.caption(tgt)))
    return pairs


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _embedding_interpolation(pipe: Any, source: str, target: str, alphas: list[float], seed: int) -> torch.Tensor:
    """Baseline: lerp of the two prompts' text embeddings (sequence and pooled), same seed."""
    txt, vec = pipe.encode_prompt([source, target])
    a = torch.tensor(alphas, dtype=txt.dtype, device=txt.device)
    embeds = torch.lerp(txt[1:2], txt[0:1], a.view(-1, 1, 1))
    pooled = torch.lerp(vec[1:2], vec[0:1], a.view(-1, 1))
    gens = [torch.Generator().manual_seed(seed) for _ in alphas]
    out = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, generator=gens, output_type="pt")
    return out.images.float().cpu()


def _cells(m: dict[str, float], keys: list[str]) -> list[str]:
    """Table cells of `keys` in m; "—" for a score this run could not measure."""
    return [f"{m[k]:.3f}" if k in m else "—" for k in keys]


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
    metrics = metrics_of(world)
    classifier = _classifier_for(pipe, classifier)
    scored = classifier is not None
    textured = hasattr(world, "TEXTURES")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = transport_pairs(config.n_pairs, world=world)
    model = model_summary(pipe)
    numbers: dict[str, Any] = {"config": asdict(config), "model": model, "pairs": pairs}
    not_measured: list[str] = []
    if not scored:
        not_measured.append(
            _not_measured_classifier(
                "transfer (the source's colour, shape and texture at the target's slot), background kept, the other object kept, "
                "the defaults' choice (its score multiplies transfer by layout IoU and 1 - ghosting) and so Finding 3's verdict"
            )
        )

    def evaluate(
        tconfig: TransportConfig, alphas: list[float], keep_strip: bool = False, same_seed: bool = False
    ) -> tuple[dict[float, dict[str, float]], list]:
        """same_seed: the target runs from the source's noise (by default each prompt has its own seed)."""
        per_alpha: dict[float, list[dict[str, float]]] = {a: [] for a in alphas}
        strips = []
        for i, (source, target) in enumerate(pairs):
            target_seed = BENCH_SEED + i if same_seed else BENCH_SEED + 1000 + i
            r = transport_text(
                pipe, source, target, tconfig, alphas=alphas, source_seed=BENCH_SEED + i, target_seed=target_seed
            )
            for a, row in zip(alphas, metrics.transport_scores(r.transported, source, target, r.target, classifier)):
                per_alpha[a].append(row)
            if keep_strip and i < 4:
                strips.append([r.source, r.target, *r.transported])
        return {a: _mean(rows) for a, rows in per_alpha.items()}, strips

    # the transfer columns: v2 has a texture to move too
    moved = [
        "colour_from_source",
        "shape_from_source",
        *(["texture_from_source"] if textured else []),
        "both_from_source",
    ]
    moved_names = [
        "colour from source",
        "shape from source",
        *(["texture from source"] if textured else []),
        "colour+shape",
    ]

    # 1. choose the defaults: one factor at a time around the base, at alpha = 1 -----------------
    say(f"transport: choosing defaults on {len(pairs)} held-out pairs")
    sweep_rows = [["setting", *moved_names, "mask IoU with target", "background kept", "ghosting", "score"]]
    sweep: dict[str, dict[str, float]] = {}

    # transfer that keeps the composition: both matter, so their product. Transfer counts
    # colour and shape separately: requiring both at once scored every setting 0 on the
    # built-in model (docs/transport.md), leaving the choice to the candidates' order.
    score = transfer_score

    def best(results: dict[str, tuple[TransportConfig, dict[str, float]]], base_tc: TransportConfig) -> TransportConfig:
        """The candidate of the highest score; with no transfer score (no classifier), the base."""
        return max(results.values(), key=lambda v: score(v[1]))[0] if scored else base_tc

    base = config.base
    hidden = adapter_for(pipe).hidden_size
    # a model narrower than the sweep (the CPU smoke model has 32 channels) sweeps up to all of its channels
    sweep_k = list(dict.fromkeys(min(k, hidden) for k in config.sweep_k))
    if sweep_k != config.sweep_k:
        numbers["sweep_k_run"] = sweep_k
    candidates: list[tuple[str, TransportConfig]] = []
    candidates += [(f"k={k}", replace(base, k=k)) for k in sweep_k]
    results_k = {}
    for name, tc in candidates:
        say(f"  {name}")
        m = evaluate(tc, [1.0])[0][1.0]
        results_k[name] = (tc, m)
    best_k = best(results_k, base).k
    for name, (tc, m) in results_k.items():
        sweep[name] = m
    # the control of the same size: k random channels, for every k short of all of them (not a candidate)
    random_k = {}
    for k in sweep_k:
        if k < hidden:
            say(f"  random k={k}")
            random_k[k] = evaluate(replace(base, k=k, channels="random"), [1.0])[0][1.0]
            sweep[f"random k={k} (control)"] = random_k[k]
    results_w = {}
    for w in config.sweep_windows:
        name = f"window={'all' if w is None else f'[{w[0]},{w[1]})'}"
        say(f"  {name}")
        tc = replace(base, k=best_k, steps=w)
        results_w[name] = (tc, evaluate(tc, [1.0])[0][1.0])
    best_w = best(results_w, base).steps
    sweep.update({n: m for n, (tc, m) in results_w.items()})
    site_names = [s.name for s in adapter_for(pipe).sites()]
    site_sets = {
        "all": None,
        "double": tuple(n for n in site_names if n.startswith("transformer_blocks.")),
        "single": tuple(n for n in site_names if n.startswith("single_transformer_blocks.")),
    }
    results_s = {}
    for kind in config.sweep_sites:
        name = f"sites={kind}"
        say(f"  {name}")
        tc = replace(base, k=best_k, steps=best_w, sites=site_sets[kind])
        results_s[name] = (tc, evaluate(tc, [1.0])[0][1.0])
    best_sites = best(results_s, base).sites
    sweep.update({n: m for n, (tc, m) in results_s.items()})
    results_m = {}
    for mask in config.sweep_masks:
        name = f"mask={mask}"
        say(f"  {name}")
        tc = replace(base, k=best_k, mask=mask, steps=best_w, sites=best_sites)
        results_m[name] = (tc, evaluate(tc, [1.0])[0][1.0])
    best_mask = best(results_m, replace(base, k=best_k, steps=best_w, sites=best_sites))
    sweep.update({n: m for n, (tc, m) in results_m.items()})
    results_streams = {}
    for streams in config.sweep_streams:
        name = f"streams={streams}"
        say(f"  {name}")
        tc = replace(best_mask, streams=streams)
        results_streams[name] = (tc, evaluate(tc, [1.0])[0][1.0])
    chosen = best(results_streams, best_mask)
    sweep.update({n: m for n, (tc, m) in results_streams.items()})
    # not a candidate: the chosen setting with the target on the source's own noise. Copied hidden
    # states carry the source's velocity, which only fits the source's noise
    say("  same seed")
    sweep["chosen, target on the source's seed (not a candidate)"] = evaluate(chosen, [1.0], same_seed=True)[0][1.0]
    for name, m in sweep.items():
        sweep_rows.append(
            [
                name,
                *_cells(m, [*moved, "mask_iou_with_target", "background_kept", "ghosting"]),
                f"{score(m):.3f}" if scored else "—",
            ]
        )
    numbers["defaults_sweep"] = sweep
    numbers["chosen"] = {
        "k": chosen.k,
        "steps": chosen.steps,
        "mask": chosen.mask,
        "sites": chosen.sites,
        "streams": chosen.streams,
        "foreground": chosen.foreground,
        "by_measurement": scored,
    }
    past = [k for k in sweep_k if k > best_k]
    numbers["k_sweep_edge"] = {"best_k": best_k, "largest_k": max(sweep_k), "past_the_winner": past}

    # 2. strength curve with the chosen settings, against the two baselines -----------------------
    say("transport: strength curve and baselines")
    curve, strips = evaluate(chosen, config.alphas, keep_strip=True)
    emb_rows: dict[float, list] = {a: [] for a in config.alphas}
    pix_rows: dict[float, list] = {a: [] for a in config.alphas}
    for i, (source, target) in enumerate(pairs):
        target_alone = generate(pipe, [target], [BENCH_SEED + 1000 + i], GenerationSettings())[0]
        source_img = generate(pipe, [source], [BENCH_SEED + i], GenerationSettings())[0]
        emb = _embedding_interpolation(pipe, source, target, config.alphas, BENCH_SEED + 1000 + i)
        pix = torch.stack([torch.lerp(target_alone, source_img, a) for a in config.alphas])
        for a, row in zip(config.alphas, metrics.transport_scores(emb, source, target, target_alone, classifier)):
            emb_rows[a].append(row)
        for a, row in zip(config.alphas, metrics.transport_scores(pix, source, target, target_alone, classifier)):
            pix_rows[a].append(row)
    baselines = {
        "text-embedding interpolation": {a: _mean(r) for a, r in emb_rows.items()},
        "pixel blending": {a: _mean(r) for a, r in pix_rows.items()},
    }
    numbers["strength_curve"] = {"transport": curve, **baselines}
    curve_keys = [
        "both_from_source",
        "colour_from_source",
        "shape_from_source",
        *(["texture_from_source"] if textured else []),
        "mask_iou_with_target",
        "background_kept",
        "ghosting",
    ]
    curve_table = [
        [
            "method",
            "alpha",
            "colour+shape from source",
            "colour from source",
            "shape from source",
            *(["texture from source"] if textured else []),
            "mask IoU with target",
            "background kept",
            "ghosting",
        ]
    ]
    for method, table in [("massive-channel transport", curve), *baselines.items()]:
        for a, m in table.items():
            curve_table.append([method, f"{a:g}", *_cells(m, curve_keys)])
    plot_image_table(
        strips,
        out / "transport_strips.png",
        [f"pair {i}" for i in range(len(strips))],
        ["source", "target", *[f"a={a:g}" for a in config.alphas]],
    )

    # 2b. two-object targets: does the edit stay on the source's slot? ------------------------------
    say("transport: two-object targets")
    two = transport_pairs(config.n_pairs, seed=BENCH_SEED + 1, second_object=True, world=world)
    # every mask origin of the sweep, at the chosen k, window, sites and streams: which of them keep the edit local?
    transports = {
        f"massive-channel transport (mask = {mask})": replace(chosen, mask=mask) for mask in config.sweep_masks
    }
    methods = [*transports, "text-embedding interpolation", "pixel blending"]
    local: dict[str, dict[float, list]] = {m: {a: [] for a in config.alphas} for m in methods}
    two_strips, two_labels = [], []
    for i, (source, target) in enumerate(two):
        seeds = dict(source_seed=BENCH_SEED + i, target_seed=BENCH_SEED + 2000 + i)
        results = {
            name: transport_text(pipe, source, target, tc, alphas=config.alphas, **seeds)
            for name, tc in transports.items()
        }
        r = next(iter(results.values()))  # source and target alone are the same in every result
        emb = _embedding_interpolation(pipe, source, target, config.alphas, BENCH_SEED + 2000 + i)
        pix = torch.stack([torch.lerp(r.target, r.source, a) for a in config.alphas])
        images_of = {
            **{name: res.transported for name, res in results.items()},
            "text-embedding interpolation": emb,
            "pixel blending": pix,
        }
        for method, images in images_of.items():
            for a, row in zip(config.alphas, metrics.transport_scores(images, source, target, r.target, classifier)):
                local[method][a].append(row)
        if i < 2:
            for name, res in results.items():
                two_strips.append([res.source, res.target, *res.transported])
                two_labels.append(f"pair {i}" + (f" ({res.settings['mask']})" if len(results) > 1 else ""))
    numbers["two_object_targets"] = {
        "pairs": two,
        **{m: {a: _mean(rows) for a, rows in t.items()} for m, t in local.items()},
    }
    two_keys = [
        "both_from_source",
        "shape_from_source",
        *(["texture_from_source"] if textured else []),
        "others_kept",
        "mask_iou_with_target",
        "ghosting",
    ]
    two_table = [
        [
            "method",
            "alpha",
            "colour+shape from source",
            "shape from source",
            *(["texture from source"] if textured else []),
            "other object kept",
            "mask IoU with target",
            "ghosting",
        ]
    ]
    for method, table in local.items():
        for a, rows in table.items():
            two_table.append([method, f"{a:g}", *_cells(_mean(rows), two_keys)])
    plot_image_table(
        two_strips,
        out / "transport_two_object_strips.png",
        two_labels,
        ["source", "target", *[f"a={a:g}" for a in config.alphas]],
    )

    # 3. image-conditioned: renders with known attributes into new prompts -------------------------
    say("transport: image-conditioned")
    image_cond: dict[str, dict[str, float]] = {}
    img_strips = []
    references = metrics.renders([source for source, _ in pairs], render_seeds(len(pairs)))
    for path in ("renoise", "invert"):
        rows = []
        for i, (source, target) in enumerate(pairs):
            r = transport_image(
                pipe,
                references[i],
                target,
                chosen,
                reference_prompt=source,
                alphas=[1.0],
                seed=BENCH_SEED + i,
                reference_path=path,
            )
            rows += metrics.transport_scores(r.transported, source, target, r.target, classifier)
            if i < 4:
                img_strips.append([r.source, r.target, r.transported[0]])
        image_cond[path] = _mean(rows)
    numbers["image_conditioned"] = image_cond
    img_keys = [
        "both_from_source",
        "colour_from_source",
        "shape_from_source",
        *(["texture_from_source"] if textured else []),
        "mask_iou_with_target",
        "background_kept",
        "ghosting",
    ]
    img_table = [
        [
            "reference path",
            "colour+shape from reference",
            "colour from reference",
            "shape from reference",
            *(["texture from reference"] if textured else []),
            "mask IoU with target",
            "background kept",
            "ghosting",
        ]
    ]
    for path, m in image_cond.items():
        img_table.append([path, *_cells(m, img_keys)])
    n_shown = len(img_strips) // 2
    labels = [f"pair {i} ({path})" for path in ("renoise", "invert") for i in range(n_shown)]
    plot_image_table(
        img_strips, out / "transport_image_strips.png", labels, ["reference (render)", "target alone", "transported"]
    )

    window = "all steps" if chosen.steps is None else f"steps [{chosen.steps[0]}, {chosen.steps[1]})"
    edge = (
        f"The k sweep runs past its winner (k = {', '.join(map(str, past))} scored lower)."
        if past
        else f"The winner k = {best_k} is the largest value tried"
        + (" (every channel)." if best_k == hidden else "; the sweep does not show what lies beyond it.")
    )
    blocks = next(kind for kind, names in site_sets.items() if names == chosen.sites)
    setting = f"k = {chosen.k}, {window}, {blocks} blocks, mask = {chosen.mask}, streams = {chosen.streams}"
    numbers["chosen"]["blocks"] = blocks
    texture_text = (
        " World v2 objects also have a texture: 'texture from source' is the share whose object takes the source's "
        "texture too (reported beside; the score and the verdict count colour and shape, as on world v1)."
        if textured
        else ""
    )
    if scored:
        top_k = {tc.k: m for tc, m in results_k.values()}
        verdict3 = transport_verdict(
            top_k,
            random_k,
            hidden,
            curve[1.0] if 1.0 in curve else curve[max(curve)],
            setting,
            {name: table[1.0] for name, table in baselines.items() if 1.0 in table},
        )
        numbers["verdict"] = verdict3.as_dict()
        first = Section(
            verdict3.headline,
            verdict3.sentence() + " Pixel blending at alpha = 1 is the source image itself, so its "
            "transfer is an upper bound on a copy, not a method." + texture_text,
            [],
        )
        chosen_text = f"Chosen: {setting}. {edge}"
    else:
        first = Section(
            "Finding 3 (transferable): not decided",
            "Not decided: whether the object takes the source's attributes needs a v2 attribute classifier (see Not "
            "measured). The tables below still show, for every setting, how well the target's layout is kept (mask IoU "
            "with the target alone) and how much of the object region is noise (ghosting).",
            [],
        )
        chosen_text = (
            f"Not chosen: with no transfer score there is nothing to rank, so the sweep's base setting runs throughout "
            f"({setting})."
        )
    if not_measured:
        numbers["not_measured"] = not_measured
    (out / "transport.json").write_text(json.dumps(numbers, indent=1, default=str))
    sections = [
        first,
        Section(
            "Defaults chosen by measurement" if scored else "Defaults: not chosen (no transfer score)",
            f"One factor at a time at alpha = 1 (k, then the step window, then the block kinds, then the mask origin, then the "
            f"streams), scored by (mean of the shares of images whose object takes the source's colour, and its shape) x "
            f"(foreground IoU with the target alone) x (1 - ghosting): the classifier reads noise of a colour as an object of "
            f"that colour, so a noisy object must not count as a transfer. K=2 masks name the subject by the '{chosen.foreground}' rule. "
            f"{chosen_text}",
            [],
            sweep_rows,
        ),
        Section(
            "Strength curve and baselines at matched strength",
            "With the chosen settings, over alpha; text-embedding interpolation and pixel blending at the same alpha "
            "for comparison. Transfer = the object at the target's position takes the source's colour and shape "
            "(classifier); preservation = foreground IoU with the target alone and its background kept; ghosting = "
            "share of object-region pixels matching neither object colour nor the target's background"
            + (" (world v2: lying on none of their colour bands)." if textured else "."),
            [("transport_strips.png", "source, target alone, transported over alpha")],
            curve_table,
        ),
        Section(
            "Two-object targets: is the edit local?",
            f"{len(two)} more held-out pairs whose target has a second object elsewhere (another position, shape"
            f"{', colour and texture' if textured else ' and colour'}); transport under each mask origin and the two baselines over "
            "alpha. Other object kept = the classifier finds it at its position with its shape and colour"
            f"{' (not its texture: object texture is the weakest head of the v2 classifier)' if textured else ''}. "
            "The paper's claim is a localised edit: the source's meaning "
            "at its slot, the rest of the target kept.",
            [("transport_two_object_strips.png", "source, target alone, transported over alpha")],
            two_table,
        ),
        Section(
            "Image-conditioned transport (subject from a reference render)",
            "Reference = exact render of the source caption, its caption as the reference prompt, alpha = 1, the chosen "
            "settings; the reference row reaches each step's noise level either re-noised with fixed noise (renoise) "
            "or along its own Euler inversion of the flow ODE (invert). Same scoring as above.",
            [("transport_image_strips.png", "reference, target alone, transported (first rows renoise, then invert)")],
            img_table,
        ),
    ]
    if not_measured:
        sections.append(Section("Not measured", "; ".join(not_measured) + ".", [], None))
    intro = (
        f"{_provenance(command, started)}. {_model_sentence(model)}. {len(pairs)} held-out caption pairs (same position and size; "
        f"another shape{', colour and texture' if textured else ' and colour'})."
    )
    return write_markdown(out / "report.md", f"ditlens bench transport ({_title(model)})", intro, sections)


def main_command() -> str:
    return "ditlens " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ditlens") else "ditlens bench"
