"""The built-in model: procedural scenes, a small FLUX-architecture text-to-image model
trained on them, and its shipped weights.

`from ditlens.builtin import load_builtin` gives the pipeline; the model code is imported
lazily so that `ditlens.builtin.scenes` alone does not pull in diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
