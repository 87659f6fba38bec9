"""Which batch rows are which: the conditional, unconditional and guidance rows of each
transformer call, and the samples (seeds x prompts) they belong to.

Every capability reads its rows through this module, so that a mask, a channel ranking or
a Jaccard score is always one per sample, taken from the sample's conditional rows.

Diffusers pipelines lay classifier-free guidance out in one of two ways:
- one call per step on the concatenated batch `[uncond x P, cond x P]` (SD3, SANA and the
  built-in pipeline: `torch.cat([negative_prompt_embeds, prompt_embeds])`);
- separate calls of P rows each, the conditional one first (FLUX.1 and Qwen-Image with
  `true_cfg_scale > 1`, FLUX.2 klein's default guidance: `cache_context("cond")`, then
  `cache_context("uncond")`).
Without guidance a step is one call of the P conditional rows. SD3's skip-layer guidance
adds, in some steps, a call of the P conditional rows with some blocks skipped: a
"guidance" call, which is no sample of its own.

A recording of several pipeline runs (one per seed) stacks them run after run: the rows of
one step are `runs x sum(rows_per_call)`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

COND, UNCOND, GUIDANCE = "cond", "uncond", "guidance"


class RowLayoutError(ValueError):
    """A call's batch size fits neither guidance layout for the number of prompts."""


def call_roles(rows_per_call: Sequence[int], prompts: int) -> list[list[str]]:
    """The role of every row of each call of one step, in call order.

    A call of 2P rows is a concatenated guidance batch, unconditional half first. A call of
    P rows is the conditional call if the step has had none yet, then the unconditional one,
    then a guidance call (skip-layer guidance)."""
    if prompts < 1:
        raise ValueError(f"prompts must be >= 1; got {prompts}.")
    roles: list[list[str]] = []
    seen: set[str] = set()
    for c, rows in enumerate(rows_per_call):
        if rows == 2 * prompts:
            call = [UNCOND] * prompts + [COND] * prompts
        elif rows == prompts:
            role = COND if COND not in seen else UNCOND if UNCOND not in seen else GUIDANCE
            call = [role] * prompts
        else:
            raise RowLayoutError(
                f"Transformer call {c} of a step has {rows} rows, but {prompts} prompt(s) make {prompts} rows "
                f"(no guidance, or one call per branch) or {2 * prompts} (a concatenated [uncond, cond] batch). "
                f"Rows per call: {list(rows_per_call)}. Was the pipeline run with num_images_per_prompt > 1?"
            )
        seen.update(call)
        roles.append(call)
    return roles


@functools.lru_cache(maxsize=256)  # asked at every site of every call: the same few layouts
def conditional_slice(step_calls: tuple[int, ...], prompts: int) -> slice | None:
    """The rows of the latest call in `step_calls` (rows of this step's calls so far) that
    are the samples' conditional rows, in prompt order; None if that call holds none (an
    unconditional or guidance call)."""
    roles = call_roles(step_calls, prompts)
    first_cond = next(c for c, call in enumerate(roles) if COND in call)
    if first_cond != len(roles) - 1:
        return None
    start = roles[-1].index(COND)
    return slice(start, start + prompts)


@dataclass(frozen=True)
class RowLayout:
    """The rows of one step of a recording: `runs` pipeline runs, each making calls of
    `rows_per_call` rows, over `prompts` prompts."""

    rows_per_call: tuple[int, ...]
    prompts: int
    runs: int = 1

    @classmethod
    def of(cls, meta: dict, prompts: int) -> RowLayout:
        """From a recording's metadata (`ChannelStats.meta`)."""
        return cls(tuple(meta["rows_per_call"]), prompts, int(meta.get("runs", 1)))

    def __post_init__(self) -> None:
        call_roles(self.rows_per_call, self.prompts)  # refuse a layout that fits no guidance rule

    @property
    def rows_per_run(self) -> int:
        return sum(self.rows_per_call)

    def labels(self) -> list[dict]:
        """One entry per row of a step: its run, call, role and prompt (what the metadata says)."""
        labels = []
        for run in range(self.runs):
            for call, roles in enumerate(call_roles(self.rows_per_call, self.prompts)):
                for position, role in enumerate(roles):
                    labels.append({"run": run, "call": call, "role": role, "prompt": position % self.prompts})
        return labels

    def sample_rows(self) -> list[int]:
        """Row index of each sample's conditional row, run-major then prompt order (sample
        i = run i // prompts, prompt i % prompts): from the first call holding them."""
        roles = call_roles(self.rows_per_call, self.prompts)
        c = next(c for c, call in enumerate(roles) if COND in call)
        offset = sum(self.rows_per_call[:c]) + roles[c].index(COND)
        return [run * self.rows_per_run + offset + p for run in range(self.runs) for p in range(self.prompts)]
