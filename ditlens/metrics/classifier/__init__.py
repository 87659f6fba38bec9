"""Attribute classifiers for the built-in model's scenes: prompt fidelity and the Frechet
distance in their features.

World v1's (`AttributeClassifier`, shipped): a small CNN reads, for each of the five
position slots of a 32x32 scene, whether an object is there and its shape, colour and size,
plus the background colour of the left and right image halves. It is trained on renders
with light corruption (noise, colour jitter, blur, 1 px shifts) so that it also reads the
imperfect images the built-in model generates. Its penultimate features serve the Frechet
distance between generated images and renders.

    clf = AttributeClassifier.from_pretrained()
    scores = score_fidelity(clf, images, prompts)   # images (n, 3, 32, 32) in [-1, 1]

Train the shipped weights again with `python -m ditlens.metrics.classifier --train`.
World v2 (`scenes_v2.py`, 64x64 textured scenes) has its own classifier,
`AttributeClassifierV2` (it also reads texture), trained with
`python -m ditlens.metrics.classifier --train --world v2 --out FOLDER`.

The modules: `v1` and `v2` (each world's network, predictions, targets, fidelity),
`network` (the trunk they share), `training` (corruptions, training loop, accuracy),
`scoring` (FidelityScores), `frechet`, `weights` (folders), `loading` (which classifier
scores a world), `cli` (the command).
"""

from __future__ import annotations

from .cli import main
from .frechet import frechet_distance
from .loading import classifier_world, load_classifier
from .scoring import ATTRIBUTES, ATTRIBUTES_V2, IMAGE_ATTRIBUTES, FidelityScores
from .training import AugmentConfig, augment
from .v1 import (
    AttributeClassifier,
    AttributeLogits,
    ClassifierConfig,
    evaluate,
    features,
    predict_scenes,
    scene_targets,
    score_fidelity,
    train_classifier,
)
from .v2 import (
    IMAGE_HEADS_V2,
    SLOT_HEADS_V2,
    AttributeClassifierV2,
    AttributeLogitsV2,
    ClassifierV2Config,
    evaluate_v2,
    features_v2,
    logits_v2,
    predict_scenes_v2,
    scene_targets_v2,
    score_fidelity_v2,
    train_classifier_v2,
)
from .weights import DEFAULT_WEIGHTS, SHIPPED_V2, TRAIN_COMMAND, TRAIN_COMMAND_V2

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTES_V2",
    "IMAGE_ATTRIBUTES",
    "IMAGE_HEADS_V2",
    "SLOT_HEADS_V2",
    "DEFAULT_WEIGHTS",
    "SHIPPED_V2",
    "TRAIN_COMMAND",
    "TRAIN_COMMAND_V2",
    "AttributeClassifier",
    "AttributeClassifierV2",
    "AttributeLogits",
    "AttributeLogitsV2",
    "AugmentConfig",
    "ClassifierConfig",
    "ClassifierV2Config",
    "FidelityScores",
    "augment",
    "classifier_world",
    "evaluate",
    "evaluate_v2",
    "features",
    "features_v2",
    "frechet_distance",
    "load_classifier",
    "logits_v2",
    "main",
    "predict_scenes",
    "predict_scenes_v2",
    "scene_targets",
    "scene_targets_v2",
    "score_fidelity",
    "score_fidelity_v2",
    "train_classifier",
    "train_classifier_v2",
]
