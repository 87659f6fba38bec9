"""The find tab: record the channel statistics of every site and step and find the massive
channels. `find_view` turns a `FindResult` into what the tab shows (and writes the files of
`ditlens find`); `find_tab` lays the tab out and runs `Explorer.find` from it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from ..find import FindResult
from ..generation import GenerationSettings
from ..reporting.plots import image_grid, plot_channel_atlas, plot_magnitude_surface, plot_top_vs_median
from .degenerate import degenerate_images
from .downloads import run_files
from .inputs import parse_generation
from .pictures import DISPLAY_PIXELS, as_tensor, opened
from .status import result_status
from .tables import FIND_HEADERS, find_table
from .widgets import Page

if TYPE_CHECKING:
    from .explorer import Explorer

MAX_MARKED = 8  # top channels marked on the magnitude surface: more labels would cover the walls

ABOUT = "Record the channel statistics of every site and step and find the massive channels."


@dataclass
class FindView:
    """What the find tab shows of one run (every view: see `ditlens.app.explorer`)."""

    result: FindResult
    images: Image.Image  # the generated images, one row per seed
    top_vs_median: Image.Image
    atlas: Image.Image
    surface: Image.Image | None
    surface_step: int
    marked: list[int]  # the channels marked on the surface: the top-k there (at most MAX_MARKED)
    table: list[list[Any]]  # per site: top channels, ratio to median, stability, as `ditlens find` prints them
    problems: list[str]
    command: str
    headers: list[str] = field(default_factory=lambda: list(FIND_HEADERS))


def find_view(explorer: Explorer, result: FindResult, settings: GenerationSettings, out: str | Path | None) -> FindView:
    """The tab's pictures, table and degenerate images of `result`; `out` gets the files of `ditlens find`."""
    config, summary = result.config, result.summary()
    site = result.stats.meta["surface_site"]
    marked = (summary["sites"][site]["top_k_per_step_first_sample"][config.surface_step] or [])[:MAX_MARKED]
    command = find_command(explorer, result, settings)
    with run_files(out, command) as folder:  # as `ditlens find` writes them
        result.save(folder)
        top_vs_median, atlas, surface, images = _find_pictures(result, folder, marked)
    generated = torch.stack([as_tensor(image) for image in result.images])
    return FindView(
        result=result,
        images=images,
        top_vs_median=top_vs_median,
        atlas=atlas,
        surface=surface,
        surface_step=config.surface_step,
        marked=marked,
        table=find_table(summary),
        problems=degenerate_images(generated, config.prompts, config.seeds),
        command=command,
    )


def find_command(explorer: Explorer, result: FindResult, settings: GenerationSettings) -> str:
    """The `ditlens find` line that writes the same files."""
    config, site = result.config, result.stats.meta["surface_site"]
    options = [("--k", config.k), ("--statistic", config.statistic), ("--site", site), ("--step", config.surface_step)]
    return explorer.command("find", config.prompts, config.seeds, options, settings)


def _find_pictures(
    result: FindResult, folder: Path, marked: list[int]
) -> tuple[Image.Image, Image.Image, Image.Image | None, Image.Image]:
    """The plots of `ditlens find`, written into `folder` and opened: top channels vs the median,
    the channel atlas, the surface (where there is one; it marks `marked`) and the images."""
    statistic, site = result.config.statistic, result.stats.meta["surface_site"]
    top_vs_median = opened(plot_top_vs_median(result.samples, folder / "top_vs_median.png", statistic))
    atlas = opened(plot_channel_atlas(result.samples, folder / "channel_atlas.png", statistic))
    surface = None
    if result.surface is not None:
        title = f"|x| at {site}, step {result.config.surface_step}"
        title += f"\nred: its top-{len(marked)} channels" if marked else ""
        surface = opened(plot_magnitude_surface(result.surface, folder / "surface.png", title, marked=marked))
    scale = max(1, DISPLAY_PIXELS // 2 // max(result.images[0].size))  # small images: upscaled, crisp
    columns = len(result.config.prompts)
    images = opened(image_grid(result.images, folder / "images.png", columns=columns, scale=scale))
    return top_vs_median, atlas, surface, images


def layout(page: Page) -> None:
    """The tab's inputs and outputs, under its ABOUT line, and its handlers."""
    gr, explorer = page.gr, page.explorer
    with gr.Row():
        with gr.Column(scale=1):
            prompts, seeds = page.prompts_box("find"), page.seeds_box("find")
            k = page.k_slider("k (channels per site and step)")
            statistic = page.statistic()
            site = page.site_picker("site of the surface plot")
            # -1: the middle step of the run (the first, pure noise in, shows the least)
            step = gr.Number(
                -1, precision=0, minimum=-1, label="step of the surface plot (-1: the middle step)", elem_id="find-step"
            )
            steps, guidance = page.settings_boxes("find")
            buttons = page.buttons("find", "find channels")
        with gr.Column(scale=3):
            status = gr.HTML(elem_id="find-status")
            top = page.picture("per site: top-1/2/3 channels vs the median channel", "find-top", titled=True)
            atlas = page.picture("channel atlas: top-1 channel per site and step", "find-atlas", titled=True)
            with gr.Row():
                surface = page.picture(
                    "token x channel surface at the chosen site and step", "find-surface", titled=True
                )
                images = page.picture("generated images (rows: seeds)")
            table, _, download = page.results("find", "per site, as ditlens find prints it")

    def run_find(v: dict, progress: Any, cancel: threading.Event) -> tuple:
        progress(0, desc="generating")
        folder = page.downloads.folder("find")
        prompt_list, seed_list, settings = parse_generation(v[prompts], v[seeds], v[steps], v[guidance])
        surface_step = None if v[step] is None or v[step] < 0 else int(v[step])  # -1: the middle step
        view = explorer.find(
            prompt_list, seed_list, v[k], v[statistic], settings, v[site], surface_step, cancel=cancel, out=folder
        )
        summary = f"{len(view.table)} sites recorded; the surface shows step {view.surface_step}."
        status = result_status(summary, view.problems, len(view.result.images), "image")
        pictures = (view.top_vs_median, view.atlas, view.surface, view.images)
        return (*pictures, *page.finished(view, folder, status, notes=False))

    page.wire(
        "find",
        buttons,
        run_find,
        (None,) * 6,
        {prompts, seeds, k, statistic, site, step, steps, guidance},
        [top, atlas, surface, images, table, download, status],
    )
