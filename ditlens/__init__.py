"""ditlens: reveal and use massive activations inside diffusion transformers.

The names below load on first use (PEP 562), so that `import ditlens.cli` and
`ditlens --help` do not import torch and diffusers (seconds) before they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "UnsupportedModelError": ".adapters",
    "adapter_for": ".adapters",
    "supported_classes": ".adapters",
    "BottomK": ".core.channels",
    "Fixed": ".core.channels",
    "RandomK": ".core.channels",
    "Threshold": ".core.channels",
    "TopK": ".core.channels",
    "HookContext": ".core.hooks",
    "hooks": ".core.hooks",
    "run_with_cache": ".core.hooks",
    "run_with_hooks": ".core.hooks",
    "ReplaceFromRows": ".core.intervene",
    "ScaleChannels": ".core.intervene",
    "Scope": ".core.intervene",
    "ZeroChannels": ".core.intervene",
    "ChannelStats": ".core.record",
    "RecordConfig": ".core.record",
    "PerformanceConfig": ".core.performance",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the names for type checkers and editors; at run time __getattr__ loads them
    from .adapters import UnsupportedModelError, adapter_for, supported_classes  # noqa: F401
    from .core.channels import BottomK, Fixed, RandomK, Threshold, TopK  # noqa: F401
    from .core.hooks import HookContext, hooks, run_with_cache, run_with_hooks  # noqa: F401
    from .core.intervene import ReplaceFromRows, ScaleChannels, Scope, ZeroChannels  # noqa: F401
    from .core.performance import PerformanceConfig  # noqa: F401
    from .core.record import ChannelStats, RecordConfig  # noqa: F401


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
