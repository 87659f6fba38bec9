"""One adapter per model family; `adapter_for` picks it from the transformer's class."""

from __future__ import annotations

from torch import nn

from .base import Adapter, ExtraImageTokensError, Site, Streams, UnsupportedModelError
from .flux import FluxAdapter
from .flux2 import Flux2Adapter
from .qwenimage import QwenImageAdapter
from .sana import SanaAdapter
from .sd3 import SD3Adapter

ADAPTERS: tuple[type[Adapter], ...] = (FluxAdapter, Flux2Adapter, QwenImageAdapter, SanaAdapter, SD3Adapter)


def supported_classes() -> list[str]:
    return sorted(name for adapter in ADAPTERS for name in adapter.transformer_classes)


def adapter_class(transformer_mro: list[str], pipeline_class: str | None = None) -> type[Adapter]:
    """The adapter for a transformer whose class and bases are named `transformer_mro`,
    inside a pipeline of class `pipeline_class` (None: a bare transformer). By names only,
    so that a model can be refused before its weights load."""
    for adapter in ADAPTERS:
        if any(name in adapter.transformer_classes for name in transformer_mro):
            if pipeline_class in adapter.refused_pipelines:
                raise UnsupportedModelError(
                    f"Unsupported pipeline {pipeline_class!r}: {adapter.refused_pipelines[pipeline_class]}. "
                    f"Use the family's text-to-image pipeline."
                )
            return adapter
    raise UnsupportedModelError(
        f"Unsupported transformer class {transformer_mro[0]!r}. Supported: {', '.join(supported_classes())}."
    )


def adapter_for(transformer: nn.Module) -> Adapter:
    """The adapter for a diffusers transformer (or a pipeline's `.transformer`)."""
    pipeline_class = type(transformer).__name__ if hasattr(transformer, "transformer") else None
    transformer = getattr(transformer, "transformer", transformer)
    adapter = adapter_class([cls.__name__ for cls in type(transformer).__mro__], pipeline_class)
    return adapter(transformer)


__all__ = [
    "Adapter",
    "ExtraImageTokensError",
    "Site",
    "Streams",
    "UnsupportedModelError",
    "adapter_class",
    "adapter_for",
    "supported_classes",
    "ADAPTERS",
]
