"""The built-in model: procedural scenes, a small FLUX-architecture text-to-image model
trained on them, and its shipped weights.

    scenes.py, scenes_v2.py    the two procedural worlds (v1: the shipped model's), built from worlds/
    text_encoder.py            the word tokenizer and text encoder, whose vocabulary is a world's grammar
    pipeline.py                the diffusers pipeline: pixel-space flow matching, `load_builtin`
    architecture.py            a freshly initialised pipeline for a TrainConfig
    train_config.py, train.py  a training run's settings (and the v2 model ladder); the run itself
    train_samples.py           the sample grids a run writes
    examples.py                default prompts of the commands

`from ditlens.builtin import load_builtin` gives the pipeline; the model code is imported
lazily so that `ditlens.builtin.scenes` alone does not pull in diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import DEFAULT_WEIGHTS, BuiltinPipeline, BuiltinPipelineOutput, load_builtin
    from .text_encoder import BuiltinTextEncoder

_LAZY = {
    "BuiltinPipeline": "pipeline",
    "BuiltinPipelineOutput": "pipeline",
    "DEFAULT_WEIGHTS": "pipeline",
    "load_builtin": "pipeline",
    "BuiltinTextEncoder": "text_encoder",
}

__all__ = ["DEFAULT_WEIGHTS", "BuiltinPipeline", "BuiltinPipelineOutput", "BuiltinTextEncoder", "load_builtin"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
