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

from .channels import STATISTICS, channel_statistic, check_statistic, top_k_mask

STREAMS = ("img", "txt")


@dataclass
class RecordConfig:
    statistics: tuple[str, ...] = tuple(STATISTICS)  # all three: cheap next to the block itself
    streams: tuple[str, ...] = STREAMS  # text too, for analysis; selection and edits use img
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
    """Collects statistics from the site hooks of one hooked run."""

    def __init__(self, config: RecordConfig):
        config.validate()
        self.config = config
        # (stream, statistic, step, site) -> list of (rows_in_call, D) tensors, in call order
        self._parts: dict[tuple[str, str, int, str], list[torch.Tensor]] = defaultdict(list)
        self._hidden: dict[tuple[int, str], list[torch.Tensor]] = defaultdict(list)
        self._site_order: list[str] = []
        self._txt_sites: list[str] = []

    @torch.no_grad()
    def observe(self, site: str, step: int, img: torch.Tensor, txt: torch.Tensor | None) -> None:
        if site not in self._site_order:
            self._site_order.append(site)
        streams = {"img": img, "txt": txt}
        for stream in self.config.streams:
            x = streams[stream]
            if x is None:
                continue
            if stream == "txt" and site not in self._txt_sites:
                self._txt_sites.append(site)
            magnitude = x.abs() if {"mean_abs", "max_abs"} <= set(self.config.statistics) else None  # one copy for both
            for statistic in self.config.statistics:
                if magnitude is not None and statistic == "mean_abs":
                    value = magnitude.mean(dim=1, dtype=torch.float32)
                elif magnitude is not None and statistic == "max_abs":
                    value = magnitude.amax(dim=1).float()
                else:
                    value = channel_statistic(x, statistic)
                self._parts[(stream, statistic, step, site)].append(value.to(self.config.storage_dtype))
        steps = self.config.keep_hidden_steps
        if site in self.config.keep_hidden and (steps is None or step in steps):
            self._hidden[(step, site)].append(img.detach().to(self.config.storage_dtype).cpu())

    def result(self, meta: dict[str, Any]) -> ChannelStats:
        """Stack everything into (steps, sites, rows, D) tables on the CPU."""
        if not self._parts:
            raise RuntimeError("Nothing was recorded: the model ran no hooked block inside the context.")
        steps = sorted({key[2] for key in self._parts})
        tables: dict[str, dict[str, torch.Tensor]] = {"img": {}, "txt": {}}
        for stream, sites in (("img", self._site_order), ("txt", self._txt_sites)):
            if stream not in self.config.streams or not sites:
                continue
            for statistic in self.config.statistics:
                per_step = []
                for step in steps:
                    per_site = [torch.cat(self._parts[(stream, statistic, step, site)], dim=0) for site in sites]
                    per_step.append(torch.stack(per_site))
                tables[stream][statistic] = torch.stack(per_step).cpu()
        hidden = {}
        for site in self.config.keep_hidden:
            kept = [torch.cat(self._hidden[(step, site)]) for step in steps if (step, site) in self._hidden]
            if kept:
                hidden[site] = torch.stack(kept)  # (kept steps, rows, N, D)
        return ChannelStats(
            sites=list(self._site_order),
            img=tables["img"],
            txt_sites=list(self._txt_sites) if tables["txt"] else [],
            txt=tables["txt"],
            hidden=hidden,
            meta=meta,
        )
