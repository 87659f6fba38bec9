"""Recording: reduce each block output to per-channel statistics on the fly.

Memory is O(steps x sites x rows x channels): the hidden states themselves are never
kept unless `RecordConfig.keep_hidden` names sites. Reductions stay on the model's device
and are moved to the CPU once, when the run ends (no synchronisation per step).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..choices import DEFAULT_STATISTIC
from .channels import STATISTICS, channel_reduction, check_statistic, finish_statistic, top_k_mask
from .sites import check_site

STREAMS = ("img", "txt")


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """`save_file`, with the disk's own errors as OSError (safetensors raises its own
    SafetensorError for a full disk, which would reach the user as a traceback)."""
    from safetensors import SafetensorError

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        if "os error" not in str(err):
            raise
        import errno
        import re

        code = re.search(r"os error (\d+)", str(err))
        number = int(code.group(1)) if code else errno.EIO
        raise OSError(number, os.strerror(number), str(path)) from None


@dataclass
class RecordConfig:
    statistics: tuple[str, ...] = tuple(STATISTICS)  # all three: one pass each, ~2% of a FLUX.1 step
    # the image stream, which selection and edits use; add "txt" for analysis of the text
    # tokens (it doubles the memory: 28 steps of FLUX.1 = 59 MB for img, 118 MB for both)
    streams: tuple[str, ...] = ("img",)
    keep_hidden: tuple[str, ...] = ()  # sites whose full image tokens to keep (costly: opt in)
    keep_hidden_steps: tuple[int, ...] | None = None  # which steps of them; None = all steps
    storage_dtype: torch.dtype = torch.float32  # float16 halves memory for very large runs

    def validate(self) -> None:
        for s in self.statistics:
            check_statistic(s)
        bad = [s for s in self.streams if s not in STREAMS]
        if bad:
            raise ValueError(f"Unknown stream {bad[0]!r}. Allowed: {', '.join(STREAMS)}.")


@dataclass
class ChannelStats:
    """Per-channel statistics of one hooked run.

    `img[statistic]` is a float tensor `(steps, sites, rows, D)`; `txt[statistic]` the same
    over `txt_sites` (the blocks that carry a text stream). Rows are batch rows in call
    order, run after run (one pipeline run per seed): with classifier-free guidance,
    conditional and unconditional rows stay apart (`meta["rows_per_call"]`,
    `meta["calls_per_step"]` and `meta["runs"]` describe the layout, that of the step with
    the most calls; `ditlens.core.rows` says which row is which, and `samples(prompts)` keeps
    each sample's conditional row). Calls are never averaged together: each call's rows
    hold that call's statistics, per-token averages over that call's own tokens.

    A site that did not run in a call (SD3's skip-layer guidance calls the transformer again
    with some blocks skipped), and a call that a step did not make (that extra call runs in
    some steps only), leave NaN in those rows: absent, not zero. `ran[stream]` is the
    `(steps, sites, rows)` bool mask of the entries that were recorded; `nanmean` over rows
    averages over the calls where a site ran.
    """

    sites: list[str]
    img: dict[str, torch.Tensor]
    txt_sites: list[str] = field(default_factory=list)
    txt: dict[str, torch.Tensor] = field(default_factory=dict)
    hidden: dict[str, torch.Tensor] = field(default_factory=dict)  # site -> (kept steps, rows, N, D)
    meta: dict[str, Any] = field(default_factory=dict)
    ran: dict[str, torch.Tensor] = field(default_factory=dict)  # stream -> (steps, sites, rows) bool

    # ---- shape ---------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return next(iter(self.img.values())).shape[0]

    @property
    def num_rows(self) -> int:
        return next(iter(self.img.values())).shape[2]

    @property
    def hidden_size(self) -> int:
        return next(iter(self.img.values())).shape[3]

    def site_index(self, site: str) -> int:
        check_site(site, self.sites, known_as="Recorded sites")
        return self.sites.index(site)

    def __getitem__(self, key: tuple[str, str]) -> torch.Tensor:
        """`stats["abs_mean", site]` -> (steps, rows, D)."""
        statistic, site = key
        return self._table("img", statistic)[:, self.site_index(site)]

    def _table(self, stream: str, statistic: str) -> torch.Tensor:
        tables = self.img if stream == "img" else self.txt
        if statistic not in tables:
            raise ValueError(f"Statistic {statistic!r} was not recorded for {stream}. Recorded: {', '.join(tables)}.")
        return tables[statistic]

    # ---- derived views ---------------------------------------------------------------------
    def median(self, statistic: str = DEFAULT_STATISTIC, stream: str = "img") -> torch.Tensor:
        """The median channel, (steps, sites, rows)."""
        return self._table(stream, statistic).median(dim=-1).values

    def top_values(self, n: int = 3, statistic: str = DEFAULT_STATISTIC, stream: str = "img") -> torch.Tensor:
        """The n largest channel values, (steps, sites, rows, n), descending."""
        return self._table(stream, statistic).topk(n, dim=-1).values

    def top_k(self, k: int, statistic: str = DEFAULT_STATISTIC, stream: str = "img") -> torch.Tensor:
        """Indices of the k largest channels, (steps, sites, rows, k)."""
        return self._table(stream, statistic).topk(k, dim=-1).indices

    def top_k_mask(self, k: int, statistic: str = DEFAULT_STATISTIC, stream: str = "img") -> torch.Tensor:
        return top_k_mask(self._table(stream, statistic), k)

    def ratio_to_median(self, statistic: str = DEFAULT_STATISTIC, stream: str = "img") -> torch.Tensor:
        """Each channel over the site's median channel, (steps, sites, rows, D)."""
        table = self._table(stream, statistic)
        return table / table.median(dim=-1, keepdim=True).values.clamp(min=1e-12)

    def samples(self, prompts: int) -> ChannelStats:
        """A view with one row per sample (seed-major, then prompt order): each sample's
        conditional row. Unconditional and guidance rows are left out."""
        from .rows import RowLayout

        layout = RowLayout.of(self.meta, prompts)
        view = self.rows(layout.sample_rows())
        # laid out as one call of the conditional rows per run: samples() of the view is the view
        view.meta |= {"rows_per_call": [prompts], "calls_per_step": 1, "runs": layout.runs, "rows": "samples"}
        return view

    def rows(self, rows: list[int] | slice) -> ChannelStats:
        """A view on some batch rows (e.g. only the conditional half of a CFG batch)."""

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[:, :, rows]

        return ChannelStats(
            sites=self.sites,
            img={k: pick(v) for k, v in self.img.items()},
            txt_sites=self.txt_sites,
            txt={k: pick(v) for k, v in self.txt.items()},
            hidden={k: v[:, rows] for k, v in self.hidden.items()},
            meta=dict(self.meta),
            ran={k: v[:, :, rows] for k, v in self.ran.items()},
        )

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One safetensors file; sites and metadata travel in its JSON header."""
        path = Path(path)
        tensors = {f"img.{k}": v.contiguous() for k, v in self.img.items()}
        tensors |= {f"txt.{k}": v.contiguous() for k, v in self.txt.items()}
        tensors |= {f"hidden.{k}": v.contiguous() for k, v in self.hidden.items()}
        tensors |= {f"ran.{k}": v.contiguous() for k, v in self.ran.items()}
        # one metadata entry: safetensors writes several in an order that varies by process,
        # and the same recording must be the same bytes
        header = {
            "ditlens": json.dumps({"sites": self.sites, "txt_sites": self.txt_sites, "meta": self.meta}, sort_keys=True)
        }
        tmp = path.with_name(path.name + ".tmp")
        write_safetensors(tensors, tmp, header)
        tmp.replace(path)  # never leave a half-written file under the real name (io.outputs is a layer above)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ChannelStats:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No statistics file at {str(path)!r}.")
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        if "ditlens" in header:  # files written since one entry holds everything
            header = {key: json.dumps(value) for key, value in json.loads(header["ditlens"]).items()}
        if "sites" not in header:
            raise ValueError(f"{str(path)!r} is not a ditlens statistics file (no 'sites' in its header).")
        tensors = load_file(str(path))
        groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for key, value in tensors.items():
            group, name = key.split(".", 1)
            groups[group][name] = value
        for stream in ("img", "txt"):  # files written before `ran` existed recorded every entry
            if groups[stream] and stream not in groups["ran"]:
                groups["ran"][stream] = torch.ones(next(iter(groups[stream].values())).shape[:-1], dtype=torch.bool)
        return cls(
            sites=json.loads(header["sites"]),
            img=groups["img"],
            txt_sites=json.loads(header["txt_sites"]),
            txt=groups["txt"],
            hidden=groups["hidden"],
            meta=json.loads(header["meta"]),
            ran=groups["ran"],
        )

    def nbytes(self) -> int:
        tables = [*self.img.values(), *self.txt.values(), *self.hidden.values(), *self.ran.values()]
        return sum(t.numel() * t.element_size() for t in tables)


@dataclass
class _Call:
    """One filed transformer call: per site its reductions, its (rows, image tokens, text
    tokens) and its kept image tokens; None where the site did not run in the call."""

    run: int  # which pipeline run of the recording (a new one at each `set_timesteps`)
    step: int
    values: list[tuple[torch.Tensor | None, ...] | None]
    shapes: list[tuple[int, int, int | None] | None]
    hidden: list[torch.Tensor | None]

    @property
    def rows(self) -> int:
        return next(shape[0] for shape in self.shapes if shape is not None)

    def value(self, site: int, position: int) -> torch.Tensor | None:
        values = self.values[site]
        return None if values is None else values[position]


class Recorder:
    """Collects statistics from the site hooks of one hooked run.

    Two halves, so that `torch.compile` traces the hooks once for all steps: `reduce` (pure
    tensor work, run inside the site hook, hence inside a compiled graph) fills this call's
    slot of the site; `file` (plain Python, run from the transformer's pre-hook before the
    next call and when the results are read) moves the slots under their step. Nothing that
    changes from step to step is read inside the hook, so dynamo has nothing to re-guard.
    """

    def __init__(self, config: RecordConfig, sites: list[str]):
        config.validate()
        self.config = config
        self.sites = list(sites)
        self.slots: list[tuple[torch.Tensor | None, ...] | None] = [None] * len(sites)  # this call, per site
        self._hidden_slots: list[torch.Tensor | None] = [None] * len(sites)
        self._shapes: list[tuple[int, int, int | None]] = [(0, 0, None)] * len(sites)  # (rows, image, text tokens)
        self._keeps_hidden = [site in config.keep_hidden for site in sites]
        self._calls: list[_Call] = []

    @torch.no_grad()
    def reduce(self, index: int, img: torch.Tensor, txt: torch.Tensor | None) -> None:
        """Site `index`'s reductions of this call, in the order streams x statistics: one
        pass each; `result` finishes them into statistics, for all sites and steps at once."""
        self.slots[index] = tuple(
            None if x is None else channel_reduction(x, statistic)
            for x in (img if stream == "img" else txt for stream in self.config.streams)
            for statistic in self.config.statistics
        )
        # shapes are Python ints (no sync); kept per call, since calls may differ in length
        self._shapes[index] = (img.shape[0], img.shape[1], None if txt is None else txt.shape[1])
        if self._keeps_hidden[index]:
            self._hidden_slots[index] = img.detach()

    def file(self, step: int, run: int = 0) -> None:
        """Move the slots of the call that just ran under `step` of pipeline run `run`. An empty slot is a site
        that did not run in this call (skip-layer guidance skips blocks): absent, not an
        error. No slot at all means no call ran."""
        if all(values is None for values in self.slots):
            return
        steps = self.config.keep_hidden_steps
        keep = steps is None or step in steps
        hidden = [None if h is None or not keep else h.to(self.config.storage_dtype).cpu() for h in self._hidden_slots]
        shapes = [None if values is None else shape for values, shape in zip(self.slots, self._shapes)]
        self._calls.append(_Call(run, step, list(self.slots), shapes, hidden))
        self.slots[:] = [None] * len(self.sites)
        self._hidden_slots[:] = [None] * len(self.sites)

    def result(self, meta: dict[str, Any]) -> ChannelStats:
        """Stack everything into (steps, sites, rows, D) tables on the CPU; NaN where absent."""
        if not self._calls:
            raise RuntimeError("Nothing was recorded: the model ran no hooked block inside the context.")
        by_run_step: dict[tuple[int, int], list[_Call]] = defaultdict(list)
        for call in self._calls:
            by_run_step[(call.run, call.step)].append(call)
        steps = sorted({step for _, step in by_run_step})
        runs = sorted({run for run, _ in by_run_step})
        per_run = _layout(list(by_run_step.values()))
        layout = per_run * len(runs)  # one step's calls, run after run
        # per step, the calls along `layout`: None for a call that run did not make in that step
        by_step = {
            step: [
                calls[c] if c < len(calls) else None
                for run in runs
                for calls in [by_run_step.get((run, step), [])]
                for c in range(len(per_run))
            ]
            for step in steps
        }
        has_txt = [  # per site: did its block carry a text stream (SANA's and some last blocks do not)
            any((shape := call.shapes[i]) is not None and shape[2] is not None for call in self._calls)
            for i in range(len(self.sites))
        ]
        names = [(stream, statistic) for stream in self.config.streams for statistic in self.config.statistics]
        tables: dict[str, dict[str, torch.Tensor]] = {"img": {}, "txt": {}}
        ran: dict[str, torch.Tensor] = {}
        for stream in self.config.streams:
            sites = [i for i, has in enumerate(has_txt) if has or stream == "img"]
            if not sites:
                continue
            which = 1 if stream == "img" else 2
            cells = [(by_step[step], i) for step in steps for i in sites]  # (steps x sites): calls, site
            # (steps, sites, rows): each row's own call's token count; 0 where the site did not run
            counts = [_row_tokens([_tokens(call, i, which) for call in calls], layout) for calls, i in cells]
            tokens = torch.tensor(counts).view(len(steps), len(sites), sum(layout))
            ran[stream] = tokens > 0
            divisor: torch.Tensor | None = None
            for statistic in self.config.statistics:
                position = names.index((stream, statistic))
                per_call = [[None if call is None else call.value(i, position) for call in calls] for calls, i in cells]
                like = next(v for values in per_call for v in values if v is not None)
                if divisor is None:  # per-token averages divide by their own call's count, all in one go
                    divisor = tokens.clamp(min=1).to(like.device, torch.float32).unsqueeze(-1)
                absent = torch.full((max(layout), like.shape[-1]), float("nan"), dtype=like.dtype, device=like.device)
                table = torch.stack([_step_rows(values, layout, absent) for values in per_call])
                table = table.view(len(steps), len(sites), sum(layout), -1)
                finished = finish_statistic(table, statistic, divisor)  # type: ignore[arg-type]  # a count per row
                tables[stream][statistic] = finished.to(self.config.storage_dtype).cpu()
        return ChannelStats(
            sites=list(self.sites),
            img=tables["img"],
            txt_sites=[site for site, has in zip(self.sites, has_txt) if has] if tables["txt"] else [],
            txt=tables["txt"],
            hidden=self._kept_hidden(by_step, steps, layout),
            # the layout the tables have: per step, `runs` runs of calls of `rows_per_call` rows
            meta=meta | {"rows_per_call": per_run, "calls_per_step": len(per_run), "runs": len(runs)},
            ran={stream: mask for stream, mask in ran.items() if tables[stream]},
        )

    def _kept_hidden(
        self, by_step: dict[int, list[_Call | None]], steps: list[int], layout: list[int]
    ) -> dict[str, torch.Tensor]:
        """keep_hidden site -> (kept steps, rows, N, D), rows as in the tables (NaN where absent)."""
        kept_steps = [s for s in steps if self.config.keep_hidden_steps is None or s in self.config.keep_hidden_steps]
        hidden = {}
        for i, site in enumerate(self.sites):
            present = [h for call in self._calls if (h := call.hidden[i]) is not None]
            if not present:
                continue
            shapes = sorted({tuple(h.shape[1:]) for h in present})
            if len(shapes) > 1:
                raise ValueError(
                    f"keep_hidden site {site!r} saw tokens of shapes {shapes} (N, D) in one recording; kept tokens "
                    "stack into one tensor. Record runs of different sizes in separate ditlens.hooks(...) contexts."
                )
            absent = torch.full((max(layout), *shapes[0]), float("nan"), dtype=present[0].dtype)
            per_step = [
                _step_rows([None if call is None else call.hidden[i] for call in by_step[step]], layout, absent)
                for step in kept_steps
            ]
            hidden[site] = torch.stack(per_step)
        return hidden


def _layout(calls_by_step: list[list[_Call]]) -> list[int]:
    """Rows per call of the step with the most calls (skip-layer guidance adds a call in
    some steps only); every step's calls (of every run) must match its first ones."""
    per_step = [[call.rows for call in calls] for calls in calls_by_step]
    layout = max(per_step, key=len)
    for rows in per_step:
        if rows != layout[: len(rows)]:
            raise RuntimeError(
                f"Steps made transformer calls of different batch sizes ({rows} and {layout} rows per call); one "
                "recording lays out every step's calls alike. Record such runs in separate ditlens.hooks(...) contexts."
            )
    return layout


def _tokens(call: _Call | None, site: int, which: int) -> int:
    """The call's token count of one stream at a site (which: 1 image, 2 text); 0 if absent."""
    shape = None if call is None else call.shapes[site]
    count = None if shape is None else shape[which]
    return 0 if count is None else count


def _row_tokens(per_call: list[int], layout: list[int]) -> list[int]:
    """One step's token counts at a site, one per row along `layout`: each row's own call's
    (0 for calls the step did not make)."""
    return [n for c, rows in enumerate(layout) for n in [per_call[c] if c < len(per_call) else 0] * rows]


def _step_rows(per_call: list[torch.Tensor | None], layout: list[int], absent: torch.Tensor) -> torch.Tensor:
    """One step's rows of a site along `layout`, in call order: each call's tensor, or
    `absent` rows where it is None (the site did not run) or the step made no such call."""
    parts = []
    for c, rows in enumerate(layout):
        part = per_call[c] if c < len(per_call) else None
        parts.append(absent[:rows] if part is None else part)
    return parts[0] if len(parts) == 1 else torch.cat(parts)
