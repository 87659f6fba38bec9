"""The names the CLI (`ditlens/cli/bench.py`) and `bench/inversion.py` still
import from here, where the built-in bench lived as one module. The bench is now split by
concern (see `ditlens/bench/__init__.py`); import from `ditlens.bench`. This module goes once
those two import from there."""

from .builtin_model import check_model_folder
from .configs import FindingsConfig, TransportBenchConfig
from .findings import bench_findings
from .transport import bench_transport
from .worlds import transport_pairs

__all__ = [
    "FindingsConfig",
    "TransportBenchConfig",
    "bench_findings",
    "bench_transport",
    "check_model_folder",
    "transport_pairs",
]
