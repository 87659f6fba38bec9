"""`ditlens bench`: the paper's findings and uses as numbers with controls.

On the built-in model (or a model folder of its family), where exact ground truth exists:
- `findings.py`: Findings 1 and 2 (`bench_findings`);
- `transport.py`: Finding 3 and both uses, with the defaults chosen by measurement
  (`bench_transport`); `transport_report.py` words its report;
- `renders.py`: K = 2 masks of exact renders through one forward pass (Finding 2's second image set);
- `worlds.py`: what a bench draws from the model's world: held-out prompts and pairs, seeds,
  background groups, the scoring module and classifier of the world;
- `builtin_model.py`: the model folder check before loading, and what a report says about the model.

On any supported pipeline (the paper's protocol, scored by CLIP, a segmenter or given masks):
- `real_findings.py`: Findings 1 and 2 (`bench_findings_any`);
- `real_transport.py`: Finding 3 against its control and two baselines (`bench_transport_any`);
  `text_interpolation.py` is its text-embedding baseline.

Shared by both: `configs.py` (every bench's config, and the readers of the prompts and pairs
files: plain Python, no torch), `scoring.py` (the mask tables, the curves over k) and
`reports.py` (a report's first line, the model's name, the "Not measured" section).

The names below load on first use (PEP 562), like the package's own: `import ditlens.bench`
imports neither torch nor matplotlib until a bench name is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "FindingsConfig": ".configs",
    "TransportBenchConfig": ".configs",
    "ProtocolConfig": ".configs",
    "TransportProtocolConfig": ".configs",
    "read_pairs": ".configs",
    "split_subjects": ".configs",
    "bench_findings": ".findings",
    "bench_transport": ".transport",
    "renders_through_model": ".renders",
    "MODEL_FILES": ".builtin_model",
    "check_model_folder": ".builtin_model",
    "model_summary": ".builtin_model",
    "BENCH_SEED": ".worlds",
    "background_groups": ".worlds",
    "held_out_prompts": ".worlds",
    "metrics_of": ".worlds",
    "render_seeds": ".worlds",
    "subject_positions": ".worlds",
    "transport_pairs": ".worlds",
    "world_of": ".worlds",
    "foreground_rule_table": ".scoring",
    "mask_scores_table": ".scoring",
    "commit": ".reports",
    "attention_positions": ".real_findings",
    "bench_findings_any": ".real_findings",
    "run_disruption": ".real_findings",
    "run_segmentation": ".real_findings",
    "bench_transport_any": ".real_transport",
    "run_sample": ".real_transport",
    "transport_sentence": ".real_transport",
    "embedding_interpolation": ".text_interpolation",
    "interpolated_text": ".text_interpolation",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the same names for type checkers (F401: ruff cannot read __all__ = sorted(_EXPORTS))
    from .builtin_model import MODEL_FILES, check_model_folder, model_summary  # noqa: F401
    from .configs import (  # noqa: F401
        FindingsConfig,
        ProtocolConfig,
        TransportBenchConfig,
        TransportProtocolConfig,
        read_pairs,
        split_subjects,
    )
    from .findings import bench_findings  # noqa: F401
    from .real_findings import attention_positions, bench_findings_any, run_disruption, run_segmentation  # noqa: F401
    from .real_transport import bench_transport_any, run_sample, transport_sentence  # noqa: F401
    from .renders import renders_through_model  # noqa: F401
    from .reports import commit  # noqa: F401
    from .scoring import foreground_rule_table, mask_scores_table  # noqa: F401
    from .text_interpolation import embedding_interpolation, interpolated_text  # noqa: F401
    from .transport import bench_transport  # noqa: F401
    from .worlds import (  # noqa: F401
        BENCH_SEED,
        background_groups,
        held_out_prompts,
        metrics_of,
        render_seeds,
        subject_positions,
        transport_pairs,
        world_of,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
