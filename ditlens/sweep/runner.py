"""Running items on one loaded pipeline: each job setting checked against the model first, then
one item at a time through its capability (find_channels, the disrupt hooks, segment_generated,
transport_text), its files written into the item's folder and its scalar metrics returned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..generation import GenerationSettings
from .config import SweepConfig
from .jobs import JOBS
from .plan import Item, job_settings
from .store import CLIP_FEATURES, save_png, write_item
from .text import SweepConfigError


class Runner:
    """Runs items on one loaded pipeline; one per process."""

    def __init__(self, config: SweepConfig, pipe: Any, device: str):
        from ..adapters import adapter_for

        self.config, self.pipe, self.device = config, pipe, device
        self.adapter = adapter_for(pipe)
        g = config.generation
        self.generation = GenerationSettings(g.get("steps"), g.get("guidance"), g.get("height"), g.get("width"))
        self.embeds: dict[str, torch.Tensor] | None = None
        if config.model.embeds is not None:
            from safetensors.torch import load_file

            self.embeds = load_file(str(config.model.embeds), device=device)
        self._classifier: Any = None  # the built-in model's attribute classifier, loaded on first use
        self.clip: Any = None  # a ClipScorer when the config names a CLIP folder
        if config.clip is not None:
            from ..metrics.clip import ClipScorer

            self.clip = ClipScorer.from_pretrained(config.clip, device=device)

    def rows(self, rows: list[int]) -> dict[str, torch.Tensor] | None:
        """Embeddings for these prompt rows (a batch), or None when prompts are text."""
        if self.embeds is None:
            return None
        index = torch.tensor(rows, device=next(iter(self.embeds.values())).device)
        return {key: t.index_select(0, index) for key, t in self.embeds.items()}

    def target_prompt(self, target: str | int) -> tuple[str, int]:
        """A transport target's prompt and embeddings row (-1: a text prompt)."""
        return (self.config.prompts[target], target) if isinstance(target, int) else (target, -1)

    @property
    def classifier(self) -> Any:
        if self._classifier is None:
            from ..metrics.classifier import AttributeClassifier

            self._classifier = AttributeClassifier.from_pretrained()
        return self._classifier

    # ---- before any item: every distinct job setting against the model -----------------------

    def validate(self) -> None:
        """Check every distinct job setting against the model, before any item runs or anything is written."""
        self.generation.validate()
        checked: set[str] = set()
        for j, job in enumerate(self.config.jobs):
            for settings in job_settings(job):
                key = json.dumps([j, settings], sort_keys=True)
                if key in checked:
                    continue
                checked.add(key)
                try:
                    self._check(job["command"], settings)
                except ValueError as err:
                    raise SweepConfigError(f"{self.config.where(j)}: {err}") from None

    def _check(self, command: str, settings: dict[str, Any]) -> None:
        """k against the hidden size, sites against the model's blocks, windows against the steps."""
        from ..core.intervene import Scope

        if command == "disrupt" and settings["rule"] == "none":
            return  # the unedited baseline: nothing to check
        hidden, sites = self.adapter.hidden_size, [s.name for s in self.adapter.sites()]
        num_steps = self.generation.num_inference_steps
        config = JOBS[command].build(settings, self.generation)
        if command == "segment":
            config.validate(hidden)
        elif command == "transport":
            config.validate(hidden, sites, num_steps)
            if settings["mask_image"]:
                self._mask(settings["mask_image"])
        else:
            config.validate(hidden, sites)
        if command == "disrupt":  # DisruptConfig knows no schedule: the window against this one
            Scope(step_window=config.step_window).validate(sites, num_steps)

    def _mask(self, path: str) -> torch.Tensor:
        from ..generation import image_size
        from ..io.images import load_mask

        return load_mask(path, image_size(self.pipe, self.generation))

    # ---- one item per command: write its files into `out`, return its scalar metrics ----------

    def run(self, item: Item, items_dir: Path, identity: dict[str, Any]) -> None:
        """Run one item into a temporary folder and rename it into place when sealed."""
        commands = {"find": self.find, "disrupt": self.disrupt, "segment": self.segment, "transport": self.transport}
        write_item(items_dir, item, identity, lambda out: commands[item.command](item, out))

    def find(self, item: Item, out: Path) -> dict[str, Any]:
        from ..core.checks import check_finite
        from ..find import find_channels

        config = JOBS["find"].build(item.settings, self.generation, item.prompt, item.seed)
        result = find_channels(self.pipe, config, prompt_kwargs=self.rows([item.row]))
        for stat, table in result.samples.img.items():  # the sample's conditional row: no absent (NaN) entries
            check_finite(table, f"the recorded {stat} statistics of item {item.id}")
        summary = result.summary()
        (out / "channels.json").write_text(json.dumps(summary, indent=1) + "\n")
        result.images[0].save(out / "image.png", format="PNG")
        if item.settings["stats"]:
            result.stats.save(out / "stats.safetensors")
        sites = summary["sites"].values()
        return {
            "top_ratio_to_median": mean([info["ratio_to_median"][0] for info in sites]),
            "jaccard_across_steps": mean(
                [info["jaccard_across_steps"] for info in sites if info["jaccard_across_steps"] is not None]
            ),
        }

    def disrupt(self, item: Item, out: Path) -> dict[str, Any]:
        from ..core.checks import FiniteCheck, check_finite
        from ..core.hooks import hooks
        from ..disrupt import Condition, edit_for
        from ..generation import generate

        s = item.settings
        edits = []
        if s["rule"] != "none":  # the unedited baseline runs without an edit
            config = JOBS["disrupt"].build(s, self.generation, item.prompt, item.seed)
            edits = edit_for(Condition(s["rule"], s["k"], s["draw"]), config)
        with hooks(self.pipe, edits=edits, observers=[FiniteCheck()]):
            images = generate(self.pipe, [item.prompt], [item.seed], self.generation, self.rows([item.row]))
        check_finite(images, f"the image of item {item.id}")
        save_png(images[0], out / "image.png")
        metrics = {}
        if self.clip is not None:  # the embedding is kept: merge scores CLIP-I to the unedited item without a CLIP
            from safetensors.torch import save_file

            features = self.clip.image_features(images)
            save_file({"image": features[0].contiguous()}, str(out / CLIP_FEATURES))
            metrics["clip_score"] = float(
                100 * (features * self.clip.text_features([item.prompt])).sum(-1).clamp(min=0)[0]
            )
        if self.config.model.is_builtin:
            from ..metrics.fidelity import objects_fully_correct

            metrics["objects_fully_correct"] = float(objects_fully_correct(images, [item.prompt], self.classifier)[0])
        return metrics

    def segment(self, item: Item, out: Path) -> dict[str, Any]:
        from ..core.checks import check_finite
        from ..segment import segment_generated

        config = JOBS["segment"].build(item.settings, self.generation, item.prompt, item.seed)
        result = segment_generated(self.pipe, config, prompt_kwargs=self.rows([item.row]))
        images = result.images
        assert images is not None  # segment_generated keeps the images it generated
        check_finite(images, f"the image of item {item.id}")
        truth = None
        if self.config.model.is_builtin:
            from ..metrics.fidelity import off_background_masks

            truth = off_background_masks(images, [item.prompt])
        result.save(out, truth)
        save_png(images[0], out / "image.png")
        if truth is None:
            return {f"foreground_{rule}": float(m.float().mean()) for rule, m in result.masks.items()}
        metrics: dict[str, Any] = {}
        for rule, scores in result.scores(truth).items():
            curves = scores.per_site()
            best = int(curves["miou"].argmax())
            metrics |= {
                f"miou_best_{rule}": float(curves["miou"][best]),
                f"oracle_at_best_{rule}": float(curves["oracle"][best]),
            }
        return metrics

    def transport(self, item: Item, out: Path) -> dict[str, Any]:
        from ..core.checks import check_finite
        from ..metrics.scores import Scorers, transport_scores
        from ..transport import transport_text

        s = item.settings
        target, target_row = self.target_prompt(s["target"])
        result = transport_text(
            self.pipe,
            item.prompt,
            target,
            JOBS["transport"].build(s, self.generation),
            source_seed=item.seed,
            target_seed=item.seed if s["target_seed"] is None else s["target_seed"],
            mask_image=self._mask(s["mask_image"]).float() if s["mask_image"] else None,
            prompt_embeds=self.rows([item.row, target_row, target_row]),
        )
        for name, images in (("source", result.source), ("target", result.target), ("transported", result.transported)):
            assert images is not None  # transport_text keeps the target alone (include_target)
            check_finite(images, f"the {name} image of item {item.id}")
        result.save(out)
        builtin = self._attribute_scores(item.prompt, target)
        scorers = Scorers(builtin=builtin, clip=self.clip, _classifier=self._classifier)
        if self.embeds is not None:  # rows have no text to score against
            return transport_scores(result, None, None, scorers)[f"a={s['alpha']:g}"]
        return transport_scores(result, item.prompt, target, scorers)[f"a={s['alpha']:g}"]

    def _attribute_scores(self, source: str, target: str) -> bool:
        """The built-in model's attribute scores read one object's slot: single-object captions only."""
        if not self.config.model.is_builtin:
            return False
        from ..builtin.scenes import parse_caption

        return len(parse_caption(source).objects) == 1 and len(parse_caption(target).objects) == 1


def mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")
