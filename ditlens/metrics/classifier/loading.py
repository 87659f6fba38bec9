"""Which classifier scores a world's images: the world a classifier folder is for, and the
classifier to load for a model of a given world."""

from __future__ import annotations

import json
from pathlib import Path

from .v1 import AttributeClassifier
from .v2 import AttributeClassifierV2
from .weights import DEFAULT_WEIGHTS, SHIPPED_V2, TRAIN_COMMAND, TRAIN_COMMAND_V2, check_folder


def classifier_world(path: str | Path) -> str:
    """The world ("v1" or "v2") of the classifier folder at `path`, read from its config.json
    without loading weights (the shipped v1 config names no world)."""
    check_folder(Path(path), f"`{TRAIN_COMMAND}` (world v1) or `{TRAIN_COMMAND_V2}`")
    config_file = Path(path) / "config.json"
    try:
        values = json.loads(config_file.read_text())
    except ValueError as err:
        raise ValueError(f"Cannot read {str(config_file)!r} ({err}); is {str(path)!r} a classifier folder?") from None
    world = values.get("world", "v1") if isinstance(values, dict) else None
    if world not in ("v1", "v2"):
        raise ValueError(f"{str(config_file)!r} names world {world!r}; a classifier is for world v1 or v2")
    return world


def load_classifier(path: str | Path | None, world: str) -> AttributeClassifier | AttributeClassifierV2 | None:
    """The attribute classifier that scores a world's images: the folder at `path` (its world
    must be `world`; "shipped": the package's classifier of that world), else the shipped one
    for v1 and None for v2 (a v2 classifier is always asked for: its texture head is weak)."""
    if path is None:
        return AttributeClassifier.from_pretrained() if world == "v1" else None
    if str(path) == "shipped":  # the package's own classifier of the world
        path = DEFAULT_WEIGHTS if world == "v1" else SHIPPED_V2
    found = classifier_world(path)
    if found != world:
        raise ValueError(
            f"The classifier at {str(path)!r} is for world {found}, but the model is of world {world}; give a "
            f"world {world} classifier"
            + (f" (`{TRAIN_COMMAND_V2}`)" if world == "v2" else " (or leave it out for the shipped one)")
        )
    return AttributeClassifier.from_pretrained(path) if world == "v1" else AttributeClassifierV2.from_pretrained(path)
