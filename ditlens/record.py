"""Recording: reduce each block output to per-channel statistics on the fly.

Memory is O(steps x sites x rows x channels): the hidden states themselves are never
kept unless `RecordConfig.keep_hidden` names sites. Reductions stay on the model's device
and are moved to the CPU once, when the run ends (no synchronisation per step).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .channels import STATISTICS, channel_reduction, check_statistic, finish_statistic, top_k_mask

STREAMS = ("img", "txt")


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
    order: with classifier-free guidance, conditional and unconditional rows stay apart
    (`meta["rows_per_call"]` and `meta["calls_per_step"]` describe the layout).
    """

    sites: list[str]
    img: dict[str, torch.Tensor]
    txt_sites: list[str] = field(default_factory=list)
    txt: dict[str, torch.Tensor] = field(default_factory=dict)
    hidden: dict[str, torch.Tensor] = field(default_factory=dict)  # site -> (kept steps, rows, N, D)
    meta: dict[str, Any] = field(default_factory=dict)

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
        if site not in self.sites:
            raise ValueError(f"Unknown site {site!r}. Recorded sites: {', '.join(self.sites)}.")
        return self.sites.index(site)

    def __getitem__(self, key: tuple[str, str]) -> torch.Tensor:
        """`stats["abs_mean", "transformer_blocks.3"]` -> (steps, rows, D)."""
        statistic, site = key
        return self._table("img", statistic)[:, self.site_index(site)]

    def _table(self, stream: str, statistic: str) -> torch.Tensor:
        tables = self.img if stream == "img" else self.txt
        if statistic not in tables:
            raise ValueError(f"Statistic {statistic!r} was not recorded for {stream}. Recorded: {', '.join(tables)}.")
        return tables[statistic]

    # ---- derived views ---------------------------------------------------------------------
    def median(self, statistic: str = "abs_mean", stream: str = "img") -> torch.Tensor:
        """The median channel, (steps, sites, rows)."""
        return self._table(stream, statistic).median(dim=-1).values

    def top_values(self, n: int = 3, statistic: str = "abs_mean", stream: str = "img") -> torch.Tensor:
        """The n largest channel values, (steps, sites, rows, n), descending."""
        return self._table(stream, statistic).topk(n, dim=-1).values

    def top_k(self, k: int, statistic: str = "abs_mean", stream: str = "img") -> torch.Tensor:
        """Indices of the k largest channels, (steps, sites, rows, k)."""
        return self._table(stream, statistic).topk(k, dim=-1).indices

    def top_k_mask(self, k: int, statistic: str = "abs_mean", stream: str = "img") -> torch.Tensor:
        return top_k_mask(self._table(stream, statistic), k)

    def ratio_to_median(self, statistic: str = "abs_mean", stream: str = "img") -> torch.Tensor:
        """Each channel over the site's median channel, (steps, sites, rows, D)."""
        table = self._table(stream, statistic)
        return table / table.median(dim=-1, keepdim=True).values.clamp(min=1e-12)

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
        )

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One safetensors file; sites and metadata travel in its JSON header."""
        path = Path(path)
        tensors = {f"img.{k}": v.contiguous() for k, v in self.img.items()}
        tensors |= {f"txt.{k}": v.contiguous() for k, v in self.txt.items()}
        tensors |= {f"hidden.{k}": v.contiguous() for k, v in self.hidden.items()}
        header = {"sites": json.dumps(self.sites), "txt_sites": json.dumps(self.txt_sites), "meta": json.dumps(self.meta)}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=header)
        tmp.replace(path)  # never leave a half-written file under the real name
        return path

    @classmethod
    def load(cls, path: str | Path) -> ChannelStats:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No statistics file at {str(path)!r}.")
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        if "sites" not in header:
            raise ValueError(f"{str(path)!r} is not a ditlens statistics file (no 'sites' in its header).")
        tensors = load_file(str(path))
        groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for key, value in tensors.items():
            group, name = key.split(".", 1)
            groups[group][name] = value
        return cls(
            sites=json.loads(header["sites"]),
            img=groups["img"],
            txt_sites=json.loads(header["txt_sites"]),
            txt=groups["txt"],
            hidden=groups["hidden"],
            meta=json.loads(header["meta"]),
        )

    def nbytes(self) -> int:
        tables = [*self.img.values(), *self.txt.values(), *self.hidden.values()]
        return sum(t.numel() * t.element_size() for t in tables)


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
        self._tokens: list[tuple[int, int | None]] = [(0, None)] * len(sites)  # (image, text) tokens per site
        self._keeps_hidden = [site in config.keep_hidden for site in sites]
        self._calls: list[tuple[int, list[tuple[torch.Tensor | None, ...]]]] = []  # (step, per-site values)
        self._hidden: dict[tuple[int, str], list[torch.Tensor]] = defaultdict(list)

    @torch.no_grad()
    def reduce(self, index: int, img: torch.Tensor, txt: torch.Tensor | None) -> None:
        """Site `index`'s reductions of this call, in the order streams x statistics: one
        pass each; `result` finishes them into statistics, for all sites and steps at once."""
        streams = {"img": img, "txt": txt}
        self.slots[index] = tuple(
            None if streams[stream] is None else channel_reduction(streams[stream], statistic)
            for stream in self.config.streams
            for statistic in self.config.statistics
        )
        self._tokens[index] = (img.shape[1], None if txt is None else txt.shape[1])
        if self._keeps_hidden[index]:
            self._hidden_slots[index] = img.detach()

    def file(self, step: int) -> None:
        """Move the slots of the call that just ran under `step`; empty slots mean no call ran."""
        if all(values is None for values in self.slots):
            return
        missing = [site for site, values in zip(self.sites, self.slots) if values is None]
        if missing:
            raise RuntimeError(f"Site {missing[0]!r} did not run in the last transformer call; every hooked site must.")
        self._calls.append((step, list(self.slots)))  # type: ignore[arg-type]
        steps = self.config.keep_hidden_steps
        for site, hidden in zip(self.sites, self._hidden_slots):
            if hidden is not None and (steps is None or step in steps):
                self._hidden[(step, site)].append(hidden.to(self.config.storage_dtype).cpu())
        self.slots[:] = [None] * len(self.sites)
        self._hidden_slots[:] = [None] * len(self.sites)

    def result(self, meta: dict[str, Any]) -> ChannelStats:
        """Stack everything into (steps, sites, rows, D) tables on the CPU."""
        if not self._calls:
            raise RuntimeError("Nothing was recorded: the model ran no hooked block inside the context.")
        steps = sorted({step for step, _ in self._calls})
        by_step: dict[int, list[list[tuple[torch.Tensor | None, ...]]]] = defaultdict(list)
        for step, values in self._calls:
            by_step[step].append(values)
        names = [(stream, statistic) for stream in self.config.streams for statistic in self.config.statistics]
        has_txt = [  # per site: did its block carry a text stream (SANA's and some last blocks do not)
            any(value is not None for (stream, _), value in zip(names, values) if stream == "txt")
            for values in self._calls[0][1]
        ]
        txt_sites = [site for site, has in zip(self.sites, has_txt) if has]
        tables: dict[str, dict[str, torch.Tensor]] = {"img": {}, "txt": {}}
        for position, (stream, statistic) in enumerate(names):
            sites = [i for i, has in enumerate(has_txt) if has or stream == "img"]
            if not sites:
                continue
            per_site_step = [_rows([call[i][position] for call in by_step[step]]) for step in steps for i in sites]
            table = torch.stack(per_site_step).view(len(steps), len(sites), *per_site_step[0].shape)
            n_tokens = self._tokens[sites[0]][0 if stream == "img" else 1]
            finished = finish_statistic(table, statistic, n_tokens).to(self.config.storage_dtype)
            tables[stream][statistic] = finished.cpu()
        hidden = {}
        for site in self.config.keep_hidden:
            kept = [torch.cat(self._hidden[(step, site)]) for step in steps if (step, site) in self._hidden]
            if kept:
                hidden[site] = torch.stack(kept)  # (kept steps, rows, N, D)
        return ChannelStats(
            sites=list(self.sites),
            img=tables["img"],
            txt_sites=txt_sites if tables["txt"] else [],
            txt=tables["txt"],
            hidden=hidden,
            meta=meta,
        )


def _rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """One step's rows of a site: the calls of that step, in call order."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)
