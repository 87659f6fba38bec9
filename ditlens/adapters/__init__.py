"""One adapter per model family; `adapter_for` picks it from the transformer's class."""

from __future__ import annotations

from torch import nn

from .base import Adapter, Site, Streams, UnsupportedModelError
from .flux import FluxAdapter
from .flux2 import Flux2Adapter
from .qwenimage import QwenImageAdapter
from .sana import SanaAdapter
from .sd3 import SD3Adapter

ADAPTERS: tuple[type[Adapter], ...] = (FluxAdapter, Flux2Adapter, QwenImageAdapter, SanaAdapter, SD3Adapter)


def supported_classes() -> list[str]:
    return sorted(name for adapter in ADAPTERS for name in adapter.transformer_classes)


def adapter_for(transformer: nn.Module) -> Adapter:
    """The adapter for a diffusers transformer (or a pipeline's `.transformer`)."""
    transformer = getattr(transformer, "transformer", transformer)
    mro_names = [cls.__name__ for cls in type(transformer).__mro__]
    for adapter in ADAPTERS:
        if any(name in adapter.transformer_classes for name in mro_names):
            return adapter(transformer)
    raise UnsupportedModelError(
        f"Unsupported transformer class {type(transformer).__name__!r}. "
        f"Supported: {', '.join(supported_classes())}."
    )


__all__ = ["Adapter", "Site", "Streams", "UnsupportedModelError", "adapter_for", "supported_classes", "ADAPTERS"]
