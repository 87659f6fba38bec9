"""What the tabs share on the page (`Page`): Gradio itself, the explorer, default prompts, the
widget makers every tab uses, and the wiring of a tab's run and Stop buttons to a cancellable
job. Gradio is handed in (`Page.gr`), not imported, so that importing the app needs no Gradio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.channels import STATISTICS
from ..core.masks import DEFAULT_FOREGROUND, FOREGROUND_RULES
from .downloads import Downloads
from .status import STOPPED, guard, notes_markdown, status_html

if TYPE_CHECKING:
    from .explorer import Explorer

IMAGE_BUTTONS = ["download", "fullscreen"]  # no "share": it would upload to a hosting service


class Page:
    """What the tabs share: Gradio itself, the explorer, default prompts and widget makers."""

    def __init__(self, gr: Any, explorer: Explorer):
        self.gr, self.explorer = gr, explorer
        self.limits = explorer.limits
        self.prompts, self.source, self.target = "", "", ""
        if explorer.builtin:
            from ..builtin.examples import EXAMPLE_PROMPTS, EXAMPLE_TRANSPORT_PAIRS

            self.prompts = "\n".join(EXAMPLE_PROMPTS[:2])
            self.source, self.target = EXAMPLE_TRANSPORT_PAIRS[0]
        # one generation at a time across all tabs: one model, few cores
        self.busy = dict(concurrency_limit=1, concurrency_id="pipeline")
        self.downloads = Downloads(self.limits.downloads)

    # ---- events ----------------------------------------------------------------------------

    def job(self, fn: Callable[..., tuple], on_error: tuple) -> Callable[..., Any]:
        """An event handler that runs `fn(values, progress, cancel)` (errors: `guard`) in a
        worker thread as one cancellable job. When Gradio cancels the event (the tab's Stop
        button, or a client's cancel), Gradio stops waiting at once and frees the queue's
        slot, and `cancel` is set, so the pipeline stops at its next denoising step instead
        of running on unseen in the worker (its result, if any, is dropped)."""
        gr, guarded = self.gr, guard(fn, on_error)

        # Gradio hands its progress tracker to a handler whose parameter defaults to a gr.Progress
        async def run(v: dict, progress: Any = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
            cancel = threading.Event()
            try:
                return await asyncio.to_thread(guarded, v, progress, cancel)  # copies Gradio's context (progress)
            except asyncio.CancelledError:
                cancel.set()
                raise

        run.__name__ = fn.__name__
        return run

    def wire(
        self,
        tab: str,
        buttons: tuple[Any, Any],
        fn: Callable[..., tuple],
        on_error: tuple,
        inputs: set[Any],
        outputs: list[Any],
        progress_on: Any = None,
    ) -> None:
        """The run button starts `fn` as a queued, cancellable job (API name: the tab's); the
        Stop button cancels it, unqueued, so that it works also while the queue is full.
        The last output is the tab's status line; `progress_on` (default: the first output)
        shows the progress bar."""
        run, stop = buttons
        progress_on = outputs[0] if progress_on is None else progress_on
        event = run.click(
            self.job(fn, on_error), inputs, outputs, show_progress_on=[progress_on], api_name=tab, **self.busy
        )
        stop.click(
            lambda: status_html("info", STOPPED),
            None,
            [outputs[-1]],
            cancels=[event],
            queue=False,
            api_visibility="private",
        )

    def finished(self, view: Any, folder: Path, status: str, notes: bool = True) -> tuple:
        """The outputs a tab ends with, after a run: its score table, its notes (what the run
        could not measure; find has none), the zip of its files and its status line."""
        table = self.gr.Dataframe(view.table, headers=view.headers)
        shown = (notes_markdown(view.not_measured),) if notes else ()
        return (table, *shown, str(self.downloads.zip(folder)), status)

    # ---- widgets ---------------------------------------------------------------------------

    def buttons(self, tab: str, label: str) -> tuple[Any, Any]:
        """The tab's run and Stop buttons, side by side."""
        with self.gr.Row():
            run = self.gr.Button(label, variant="primary", elem_id=f"{tab}-run", scale=3)
            stop = self.gr.Button("stop", variant="stop", elem_id=f"{tab}-stop", scale=1)
        return run, stop

    def prompts_box(self, tab: str, lines: int = 2, first_only: bool = False) -> Any:
        value = self.prompts.split("\n")[0] if first_only else self.prompts
        return self.gr.Textbox(value, lines=lines, label="prompts (one per line)", elem_id=f"{tab}-prompts")

    def seeds_box(self, tab: str) -> Any:
        return self.gr.Textbox("0", label="seeds (separated by spaces)", elem_id=f"{tab}-seeds")

    def k_slider(self, label: str, value: int | None = None, every_channel: bool = False) -> Any:
        # more would not be "a few channels" (the CLI takes any k); transport's measured default
        # on the built-in model is every channel (TransportConfig), so its slider reaches that far
        k_max = self.explorer.hidden_size if every_channel else min(self.explorer.hidden_size, 64)
        return self.gr.Slider(1, k_max, min(value or self.explorer.default_k, k_max), step=1, label=label)

    def statistic(self) -> Any:
        return self.gr.Dropdown(list(STATISTICS), value="abs_mean", label="statistic (abs_mean: the paper's)")

    def foreground_picker(self, elem_id: str) -> Any:
        rule = FOREGROUND_RULES[DEFAULT_FOREGROUND].split(" (")[0]
        return self.gr.Dropdown(
            list(FOREGROUND_RULES),
            value=DEFAULT_FOREGROUND,
            elem_id=elem_id,
            label=f"which K=2 cluster is the subject ({DEFAULT_FOREGROUND}: {rule})",
        )

    def site_picker(self, label: str, elem_id: str | None = None) -> Any:
        sites = self.explorer.sites
        return self.gr.Dropdown(sites, value=sites[len(sites) // 2], label=label, elem_id=elem_id)

    def settings_boxes(self, tab: str) -> tuple[Any, Any]:
        gr = self.gr
        with gr.Row():
            steps = gr.Number(0, precision=0, minimum=0, label="steps (0: default)", elem_id=f"{tab}-steps")
            guidance = gr.Number(-1, label="guidance (-1: default)", elem_id=f"{tab}-guidance")
        return steps, guidance

    def window_boxes(self) -> tuple[Any, Any]:
        gr = self.gr
        with gr.Row():
            start = gr.Number(0, precision=0, minimum=0, label="edit from step")
            stop = gr.Number(0, precision=0, minimum=0, label="edit until step (0: the last)")
        return start, stop

    def picture(self, label: str, elem_id: str | None = None, titled: bool = False, **kwargs: Any) -> Any:
        """An output picture; `titled` ones (plots with their own title) hide the label that would cover it."""
        return self.gr.Image(
            label=label, show_label=not titled, format="png", buttons=IMAGE_BUTTONS, elem_id=elem_id, **kwargs
        )

    def results(self, tab: str, label: str, command: str | None = None) -> tuple[Any, Any, Any]:
        """The tab's score table, its notes (what the run could not measure) and the download
        of the run's files (a zip of what `ditlens COMMAND` writes, with command.txt)."""
        gr = self.gr
        table = gr.Dataframe(label=label, interactive=False, wrap=True, elem_id=f"{tab}-scores")
        notes = gr.Markdown(elem_id=f"{tab}-notes")
        download = gr.File(
            label=f"settings and results: the files of ditlens {command or tab} (zip; command.txt runs it again)",
            interactive=False,
            elem_id=f"{tab}-download",
        )
        return table, notes, download
