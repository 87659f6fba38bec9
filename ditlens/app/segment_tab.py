"""The segment tab: K=2 masks from the massive channels at every site and step, against
bottom-k, random-k and all channels. `segment_view` turns a `SegmentResult` into what the tab
shows (and writes the files of `ditlens segment`); `segment_tab` lays the tab out, runs
`Explorer.segment` from it and redraws the overlays of a picked site and step from the kept
masks, without generating again."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from ..reporting.verdicts import segment_summary
from ..segment import RULES as SEGMENT_RULES
from ..segment import MaskScores, SegmentConfig, SegmentResult
from .degenerate import degenerate_images
from .downloads import run_files
from .inputs import parse_generation
from .limits import Kept, plural
from .pictures import opened, picture
from .status import guard, result_status, status_html
from .tables import SEGMENT_HEADERS, segment_table
from .widgets import Page

if TYPE_CHECKING:
    from .explorer import Explorer

MAX_OVERLAY_ROWS = 8  # overlays of more images would not fit a screen (the CLI's default too)

ABOUT = "K=2 masks from the massive channels at every site and step, against bottom-k, random-k and all channels."


@dataclass
class SegmentView:
    """What the segment tab shows of one run (every view: see `ditlens.app.explorer`)."""

    result: SegmentResult
    truth: torch.Tensor | None  # (n, H, W) bool ground truth (built-in model), else None
    miou_plot: Image.Image | None
    note: str = ""
    table: list[list[Any]] = field(default_factory=list)  # per rule, as `ditlens segment` prints it (with truth)
    not_measured: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    command: str = ""
    headers: list[str] = field(default_factory=lambda: list(SEGMENT_HEADERS))

    @property
    def steps(self) -> int:
        return self.result.steps

    @property
    def images(self) -> int:
        """How many images the run generated."""
        return 0 if self.result.images is None else len(self.result.images)


def segment_view(
    explorer: Explorer, result: SegmentResult, config: SegmentConfig, out: str | Path | None
) -> SegmentView:
    """The tab's scores against the ground truth (the built-in model's), its mIoU plot and
    degenerate images; `out` gets the files of `ditlens segment`, with the overlays at the
    middle site and step, as the command draws them."""
    assert result.images is not None  # segment_generated keeps the images it generated
    truth, note, not_measured = _ground_truth(explorer, result, config)
    site, step = result.view()  # the command's defaults: the middle site and step
    command = segment_command(explorer, config, site, step)
    scores = result.scores(truth) if truth is not None else None
    miou_plot = None
    with run_files(out, command) as folder:  # as `ditlens segment` writes them
        result.save(folder, truth)
        result.plot_overlays(folder / "overlays.png", site, step, truth)
        if scores is not None:
            title = f"K=2 masks vs ground truth (k={config.k}, {config.foreground} rule; dotted: oracle labelling)"
            miou_plot = opened(result.plot_scores(scores, folder / "miou_per_site.png", title))
    if scores is not None:
        note = _verdict(scores, config.k, len(result.images))
    return SegmentView(
        result=result,
        truth=truth,
        miou_plot=miou_plot,
        note=note,
        table=segment_table(scores, result.sites) if scores is not None else [],
        not_measured=not_measured,
        problems=degenerate_images(result.images, config.prompts, config.seeds),
        command=command,
    )


def _ground_truth(
    explorer: Explorer, result: SegmentResult, config: SegmentConfig
) -> tuple[torch.Tensor | None, str, list[str]]:
    """(truth, note, not measured): the built-in model's exact masks (the pixels off the
    background its caption names), or None with the reason."""
    if not explorer.builtin:
        return None, "", ["mIoU: no ground truth here (the command takes --truth-dir DIR)"]
    from ..builtin.scenes import CaptionError
    from ..metrics.fidelity import off_background_masks

    assert result.images is not None  # segment_generated keeps the images it generated
    try:
        return off_background_masks(result.images, config.prompts * len(config.seeds)), "", []
    except CaptionError as err:
        return None, f"No ground truth (so no mIoU): {err}", [f"mIoU: no ground truth ({err})"]


def _verdict(scores: dict[str, MaskScores], k: int, n_images: int) -> str:
    """The run's one-line verdict over each rule's best-site mIoU."""
    best = {rule: float(sc.per_site()["miou"].max()) for rule, sc in scores.items()}
    return segment_summary(best, k, f"these {n_images} images")


def segment_command(explorer: Explorer, config: SegmentConfig, site: str, step: int) -> str:
    """The `ditlens segment` line that writes the same files."""
    options = [("--k", config.k), ("--rules", config.rules), ("--statistic", config.statistic)]
    options += [("--foreground", config.foreground), ("--site", site), ("--step", step)]
    return explorer.command("segment", config.prompts, config.seeds, options, config.generation)


def overlays(view: SegmentView, site: str, step: int) -> Image.Image:
    """Masks of one site and step over the images: no generation, the masks are kept."""
    return picture(lambda path: view.result.plot_overlays(path, site, step, view.truth, max_rows=MAX_OVERLAY_ROWS))


def layout(page: Page) -> None:
    """The tab's inputs and outputs, under its ABOUT line, and its handlers."""
    gr, explorer = page.gr, page.explorer
    # the last run's key in `results` (the server keeps the last few SegmentViews, for every
    # session together): the pickers redraw from it without generating
    kept = gr.State(None)
    results = Kept(page.limits.kept)
    with gr.Row():
        with gr.Column(scale=1):
            prompts, seeds = page.prompts_box("segment"), page.seeds_box("segment")
            k = page.k_slider("k (channels to cluster on)")
            rules = gr.CheckboxGroup(list(SEGMENT_RULES), value=list(SEGMENT_RULES), label="channel rules")
            foreground = page.foreground_picker("segment-foreground")
            statistic = page.statistic()
            steps, guidance = page.settings_boxes("segment")
            buttons = page.buttons("segment", "segment")
            gr.Markdown("After a run, pick a site and a step (no new generation):")
            site = page.site_picker("site", "segment-site")
            step = gr.Slider(0, 1, 0, step=1, label="step", elem_id="segment-step")
        with gr.Column(scale=3):
            status = gr.HTML(elem_id="segment-status")
            pictures = page.picture("mask overlays", "segment-overlays", titled=True)
            miou = page.picture(
                "mIoU per site (built-in model: against exact ground truth)", "segment-miou", titled=True
            )
            table, notes, download = page.results("segment", "per rule: mIoU, as ditlens segment prints it")

    def run_segment(v: dict, progress: Any, cancel: threading.Event) -> tuple:
        progress(0, desc="generating")
        folder = page.downloads.folder("segment")
        prompt_list, seed_list, settings = parse_generation(v[prompts], v[seeds], v[steps], v[guidance])
        view = explorer.segment(
            prompt_list, seed_list, v[k], v[rules], v[statistic], settings, v[foreground], cancel=cancel, out=folder
        )
        # the pickers keep the user's site where this model has it, and show the middle step
        sites = view.result.sites
        chosen_site, chosen_step = view.result.view(v[site] if v[site] in sites else None)
        summary = f"masks kept for {view.steps} steps x {len(sites)} sites. {view.note}".strip()
        status = result_status(summary, view.problems, view.images, "image")
        pickers = (gr.Dropdown(choices=sites, value=chosen_site), gr.Slider(0, view.steps - 1, chosen_step, step=1))
        drawn = (results.put(view), overlays(view, chosen_site, chosen_step), view.miou_plot)
        return (*drawn, *pickers, *page.finished(view, folder, status))

    page.wire(
        "segment",
        buttons,
        run_segment,
        (gr.skip(), None, None, gr.skip(), gr.skip(), None, None, None),
        {prompts, seeds, k, rules, foreground, statistic, steps, guidance, site},
        [kept, pictures, miou, site, step, table, notes, download, status],
        progress_on=pictures,
    )
    _wire_pickers(page, results, kept, site, step, pictures, status)


def _wire_pickers(page: Page, results: Kept, kept: Any, site: Any, step: Any, pictures: Any, status: Any) -> None:
    """A user's pick of a site or a step redraws the overlays from the kept masks of the last run."""
    gr = page.gr

    def pick(key: str | None, site_name: str, step_index: float) -> tuple:
        view = results.get(key)
        if view is None:
            if key is None:
                return gr.skip(), status_html("info", "Run a segmentation first.")
            return gr.skip(), status_html(
                "info",
                f"This result is no longer kept (the server keeps the last {plural(results.size, 'segmentation')}); "
                "run the segmentation again.",
            )
        site_name, step_number = view.result.view(site_name, int(step_index))
        return overlays(view, site_name, step_number), status_html(
            "info", f"masks at {site_name}, step {step_number} (of the last run)"
        )

    # .input: a user's pick only; the run sets the pickers too, and its status must stay on the page
    for picker in (site, step):
        picker.input(guard(pick, (gr.skip(),)), [kept, site, step], [pictures, status], show_progress="hidden")
