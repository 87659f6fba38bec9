"""ditlens: reveal and use massive activations inside diffusion transformers."""

from .adapters import UnsupportedModelError, adapter_for, supported_classes
from .channels import BottomK, Fixed, RandomK, Threshold, TopK
from .hooks import HookContext, hooks, run_with_cache, run_with_hooks
from .intervene import ReplaceFromRows, ScaleChannels, Scope, ZeroChannels
from .record import ChannelStats, RecordConfig

__version__ = "0.1.0"

__all__ = [
    "BottomK",
    "ChannelStats",
    "Fixed",
    "HookContext",
    "RandomK",
    "RecordConfig",
    "ReplaceFromRows",
    "ScaleChannels",
    "Scope",
    "Threshold",
    "TopK",
    "UnsupportedModelError",
    "ZeroChannels",
    "adapter_for",
    "hooks",
    "run_with_cache",
    "run_with_hooks",
    "supported_classes",
]
