"""The scores each capability reports, in one place: the CLI, the app, sweeps and the bench
call these, so a number means the same thing wherever it is shown.

    scorers = Scorers(builtin=True)                       # the built-in model: exact metrics
    scorers = Scorers(clip=ClipScorer.from_pretrained(p))  # any model: CLIP score and CLIP-I
    disrupt_scores(result, scorers)        # {condition: {"psnr_db", "clip_score", ...}}
    transport_scores(result, "a cat", "a dog", scorers)  # {"target alone": {...}, "a=0.5": {...}}

Names of the semantic scores, as in the literature:
- `clip_score`: CLIPScore of an image with its own prompt, 100 * max(cos, 0) (Hessel et al.).
- `clip_i_to_X`: cosine similarity of the CLIP image embeddings of an image and X (CLIP-I, as
  in DreamBooth), in [-1, 1]; 1 is the same image to CLIP.
- `clip_t_to_source` / `clip_t_to_target`: the CLIPScore of a transported image with the
  source's / the target's prompt: transport should raise the first and keep the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..generation import pixel_distances


@dataclass
class Scorers:
    """What can score a run. builtin: the built-in model's exact metrics (attribute classifier,
    renders); clip: a `ClipScorer` for the semantic scores on any model. Neither: pixel
    distances only, and `not_measured()` says what is missing."""

    builtin: bool = False
    clip: Any = None  # ditlens.metrics.clip.ClipScorer
    _classifier: Any = None

    @property
    def classifier(self):
        if self._classifier is None:
            from .classifier import AttributeClassifier

            self._classifier = AttributeClassifier.from_pretrained()
        return self._classifier

    def not_measured(self) -> list[str]:
        """One sentence per score family this run could not compute, with the reason."""
        missing = []
        if self.clip is None:
            missing.append("CLIP score and CLIP-I: no CLIP model given (--clip PATH, a local CLIPModel folder)")
        if not self.builtin:
            missing.append(
                "prompt fidelity, Frechet distance to renders and attribute transfer: they need the built-in "
                "model's exact ground truth"
            )
        return missing

    def score(self, result: Any) -> dict[str, dict[str, Any]]:
        """The scores of a capability's result, the same wherever it is shown: a
        `DisruptResult`'s per condition (`disrupt_scores`), a `TransportResult`'s per image
        (`transport_scores`, with the prompts its settings name; an uncaptioned reference
        or prompts given as embeddings have none)."""
        if hasattr(result, "baseline"):  # DisruptResult
            return disrupt_scores(result, self)
        if hasattr(result, "transported"):  # TransportResult
            settings = result.settings
            source = settings.get("source_prompt", settings.get("reference_prompt")) or None
            return transport_scores(result, source, settings.get("target_prompt") or None, self)
        raise TypeError(f"Scorers.score takes a DisruptResult or a TransportResult; got {type(result).__name__}.")


def _mean(values: torch.Tensor) -> float:
    return float(values.float().mean())


def _image_prompts(prompts: list[str], seeds: list[int]) -> list[str]:
    """The prompt of each image of a seed-major batch (images = seeds x prompts)."""
    return list(prompts) * len(seeds)


def disrupt_scores(result: Any, scorers: Scorers) -> dict[str, dict[str, Any]]:
    """Per condition (label "none", "top-4", "random-4#1", ...): the pixel distance to the
    unedited images, and where available the built-in fidelity and Frechet distance, the
    CLIP score with each image's own prompt and CLIP-I to the unedited image (means over
    images; `*_per_image` lists beside)."""
    prompts = _image_prompts(result.config.prompts, result.config.seeds)
    clip = scorers.clip
    if clip is not None:
        text = clip.text_features(prompts)
        unedited = clip.image_features(result.baseline)
    out: dict[str, dict[str, Any]] = {}
    for condition, images in result.images.items():
        row: dict[str, Any] = {"rule": condition.rule, "k": condition.k, **pixel_distances(images, result.baseline)}
        if scorers.builtin and len(images) >= 2:  # a Frechet distance needs two images at least
            from .fidelity import builtin_scores

            b = builtin_scores(images, prompts, scorers.classifier)
            row |= {"full_object_accuracy": b["full_object_accuracy"], "frechet_distance": b["frechet_distance"]}
        if clip is not None:
            features = clip.image_features(images)
            score = 100 * (features * text).sum(-1).clamp(min=0)
            similarity = (features * unedited).sum(-1)
            row |= {
                "clip_score": _mean(score),
                "clip_i_to_unedited": _mean(similarity),
                "clip_score_per_image": score.tolist(),
                "clip_i_to_unedited_per_image": similarity.tolist(),
            }
        out[condition.label] = row
    return out


#: disrupt's scores as columns: key -> short name, and its format
DISRUPT_COLUMNS = {
    "full_object_accuracy": "objects fully correct",
    "frechet_distance": "FD",
    "clip_score": "CLIP score",
    "clip_i_to_unedited": "CLIP-I to unedited",
}
DISRUPT_FORMATS = {
    "full_object_accuracy": ".2f",
    "frechet_distance": ".1f",
    "clip_score": ".2f",
    "clip_i_to_unedited": ".3f",
}
#: the scores plotted over k: key -> (axis label, title)
DISRUPT_CURVES = {
    "full_object_accuracy": ("objects fully correct", "Zeroing channels: prompt fidelity"),
    "clip_score": ("CLIP score with the prompt", "Zeroing channels: CLIP score"),
    "clip_i_to_unedited": ("CLIP-I to the unedited image", "Zeroing channels: CLIP-I to unedited"),
}


def score_curves(
    scores: dict[str, dict[str, Any]], key: str, rules: list[str]
) -> dict[str, tuple[list[int], list[float], list[float] | None]]:
    """One score over k per rule, as `plots.plot_metric_over_k` takes it: (ks, means, spreads);
    random-k is the mean over its draws with their standard deviation, the others have no
    spread. Empty when no condition has the score."""
    curves = {}
    for rule in rules:
        by_k: dict[int, list[float]] = {}
        for row in scores.values():
            if row["rule"] == rule and key in row:
                by_k.setdefault(row["k"], []).append(row[key])
        if not by_k:
            continue
        ks = sorted(by_k)
        means = [sum(by_k[k]) / len(by_k[k]) for k in ks]
        spreads = (
            [float(torch.tensor(by_k[k]).std()) if len(by_k[k]) > 1 else 0.0 for k in ks] if rule == "random" else None
        )
        curves[rule] = (ks, means, spreads)
    return curves


#: transport's scores as columns, in the order shown: key -> short name
TRANSPORT_COLUMNS = {
    "psnr_to_target_alone": "PSNR to target",
    "psnr_to_source": "PSNR to source",
    "clip_t_to_source": "CLIP-T source",
    "clip_t_to_target": "CLIP-T target",
    "clip_i_to_target_alone": "CLIP-I target",
    "clip_i_to_source": "CLIP-I source",
    "colour_from_source": "colour moved",
    "shape_from_source": "shape moved",
    "mask_iou_with_target": "layout IoU",
    "ghosting": "ghosting",
}


def transport_scores(
    result: Any, source_prompt: str | None, target_prompt: str | None, scorers: Scorers
) -> dict[str, dict[str, float]]:
    """Per image of a transport run ("target alone", then "a=ALPHA" per transported image):
    PSNR to the target alone and to the source; with a CLIP, CLIP-T to the source's and the
    target's prompts and CLIP-I to the target alone and to the source image; on the built-in
    model, attribute transfer, layout kept and ghosting. A prompt None (a reference image
    without a caption, prompts given as embeddings): no CLIP-T to it."""
    named = [("target alone", result.target)] if result.target is not None else []
    named += [(f"a={a:g}", image) for a, image in zip(result.alphas, result.transported)]
    images = torch.stack([image for _, image in named])
    rows: dict[str, dict[str, float]] = {name: {} for name, _ in named}
    for name, image in named:
        if result.target is not None:
            rows[name]["psnr_to_target_alone"] = pixel_distances(image[None], result.target[None])["psnr_db"]
        rows[name]["psnr_to_source"] = pixel_distances(image[None], result.source[None])["psnr_db"]
    clip = scorers.clip
    if clip is not None:
        features = clip.image_features(images)
        pairs = [("clip_i_to_source", clip.image_features(result.source[None]))]
        if result.target is not None:
            pairs.append(("clip_i_to_target_alone", clip.image_features(result.target[None])))
        texts = [
            (key, text)
            for key, text in (("clip_t_to_target", target_prompt), ("clip_t_to_source", source_prompt))
            if text
        ]
        pairs += [(key, clip.text_features([text])) for key, text in texts]
        for key, reference in pairs:
            cos = (features * reference).sum(-1)
            values = 100 * cos.clamp(min=0) if key.startswith("clip_t") else cos
            for (name, _), value in zip(named, values.tolist()):
                rows[name][key] = value
    if scorers.builtin and source_prompt and target_prompt and result.target is not None:
        from .fidelity import transport_scores as builtin_transport

        for (name, _), found in zip(
            named, builtin_transport(images, source_prompt, target_prompt, result.target, scorers.classifier)
        ):
            rows[name] |= found
    return rows


def load_scorers(clip_path: str | None, builtin: bool, device: str = "cpu") -> Scorers:
    """Scorers for a run: the built-in metrics where the model is the built-in one, and the
    CLIP at clip_path (a local folder) if given; a bad folder is a ValueError naming it."""
    clip = None
    if clip_path:
        from .clip import ClipScorer

        clip = ClipScorer.from_pretrained(clip_path, device=device)
    return Scorers(builtin=builtin, clip=clip)
