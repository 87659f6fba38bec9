"""The disrupt tab: zero (or scale) the top-k channels against bottom-k and random-k controls,
with identical noise. `disrupt_view` turns a `DisruptResult` into what the tab shows (and
writes the files of `ditlens disrupt`); `disrupt_tab` lays the tab out and runs
`Explorer.disrupt` from it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..disrupt import RULES as DISRUPT_RULES
from ..disrupt import DisruptResult
from .degenerate import degenerate
from .downloads import run_files, write_json
from .inputs import parse_generation, parse_window
from .pictures import opened
from .status import result_status
from .tables import disrupt_table
from .widgets import Page

if TYPE_CHECKING:
    from .explorer import Explorer

DISRUPT_KS = (1, 2, 4, 8, 16, 32)  # choices offered; the default is the demo's small / medium / large

ABOUT = "Zero (or scale) the top-k channels against bottom-k and random-k controls, with identical noise."


@dataclass
class DisruptView:
    """What the disrupt tab shows of one run (every view: see `ditlens.app.explorer`)."""

    result: DisruptResult
    grid: Image.Image  # rows: rule, columns: k, first image
    curve: Image.Image | None  # the first score over k that this run measured (objects fully correct, CLIP score)
    table: list[list[Any]]  # per condition: PSNR to unedited and the scores of `ditlens disrupt`
    headers: list[str]
    not_measured: list[str]
    problems: list[str]
    command: str


def disrupt_view(explorer: Explorer, result: DisruptResult, out: str | Path | None) -> DisruptView:
    """The tab's scores, pictures and degenerate conditions of `result`; `out` gets the files of
    `ditlens disrupt`."""
    config = result.config
    scorers, not_measured = explorer.scorers_for(config.prompts)
    n_images = len(config.prompts) * len(config.seeds)
    if scorers.builtin and n_images < 2:  # disrupt_scores leaves them out: a Frechet distance needs two
        not_measured.insert(
            0,
            "prompt fidelity and Frechet distance: they need at least 2 images (prompts x seeds); "
            f"this run made {n_images}",
        )
    scores = scorers.score(result)
    headers, table = disrupt_table(scores)
    command = disrupt_command(explorer, result)
    with run_files(out, command) as folder:  # as `ditlens disrupt` writes them
        result.save(folder)
        curves = result.plot_curves(scores, folder)
        curve = opened(curves[0]) if curves else None  # the first score this run measured
        grid = opened(result.plot_grid(folder / "grid.png"))
        write_json(folder / "metrics.json", {"scores": scores, "not_measured": not_measured})
    problems = [
        p
        for c, images in result.images.items()
        if (p := degenerate(c.label, images, None if c.rule == "none" else result.baseline))
    ]
    return DisruptView(
        result=result,
        grid=grid,
        curve=curve,
        table=table,
        headers=headers,
        not_measured=not_measured,
        problems=problems,
        command=command,
    )


def disrupt_command(explorer: Explorer, result: DisruptResult) -> str:
    """The `ditlens disrupt` line that writes the same files."""
    config = result.config
    options = [("--ks", config.ks), ("--rules", config.rules), ("--factor", config.factor)]
    options += [("--draws", config.random_draws), ("--statistic", config.statistic)]
    options += [("--window", list(config.step_window) if config.step_window else None)]
    return explorer.command("disrupt", config.prompts, config.seeds, options, config.generation, clip=True)


def layout(page: Page) -> None:
    """The tab's inputs and outputs, under its ABOUT line, and its handlers."""
    gr, explorer = page.gr, page.explorer
    with gr.Row():
        with gr.Column(scale=1):
            # two prompts: the built-in model's fidelity and Frechet distance need two images at least
            prompts, seeds = page.prompts_box("disrupt"), page.seeds_box("disrupt")
            ks = gr.CheckboxGroup(list(DISRUPT_KS), value=[1, 4, 16], label="k")
            rules = gr.CheckboxGroup(list(DISRUPT_RULES), value=list(DISRUPT_RULES), label="channel rules")
            factor = gr.Slider(0, 2, 0, step=0.05, label="factor (0 zeroes the channels)")
            draws = gr.Slider(1, 5, 1, step=1, label="random-k draws")
            statistic = page.statistic()
            start, stop = page.window_boxes()
            steps, guidance = page.settings_boxes("disrupt")
            buttons = page.buttons("disrupt", "disrupt")
        with gr.Column(scale=3):
            status = gr.HTML(elem_id="disrupt-status")
            grid = page.picture(
                "rows: rule, columns: k (first image; random-k: first draw)", "disrupt-grid", titled=True
            )
            curve = page.picture("a score over k", "disrupt-curve", titled=True)
            table, notes, download = page.results("disrupt", "per condition: the scores of ditlens disrupt")

    def run_disrupt(v: dict, progress: Any, cancel: threading.Event) -> tuple:
        def step(i: int, n: int, label: str) -> None:
            progress((i, n), desc=f"condition {label}")

        folder = page.downloads.folder("disrupt")
        prompt_list, seed_list, settings = parse_generation(v[prompts], v[seeds], v[steps], v[guidance])
        window = parse_window(v[start], v[stop], explorer.num_steps(settings))
        edit = (v[ks], v[rules], v[factor], v[draws], v[statistic])
        view = explorer.disrupt(
            prompt_list, seed_list, *edit, settings, window, progress=step, cancel=cancel, out=folder
        )
        status = result_status(f"{len(view.table)} conditions generated.", view.problems, len(view.table), "condition")
        return (view.grid, view.curve, *page.finished(view, folder, status))

    page.wire(
        "disrupt",
        buttons,
        run_disrupt,
        (None,) * 5,
        {prompts, seeds, ks, rules, factor, draws, statistic, start, stop, steps, guidance},
        [grid, curve, table, notes, download, status],
    )
