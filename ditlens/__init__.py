"""ditlens: reveal and use massive activations inside diffusion transformers.

The names below load on first use (PEP 562), so that `import ditlens.cli` and
`ditlens --help` do not import torch and diffusers (seconds) before they are needed.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "UnsupportedModelError": ".adapters",
    "adapter_for": ".adapters",
    "supported_classes": ".adapters",
    "BottomK": ".channels",
    "Fixed": ".channels",
    "RandomK": ".channels",
    "Threshold": ".channels",
    "TopK": ".channels",
    "HookContext": ".hooks",
    "hooks": ".hooks",
    "run_with_cache": ".hooks",
    "run_with_hooks": ".hooks",
    "ReplaceFromRows": ".intervene",
    "ScaleChannels": ".intervene",
    "Scope": ".intervene",
    "ZeroChannels": ".intervene",
    "ChannelStats": ".record",
    "RecordConfig": ".record",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .adapters import UnsupportedModelError, adapter_for, supported_classes
    from .channels import BottomK, Fixed, RandomK, Threshold, TopK
    from .hooks import HookContext, hooks, run_with_cache, run_with_hooks
    from .intervene import ReplaceFromRows, ScaleChannels, Scope, ZeroChannels
    from .record import ChannelStats, RecordConfig


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ditlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """`ditlens.hooks` is the function, as with an eager `from .hooks import hooks`: when the
    submodule of the same name loads, the import system binds the module on the package;
    this keeps the public function there instead (`sys.modules["ditlens.hooks"]` is the module)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == f".{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
