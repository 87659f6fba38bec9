"""`ditlens app`: a local web app (Gradio) to look at and use a model's massive activations.

Two layers, so that the science stays in the library:

- `Explorer` (explorer.py) computes. Each method validates the page's inputs, calls the library
  (`find_channels`, `disrupt`, `segment_generated`, `transport_text` / `transport_image`),
  scores the result as the tab's command does (`ditlens.metrics.scores`), writes the files that
  command writes (the page zips them for download) and draws with the result's own plots,
  returning a small view dataclass of PIL pictures and table rows. It imports no Gradio and
  can be used (and tested) on its own.
- `build_app` (page.py) wires an `Explorer` to a Gradio page: one tab per capability, progress
  bars during generation (Gradio follows the pipeline's tqdm bar), and every error shown as a
  status line in the page. Tracebacks stay in the server's console. A run whose images are
  degenerate (noise, constant, blank, non-finite: `check_image`) says so instead of Done.

Under load: every request is checked against `Limits` before any model runs; one job runs
on the model at a time, behind a queue of bounded length (a request beyond it is refused,
not left waiting); a running job stops at its next denoising step when the page's Stop
button (or any client) cancels it; and the server keeps only the last few results.

The modules, in reading order:

- limits.py: `Limits` (what one request may ask) and `Kept` (the results kept for the pickers)
- inputs.py: the page's values -> the library's values, with messages that name the field
- explorer.py: `Explorer`, the checks and the one-job-at-a-time lock around the capabilities
- find_tab.py, disrupt_tab.py, segment_tab.py, transport_tab.py: each tab's view (what it
  shows of a result, and the files of its command) and its layout on the page
- tables.py, pictures.py, degenerate.py, downloads.py: the views' score tables, pictures,
  degenerate-image rule and downloadable files
- widgets.py, status.py: what the tabs share on the page (widgets, the wiring of a
  cancellable job) and the status line every handler ends with
- page.py: `build_app` and `serve`
- browser.py: the app and headless Chromium, for the browser test and the screenshot script
"""

from __future__ import annotations

from .degenerate import BLANK_SHARE, FLAT_STD, NOISE_SHARE, ImageCheck, check_image, degenerate, degenerate_images
from .disrupt_tab import DisruptView
from .downloads import Downloads, cli_command
from .explorer import Explorer
from .find_tab import FindView
from .inputs import generation_settings, parse_prompt, parse_prompts, parse_seeds, parse_window
from .limits import Kept, Limits
from .page import CSS, build_app, check_address, serve
from .segment_tab import SegmentView
from .status import Cancelled, result_status, status_html
from .transport_tab import TransportRequest, TransportView

__all__ = [
    "BLANK_SHARE",
    "CSS",
    "FLAT_STD",
    "NOISE_SHARE",
    "Cancelled",
    "DisruptView",
    "Downloads",
    "Explorer",
    "FindView",
    "ImageCheck",
    "Kept",
    "Limits",
    "SegmentView",
    "TransportRequest",
    "TransportView",
    "build_app",
    "check_address",
    "check_image",
    "cli_command",
    "degenerate",
    "degenerate_images",
    "generation_settings",
    "parse_prompt",
    "parse_prompts",
    "parse_seeds",
    "parse_window",
    "result_status",
    "serve",
    "status_html",
]
