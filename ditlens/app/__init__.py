"""`ditlens app`: a local web app (Gradio) to look at and use a model's massive activations.

Two layers, so that the science stays in the library:

- `Explorer` computes. Each method validates the page's inputs, calls the library
  (`find_channels`, `disrupt`, `segment_generated`, `transport_text` / `transport_image`),
  scores the result as the tab's command does (`ditlens.metrics.scores`), writes the files that
  command writes (the page zips them for download) and draws with `ditlens.reporting.plots`, returning
  a small view dataclass of PIL pictures and table rows. It imports no Gradio and can be
  used (and tested) on its own.
- `build_app` wires an `Explorer` to a Gradio page: one tab per capability, progress bars
  during generation (Gradio follows the pipeline's tqdm bar), and every error shown as a
  status line in the page. Tracebacks stay in the server's console. A run whose images are
  degenerate (noise, constant, blank, non-finite: `check_image`) says so instead of Done.

Under load: every request is checked against `Limits` before any model runs; one job runs
on the model at a time, behind a queue of bounded length (a request beyond it is refused,
not left waiting); a running job stops at its next denoising step when the page's Stop
button (or any client) cancels it; and the server keeps only the last few results.

Offline by design: analytics off, the default theme's fonts are served by Gradio itself,
server-side rendering (which would need Node) off.
"""

from __future__ import annotations

import asyncio
import atexit
import html
import json
import logging
import os
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..adapters import adapter_for
from ..core.channels import STATISTICS
from ..core.masks import DEFAULT_FOREGROUND, FOREGROUND_RULES
from ..disrupt import RULES as DISRUPT_RULES
from ..disrupt import DisruptConfig, DisruptResult, disrupt
from ..disrupt import conditions as disrupt_conditions
from ..find import FindConfig, FindResult, find_channels
from ..generation import GenerationSettings, default_steps, image_size, to_pil
from ..io.images import load_image
from ..io.outputs import output_folder
from ..metrics.scores import (
    DISRUPT_COLUMNS,
    DISRUPT_CURVES,
    DISRUPT_FORMATS,
    TRANSPORT_COLUMNS,
    Scorers,
    disrupt_scores,
    score_curves,
    transport_scores,
)
from ..reporting.plots import (
    image_grid,
    plot_channel_atlas,
    plot_image_table,
    plot_magnitude_surface,
    plot_metric_over_k,
    plot_miou_curves,
    plot_segment_overlays,
    plot_top_vs_median,
)
from ..reporting.verdicts import segment_summary
from ..segment import RULES as SEGMENT_RULES
from ..segment import SegmentConfig, SegmentResult, segment_generated
from ..transport import STREAMS, TransportConfig, TransportResult, transport_image, transport_text

log = logging.getLogger("ditlens.app")

MODES = ("two prompts", "reference image")
APP_MASKS = ("source", "target", "union", "all")  # "user" needs a mask image: the CLI offers it
STRIP_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the interpolation strip's frames
DISRUPT_KS = (1, 2, 4, 8, 16, 32)  # choices offered; the default is the demo's small / medium / large
IMAGE_BUTTONS = ["download", "fullscreen"]  # no "share": it would upload to a hosting service
MAX_OVERLAY_ROWS = 8  # overlays of more images would not fit a screen (the CLI's default too)
MAX_MARKED = 8  # top channels marked on the magnitude surface: more labels would cover the walls
DISPLAY_PIXELS = 256  # small images are shown upscaled (nearest) to about this size


# ---- limits: what one request may ask, checked before any model runs ---------------------------


@dataclass(frozen=True)
class Limits:
    """What one request from the page may ask, and how much the server holds. Every request is
    checked against these before any model runs; a refusal names the field, the value and the
    allowed range. k is bounded by the model itself (1..its hidden size), not here."""

    steps: int = 200  # the supported models run 4 (FLUX.1-schnell) to 50 (Qwen-Image, FLUX.2) steps: 4x the most
    size_px: int = 2048  # height, width: the supported families default to <= 1024 px; cost grows with the square
    reference_px: int = 8192  # an uploaded image holds at most this squared (67 megapixels: a 48 MP photo fits)
    upload_mb: int = 100  # any upload, refused by Gradio before the app reads it; a 48 MP JPEG is some 10-25 MB
    prompts: int = 16  # the find grid has one column per prompt: more would not be readable
    prompt_chars: int = 2000  # ~512 tokens: FLUX.1's and Qwen-Image's text length (SD3: 256); encoders cut the rest
    seeds: int = 16  # one row per seed; stability over seeds needs a few, not hundreds
    seed_max: int = 2**32 - 1  # numpy's seed range, so a seed can be replayed in any tool (torch takes it too)
    images: int = 64  # images one request generates, all conditions together (disrupt: conditions x prompts x seeds)
    # images x steps of one request, for time and memory: find records 3 float32 per step, site, image
    # and channel: 4.3 GB for FLUX.1 (57 sites x 3072 channels) at this bound, 100 MB for the built-in model
    image_steps: int = 2048
    queue: int = 8  # requests waiting behind the running one; the next is refused ("busy, try again"), not parked
    kept: int = 4  # segment results (masks of every site and step) kept for the pickers, all sessions together
    downloads: int = 16  # zips of runs kept on disk for the download buttons, all sessions together; older ones deleted

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        bad = [f"{name} = {v!r}" for name, v in values.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"Limits must be whole numbers >= 1; got {', '.join(bad)}.")

    def check_prompts(self, prompts: list[str], field_name: str = "prompts") -> None:
        if not 1 <= len(prompts) <= self.prompts:
            raise ValueError(f"{field_name}: {len(prompts)} given; this app takes 1..{self.prompts} per request.")
        for i, prompt in enumerate(prompts):
            if len(prompt) > self.prompt_chars:
                which = f"{field_name}, line {i + 1}" if len(prompts) > 1 else field_name
                raise ValueError(
                    f"{which}: {len(prompt)} characters; this app takes up to {self.prompt_chars} per prompt."
                )

    def check_seeds(self, seeds: list[int], field_name: str = "seeds") -> None:
        if not 1 <= len(seeds) <= self.seeds:
            raise ValueError(f"{field_name}: {len(seeds)} given; this app takes 1..{self.seeds} per request.")
        for seed in seeds:
            if not 0 <= seed <= self.seed_max:
                raise ValueError(f"{field_name}: {seed} is outside the allowed range 0..{self.seed_max}.")

    def check_settings(self, settings: GenerationSettings) -> None:
        steps = settings.num_inference_steps
        if steps is not None and not 1 <= steps <= self.steps:
            raise ValueError(
                f"steps = {steps} is outside the allowed range 1..{self.steps} (0: the pipeline's default)."
            )
        for name in ("height", "width"):
            size = getattr(settings, name)
            if size is not None and not 1 <= size <= self.size_px:
                raise ValueError(f"{name} = {size} px is outside the allowed range 1..{self.size_px} px.")

    def check_work(self, images: int, steps: int | None, what: str) -> None:
        """`images` generated by one request (`what` says how they were counted), `steps` each."""
        if images > self.images:
            raise ValueError(f"images: {what} = {images}; this app generates up to {self.images} per request.")
        if steps and images * steps > self.image_steps:
            raise ValueError(
                f"images x steps: {images} x {steps} = {images * steps}; this app takes up to {self.image_steps} "
                "per request (fewer prompts, seeds or steps)."
            )

    def check_reference(self, path: str | Path) -> None:
        """An uploaded image's size, read from its header before anything decodes it."""
        try:
            with Image.open(path) as image:
                height, width = image.height, image.width
        except Image.DecompressionBombError as err:  # PIL refuses to even open it: far over the limit
            raise ValueError(
                f"reference image: {err} This app takes up to {self.reference_px} x {self.reference_px} pixels."
            ) from None
        except (OSError, SyntaxError):
            return  # not an image: load_image says so
        if height * width > self.reference_px**2:
            raise ValueError(
                f"reference image: {height} x {width} pixels; this app takes up to "
                f"{self.reference_px} x {self.reference_px} ({self.reference_px**2:,} pixels). Resize it first."
            )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# ---- degenerate results: what the status line says instead of "Done" ---------------------------

# An output image is degenerate when one of these holds (docs/app.md, "Degenerate results").
# Measured on the built-in model: its images have a high-frequency share of 0.06-0.15, images
# with a noisy background but a clear object (bottom-k edits) up to 0.6, and top-64 zeroing,
# which draws pure noise, 0.85-1.0; uniform noise has 1.0.
NOISE_SHARE = 0.75  # high-frequency share at or above this: noise
FLAT_STD = 0.02  # pixel std (values in [0, 1]) below this, about 5 of 255 grey levels: a constant image
BLANK_SHARE = 0.25  # std below this share of the unedited image's: blank (what the unedited image showed is gone)


@dataclass(frozen=True)
class ImageCheck:
    """The numbers the degenerate-result rule reads from one image (3, H, W) in [0, 1]."""

    std: float  # pixel standard deviation within each colour channel (root of their mean variance)
    noise_share: float  # mean squared difference of neighbouring pixels / (2 x variance): 1 for uniform noise
    finite: bool
    reference_std: float | None = None  # the unedited image's std, where there is one

    @property
    def problem(self) -> str | None:
        """Why the image is degenerate, with its numbers, or None."""
        if not self.finite:
            return "non-finite pixels (NaN or infinite)"
        if self.noise_share >= NOISE_SHARE:
            return f"noise (high-frequency share {self.noise_share:.2f} >= {NOISE_SHARE})"
        if self.std < FLAT_STD:
            return f"constant (pixel std {self.std:.3f} < {FLAT_STD})"
        if self.reference_std is not None and self.std < BLANK_SHARE * self.reference_std:
            return f"blank (pixel std {self.std:.3f} < {BLANK_SHARE} x the unedited image's {self.reference_std:.3f})"
        return None


def check_image(image: torch.Tensor, reference: torch.Tensor | None = None) -> ImageCheck:
    """The degenerate-result numbers of `image` (3, H, W), against the unedited `reference`."""
    x = image.detach().float().cpu()
    finite = bool(torch.isfinite(x).all())
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
    variance = float(x.flatten(1).var(1, unbiased=False).mean())  # within each colour channel
    dx = float((x[:, :, 1:] - x[:, :, :-1]).pow(2).mean()) if x.shape[2] > 1 else 0.0
    dy = float((x[:, 1:] - x[:, :-1]).pow(2).mean()) if x.shape[1] > 1 else 0.0
    share = (dx + dy) / 2 / (2 * variance) if variance > 1e-12 else 0.0  # neighbours of uniform noise differ by 2 var
    reference_std = None if reference is None else check_image(reference).std
    return ImageCheck(std=variance**0.5, noise_share=share, finite=finite, reference_std=reference_std)


def degenerate(name: str, images: torch.Tensor, references: torch.Tensor | None = None) -> str | None:
    """One phrase for a group of images (a condition, the target alone, ...) holding a
    degenerate one, e.g. "top-64: 2 of 2 images degenerate, e.g. noise (...)"; None if none is."""
    checks = [check_image(image, None if references is None else references[i]) for i, image in enumerate(images)]
    problems = [c.problem for c in checks if c.problem]
    if not problems:
        return None
    if len(checks) == 1:
        return f"{name}: {problems[0]}"
    return f"{name}: {len(problems)} of {len(checks)} images degenerate, e.g. {problems[0]}"


def degenerate_images(images: torch.Tensor, prompts: list[str], seeds: list[int]) -> list[str]:
    """One phrase per degenerate image of a seed-major batch (images = seeds x prompts)."""
    named = [f"image {i} (seed {seeds[i // len(prompts)]}, prompt {i % len(prompts) + 1})" for i in range(len(images))]
    return [p for name, image in zip(named, images) if (p := degenerate(name, image[None]))]


def _pil_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


# ---- downloads: each run's files, as the CLI writes them, zipped ---------------------------------


class Downloads:
    """Folders for the page's download buttons. Each run writes the files its `ditlens`
    command writes (and command.txt, that command) into a fresh folder under one temporary
    root; the page offers it as a zip. The last `size` runs are kept, all sessions together
    (older ones are deleted when a new one starts), the root goes when the process ends, and
    roots left by processes that no longer run are removed at start."""

    PREFIX = "ditlens-app-runs-"

    def __init__(self, size: int):
        self.size = size
        self._remove_stale_roots()
        self.root = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-"))
        self._runs: deque[Path] = deque()
        self._lock = threading.Lock()  # handlers run in worker threads
        atexit.register(shutil.rmtree, self.root, True)

    def folder(self, tab: str) -> Path:
        """A new folder name (not yet made) for one run of `tab`: ditlens-TAB-YYYYmmdd-HHMMSS."""
        run = self.root / uuid.uuid4().hex[:12]
        run.mkdir()
        with self._lock:
            self._runs.append(run)
            while len(self._runs) > self.size:
                shutil.rmtree(self._runs.popleft(), ignore_errors=True)  # the oldest
        return run / f"ditlens-{tab}-{time.strftime('%Y%m%d-%H%M%S')}"

    def zip(self, folder: Path) -> Path:
        """folder.zip beside it (one top folder inside, named as the folder); the folder goes."""
        archive = Path(shutil.make_archive(str(folder), "zip", root_dir=folder.parent, base_dir=folder.name))
        shutil.rmtree(folder, ignore_errors=True)
        return archive

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    def _remove_stale_roots(cls) -> None:
        for root in Path(tempfile.gettempdir()).glob(f"{cls.PREFIX}*-*"):
            pid = root.name[len(cls.PREFIX) :].split("-")[0]
            if pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(root, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def cli_command(command: str, model: str, options: list[tuple[str, Any]]) -> str:
    """The `ditlens` command line that writes the files of a run (its zip's command.txt).
    Options whose value is None are left out (the command's default); lists are spread."""
    words = ["ditlens", command] + ([] if model == "builtin" else ["--model", model])
    for option, value in options:
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        words += [option, *(f"{v:g}" if isinstance(v, float) else str(v) for v in values)]
    return shlex.join(words)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str))


class Cancelled(Exception):
    """A job was stopped (from the page, or by a client) before it finished."""


class Kept:
    """The last `size` results of one tab, for all sessions together: the page's state holds
    a key, so the server's memory stays bounded however many sessions there are."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # handlers run in worker threads

    def put(self, value: Any) -> str:
        key = uuid.uuid4().hex
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)  # the oldest
        return key

    def get(self, key: str | None) -> Any | None:
        with self._lock:
            return self._items.get(key) if key else None


# ---- input parsing (page values -> library values, with messages that name the field) ----------


def parse_prompts(text: str | None, field_name: str = "prompts") -> list[str]:
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"Type at least one prompt in {field_name!r} (one per line).")
    return prompts


def parse_prompt(text: str | None, field_name: str) -> str:
    prompt = " ".join((text or "").split())
    if not prompt:
        raise ValueError(f"Type a prompt in {field_name!r}.")
    return prompt


def parse_seeds(text: str | None) -> list[int]:
    words = str(text if text is not None else "").replace(",", " ").split()
    try:
        seeds = [int(w) for w in words]
    except ValueError:
        raise ValueError(f"Seeds must be whole numbers separated by spaces; got {text!r}.") from None
    if not seeds:
        raise ValueError("Give at least one seed (e.g. 0).")
    return seeds


def _optional_int(value: float | None, what: str, minimum: int) -> int | None:
    """Blank (None) or 0 in a number box means "the default"."""
    if value is None or value == 0:
        return None
    if value != int(value) or value < minimum:
        raise ValueError(f"{what} must be a whole number >= {minimum} (or 0 for the default); got {value!r}.")
    return int(value)


def generation_settings(steps: float | None, guidance: float | None) -> GenerationSettings:
    settings = GenerationSettings(
        num_inference_steps=_optional_int(steps, "Steps", 1),
        guidance_scale=None if guidance is None or guidance < 0 else float(guidance),
    )
    settings.validate()
    return settings


def parse_window(start: float | None, stop: float | None, num_steps: int | None) -> tuple[int, int] | None:
    """[start, stop) in steps; blank or 0 stop means "to the last step"; 0 and 0 (or blank): every step."""
    start = 0 if start is None else start
    stop = 0 if stop is None else stop
    if start != int(start) or stop != int(stop) or start < 0 or stop < 0:
        raise ValueError(f"The step window takes whole numbers >= 0; got start {start!r}, stop {stop!r}.")
    if start == 0 and stop == 0:
        return None
    if stop == 0:
        if num_steps is None:
            raise ValueError("Give the step window's stop (this pipeline's default number of steps is unknown).")
        stop = num_steps
    return (int(start), int(stop))


# ---- views: what each tab shows --------------------------------------------------------------
#
# Every view also carries its run's result object, its scores as the command reports them
# (`table` under `headers`, and `not_measured`: what could not be measured and why; find's
# table is its channel summary), the degenerate images found (`problems`: one phrase per
# group of images holding one, empty if none) and the `ditlens` command line that writes the
# same files (`command`).


@dataclass
class FindView:
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
    headers: list[str] = field(
        default_factory=lambda: ["site", "top channels", "x median", "Jaccard prompts", "Jaccard steps"]
    )


@dataclass
class DisruptView:
    result: DisruptResult
    grid: Image.Image  # rows: rule, columns: k, first image
    curve: Image.Image | None  # the first score over k that this run measured (objects fully correct, CLIP score)
    table: list[list[Any]]  # per condition: PSNR to unedited and the scores of `ditlens disrupt`
    headers: list[str]
    not_measured: list[str]
    problems: list[str]
    command: str


@dataclass
class SegmentView:
    result: SegmentResult
    truth: torch.Tensor | None  # (n, H, W) bool ground truth (built-in model), else None
    miou_plot: Image.Image | None
    note: str = ""
    table: list[list[Any]] = field(default_factory=list)  # per rule, as `ditlens segment` prints it (with truth)
    not_measured: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    command: str = ""
    headers: list[str] = field(
        default_factory=lambda: [
            "rule",
            "mIoU at the best site",
            "best site",
            "oracle labelling",
            "rule picked the oracle's cluster",
            "mIoU, mean over sites",
        ]
    )

    @property
    def steps(self) -> int:
        return next(iter(self.result.masks.values())).shape[0]


@dataclass
class TransportView:
    result: TransportResult
    image: Image.Image  # the transported image at the chosen alpha, upscaled for the screen
    strip: Image.Image  # source | target alone | transported (one per alpha)
    alpha: float
    note: str = ""  # e.g. that the reference image was resized
    table: list[list[Any]] = field(default_factory=list)  # per image: the scores of `ditlens transport`
    headers: list[str] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    command: str = ""


def _upscaled(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL, upscaled with nearest neighbour so small images stay crisp."""
    pil = to_pil(image[None])[0]
    scale = max(1, DISPLAY_PIXELS // max(pil.size))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


_PLOTTING = threading.Lock()  # pyplot keeps global state: one picture at a time across the worker threads


def _picture(draw: Callable[[Path], Path]) -> Image.Image:
    """Run a `ditlens.reporting.plots` function into a temporary file and return the picture in memory."""
    with _PLOTTING, tempfile.TemporaryDirectory(prefix="ditlens-app-") as tmp:
        return _opened(draw(Path(tmp) / "plot.png"))


def _opened(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


@contextmanager
def _run_files(out: str | Path | None) -> Iterator[Path]:
    """The folder a run writes its command's files into, as the CLI does (`output_folder`:
    whole or not at all, with its list of files): `out`, or a temporary one discarded after."""
    with tempfile.TemporaryDirectory(prefix="ditlens-app-") as tmp:
        with _PLOTTING, output_folder(Path(tmp) / "run" if out is None else out) as folder:
            yield folder


def _score(value: float, fmt: str) -> float | str:
    return round(float(value), int(fmt[1:-1])) if np.isfinite(value) else str(value)


def _two(value: float | None) -> str:
    """As `ditlens find` prints a Jaccard index: two decimals, or n/a with nothing to compare."""
    return "n/a" if value is None else f"{value:.2f}"


class Explorer:
    """The app's computations on one pipeline. Methods take page values and return views;
    bad values, and requests over `limits`, raise `ValueError` with a message for the page
    before any model runs. Given `out`, a method also leaves there the files its `ditlens`
    command writes (and command.txt, that command line); the page zips them for download.

    Scores are those of the commands (`ditlens.metrics.scores`): the built-in model's exact metrics
    on the built-in model, and CLIP score and CLIP-I with `clip` (a local CLIPModel folder).

    One job runs on the model at a time (a lock; Gradio's queue is not enough: it frees its
    slot as soon as a job is cancelled, while the job's thread runs on to its next step). A
    method given `cancel` stops at the next denoising step once the event is set, raising
    `Cancelled`."""

    def __init__(
        self, pipe: Any, model: str | None = None, limits: Limits | None = None, clip: str | Path | None = None
    ):
        self.pipe = pipe
        self.model = model or "builtin"
        self.limits = limits or Limits()
        self.adapter = adapter_for(pipe)  # fails early, listing the supported classes
        self.sites = [s.name for s in self.adapter.sites()]
        self.hidden_size = self.adapter.hidden_size
        self.clip_path = str(clip) if clip else None
        clip_scorer = None
        if clip:
            from ..metrics.clip import ClipScorer

            clip_scorer = ClipScorer.from_pretrained(clip, device=self.adapter.transformer.device)
        self.scorers = Scorers(builtin=self.builtin, clip=clip_scorer)
        self._lock = threading.Lock()

    @property
    def builtin(self) -> bool:
        return self.model == "builtin"

    @property
    def default_k(self) -> int:
        return 2 if self.builtin else 4  # the built-in model has one or two massive channels per site

    def describe(self) -> str:
        transformer = type(getattr(self.pipe, "transformer", self.pipe)).__name__
        scores = ["pixel distances"] + (["the built-in model's exact metrics"] if self.builtin else [])
        scores += [f"CLIP score and CLIP-I ({self.clip_path})"] if self.clip_path else []
        return (
            f"model: {self.model} ({type(self.pipe).__name__}, {transformer}), "
            f"{len(self.sites)} sites, {self.hidden_size} channels; scores: {', '.join(scores)}"
        )

    def describe_limits(self) -> str:
        limits = self.limits
        return (
            f"Per request: steps 1..{limits.steps}; height and width up to {limits.size_px} px; "
            f"1..{limits.prompts} prompts of up to {limits.prompt_chars} characters; 1..{limits.seeds} seeds "
            f"in 0..{limits.seed_max}; up to {limits.images} images and {limits.image_steps} images x steps "
            f"(disrupt counts every condition); k 1..{self.hidden_size}; a reference image of up to "
            f"{limits.reference_px} x {limits.reference_px} pixels and {limits.upload_mb} MB. One job runs at a "
            f"time; {limits.queue} more may wait, and the page asks the next one to try again later. "
            f"Stop ends a job at its next denoising step. The last {limits.downloads} runs' downloads are kept."
        )

    def num_steps(self, settings: GenerationSettings) -> int | None:
        return settings.num_inference_steps or default_steps(self.pipe)

    def check_prompts(self, prompts: list[str]) -> None:
        """The built-in model knows a small vocabulary: say so before generating anything."""
        if self.builtin:
            from ..builtin.scenes import check_words

            for prompt in prompts:
                check_words(prompt)

    def check_k(self, k: float) -> int:
        if k is None or k != int(k) or not 1 <= k <= self.hidden_size:
            raise ValueError(f"k = {k!r} is outside the allowed range 1..{self.hidden_size} (this model's channels).")
        return int(k)

    def check_request(
        self, prompts: list[str], seeds: list[int], settings: GenerationSettings, conditions: int = 1
    ) -> None:
        """Everything a request asks of the model, against `limits`, then the built-in model's words."""
        limits = self.limits
        limits.check_prompts(prompts)
        limits.check_seeds(seeds)
        limits.check_settings(settings)
        counted = [_count(len(prompts), "prompt"), _count(len(seeds), "seed")]
        if conditions > 1:
            counted.append(_count(conditions, "condition"))
        limits.check_work(len(prompts) * len(seeds) * conditions, self.num_steps(settings), " x ".join(counted))
        self.check_prompts(prompts)

    def scorers_for(self, prompts: list[str]) -> tuple[Scorers, list[str]]:
        """The scorers for a run on `prompts`, and what they cannot measure. The built-in
        metrics compare with each prompt's exact render, so every prompt must be a caption of
        the built-in model's grammar, not only known words; where one is not, those go."""
        not_measured = []
        scorers = self.scorers
        if self.builtin:
            from ..builtin.scenes import CaptionError, parse_caption

            try:
                for prompt in prompts:
                    parse_caption(prompt)
            except CaptionError as err:
                scorers = Scorers(builtin=False, clip=self.scorers.clip)
                not_measured.append(f"the built-in model's exact metrics: {err}")
        not_measured += [m for m in scorers.not_measured() if not (self.builtin and "built-in" in m)]
        return scorers, not_measured

    def _settings_options(self, settings: GenerationSettings) -> list[tuple[str, Any]]:
        return [
            ("--steps", settings.num_inference_steps),
            ("--guidance", settings.guidance_scale),
            ("--height", settings.height),
            ("--width", settings.width),
        ]

    def _clip_option(self) -> list[tuple[str, Any]]:
        return [("--clip", self.clip_path)]

    @contextmanager
    def job(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """Hold the model for one job; with `cancel`, every transformer call (one per step, or
        two with a separate CFG call) first checks the event, so a set event stops the job
        between two denoising steps."""
        with self._lock:
            if cancel is None:
                yield
                return

            def check(module: Any, args: tuple) -> None:
                if cancel.is_set():
                    raise Cancelled("Stopped before it finished.")

            check(None, ())  # cancelled while it waited for the model
            handle = self.adapter.transformer.register_forward_pre_hook(check)
            try:
                yield
            finally:
                handle.remove()

    # ---- find ------------------------------------------------------------------------------

    def find(
        self,
        prompts: list[str],
        seeds: list[int],
        k: int,
        statistic: str,
        settings: GenerationSettings,
        surface_site: str | None = None,
        surface_step: int | None = None,
        cancel: threading.Event | None = None,
        out: str | Path | None = None,
    ) -> FindView:
        """surface_step None: the middle step (the first, pure noise in, shows the least)."""
        self.check_request(prompts, seeds, settings)
        if surface_step is None:
            steps = self.num_steps(settings)
            surface_step = steps // 2 if steps else 1
        config = FindConfig(
            prompts=prompts,
            seeds=seeds,
            k=self.check_k(k),
            statistic=statistic,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            height=settings.height,
            width=settings.width,
            surface_site=surface_site or None,
            surface_step=int(surface_step),
        )
        with self.job(cancel):
            result = find_channels(self.pipe, config)
        summary = result.summary()
        table = [
            [
                site,
                ", ".join(map(str, info["top_channels"])),
                ", ".join(f"{r:g}" for r in info["ratio_to_median"]),
                _two(info["jaccard_across_prompts"]),
                _two(info["jaccard_across_steps"]),
            ]
            for site, info in summary["sites"].items()
        ]
        site = result.stats.meta["surface_site"]
        marked = (summary["sites"][site]["top_k_per_step_first_sample"][config.surface_step] or [])[:MAX_MARKED]
        command = cli_command(
            "find",
            self.model,
            [
                *[("--prompt", p) for p in prompts],
                ("--seeds", seeds),
                ("--k", config.k),
                ("--statistic", statistic),
                ("--site", site),
                ("--step", config.surface_step),
                *self._settings_options(settings),
            ],
        )
        scale = max(1, DISPLAY_PIXELS // 2 // max(result.images[0].size))  # small images: upscaled, crisp
        surface = None
        with _run_files(out) as folder:  # as `ditlens find` writes them
            result.save(folder)
            top_vs_median = _opened(plot_top_vs_median(result.samples, folder / "top_vs_median.png", statistic))
            atlas = _opened(plot_channel_atlas(result.samples, folder / "channel_atlas.png", statistic))
            if result.surface is not None:
                title = f"|x| at {site}, step {config.surface_step}"
                title += f"\nred: its top-{len(marked)} channels" if marked else ""
                surface = _opened(plot_magnitude_surface(result.surface, folder / "surface.png", title, marked=marked))
            images = _opened(image_grid(result.images, folder / "images.png", columns=len(prompts), scale=scale))
            (folder / "command.txt").write_text(command + "\n")
        generated = torch.stack([_pil_tensor(image) for image in result.images])
        return FindView(
            result=result,
            images=images,
            top_vs_median=top_vs_median,
            atlas=atlas,
            surface=surface,
            surface_step=config.surface_step,
            marked=marked,
            table=table,
            problems=degenerate_images(generated, prompts, seeds),
            command=command,
        )

    # ---- disrupt ---------------------------------------------------------------------------

    def disrupt(
        self,
        prompts: list[str],
        seeds: list[int],
        ks: list[int],
        rules: list[str],
        factor: float,
        draws: int,
        statistic: str,
        settings: GenerationSettings,
        window: tuple[int, int] | None = None,
        progress: Callable[[int, int, str], None] | None = None,
        cancel: threading.Event | None = None,
        out: str | Path | None = None,
    ) -> DisruptView:
        if not ks:
            raise ValueError("Tick at least one k.")
        if not rules:
            raise ValueError(f"Tick at least one channel rule ({', '.join(DISRUPT_RULES)}).")
        if draws is None or draws != int(draws) or draws < 1:
            raise ValueError(f"random-k draws = {draws!r}: give a whole number >= 1.")
        config = DisruptConfig(
            prompts=prompts,
            seeds=seeds,
            ks=sorted(self.check_k(k) for k in ks),
            rules=list(rules),
            factor=float(factor),
            random_draws=int(draws),
            statistic=statistic,
            steps=window,
            generation=settings,
        )
        self.check_request(prompts, seeds, settings, conditions=len(disrupt_conditions(config)))
        with self.job(cancel):
            result = disrupt(self.pipe, config, progress=progress)
        scorers, not_measured = self.scorers_for(prompts)
        n_images = len(prompts) * len(seeds)
        if scorers.builtin and n_images < 2:  # disrupt_scores leaves them out: a Frechet distance needs two
            not_measured.insert(
                0,
                f"prompt fidelity and Frechet distance: they need at least 2 images (prompts x seeds); this run made {n_images}",
            )
        scores = disrupt_scores(result, scorers)
        columns = [key for key in DISRUPT_FORMATS if any(key in row for row in scores.values())]
        headers = ["condition", "PSNR to unedited (dB)"] + [DISRUPT_COLUMNS[key] for key in columns]
        table = [
            [label, "inf" if row["psnr_db"] > 99 else round(row["psnr_db"], 1)]
            + [_score(row[key], DISRUPT_FORMATS[key]) if key in row else "" for key in columns]
            for label, row in scores.items()
        ]
        command = cli_command(
            "disrupt",
            self.model,
            [
                *[("--prompt", p) for p in prompts],
                ("--seeds", seeds),
                ("--ks", config.ks),
                ("--rules", config.rules),
                ("--factor", config.factor),
                ("--draws", config.random_draws),
                ("--statistic", statistic),
                ("--window", list(window) if window else None),
                *self._settings_options(settings),
                *self._clip_option(),
            ],
        )
        rule_names, k_names, cells = result.grid_rows(0)
        baseline = result.baseline[0]
        curve = None
        with _run_files(out) as folder:  # as `ditlens disrupt` writes them
            result.save(folder)
            for key, (label, title) in DISRUPT_CURVES.items():
                curves = score_curves(scores, key, config.rules)
                if curves:
                    path = plot_metric_over_k(curves, folder / f"{key}_over_k.png", label, title)
                    curve = curve or _opened(path)
            _write_json(folder / "metrics.json", {"scores": scores, "not_measured": not_measured})
            grid = _opened(
                plot_image_table(
                    [[baseline] + row for row in cells],
                    folder / "grid.png",
                    [f"{r}-k" for r in rule_names],
                    ["none"] + [f"k={k}" for k in k_names],
                    title=f"factor {factor:g} on the channels: {prompts[0]}" if len(prompts[0]) < 90 else "",
                )
            )
            (folder / "command.txt").write_text(command + "\n")
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

    # ---- segment ---------------------------------------------------------------------------

    def segment(
        self,
        prompts: list[str],
        seeds: list[int],
        k: int,
        rules: list[str],
        statistic: str,
        settings: GenerationSettings,
        foreground: str = DEFAULT_FOREGROUND,
        cancel: threading.Event | None = None,
        out: str | Path | None = None,
    ) -> SegmentView:
        """`out` gets the overlays at the middle site and step, as `ditlens segment` draws them."""
        self.check_request(prompts, seeds, settings)
        if not rules:
            raise ValueError(f"Tick at least one channel rule ({', '.join(SEGMENT_RULES)}).")
        config = SegmentConfig(
            prompts=prompts,
            seeds=seeds,
            k=self.check_k(k),
            rules=list(rules),
            statistic=statistic,
            foreground=foreground,
            generation=settings,
        )
        with self.job(cancel):
            result = segment_generated(self.pipe, config)
        truth, miou_plot, note, not_measured = None, None, "", []
        if self.builtin:
            from ..builtin.scenes import CaptionError
            from ..metrics.fidelity import off_background_masks

            try:
                truth = off_background_masks(result.images, prompts * len(seeds))
            except CaptionError as err:
                note = f"No ground truth (so no mIoU): {err}"
                not_measured.append(f"mIoU: no ground truth ({err})")
        else:
            not_measured.append("mIoU: no ground truth here (the command takes --truth-dir DIR)")
        site, step = result.sites[len(result.sites) // 2], result.steps // 2  # the command's defaults
        command = cli_command(
            "segment",
            self.model,
            [
                *[("--prompt", p) for p in prompts],
                ("--seeds", seeds),
                ("--k", config.k),
                ("--rules", config.rules),
                ("--statistic", statistic),
                ("--foreground", foreground),
                ("--site", site),
                ("--step", step),
                *self._settings_options(settings),
            ],
        )
        table = []
        scores = result.scores(truth) if truth is not None else None
        with _run_files(out) as folder:  # as `ditlens segment` writes them
            result.save(folder, truth)
            plot_segment_overlays(result, folder / "overlays.png", site, step, truth)
            if scores is not None:
                miou_plot = _opened(
                    plot_miou_curves(
                        {r: sc.miou.mean(-1) for r, sc in scores.items()},
                        result.sites,
                        folder / "miou_per_site.png",
                        f"K=2 masks vs ground truth (k={config.k}, {foreground} rule; dotted: oracle labelling)",
                        oracle={r: sc.oracle.mean(-1) for r, sc in scores.items()},
                    )
                )
            (folder / "command.txt").write_text(command + "\n")
        if scores is not None:
            for rule, sc in scores.items():
                curves = sc.per_site()
                best = int(curves["miou"].argmax())
                table.append(
                    [
                        rule,
                        round(float(curves["miou"][best]), 3),
                        result.sites[best],
                        round(float(curves["oracle"][best]), 3),
                        round(float(curves["agreement"][best]), 2),
                        round(float(curves["miou"].mean()), 3),
                    ]
                )
            best = {rule: float(sc.per_site()["miou"].max()) for rule, sc in scores.items()}
            note = segment_summary(best, config.k, f"these {len(result.images)} images")
        return SegmentView(
            result=result,
            truth=truth,
            miou_plot=miou_plot,
            note=note,
            table=table,
            not_measured=not_measured,
            problems=degenerate_images(result.images, prompts, seeds),
            command=command,
        )

    def overlays(self, view: SegmentView, site: str, step: int) -> Image.Image:
        """Masks of one site and step over the images: no generation, the masks are kept."""
        result = view.result
        if site not in result.sites:
            raise ValueError(f"Unknown site {site!r}. Sites of this model: {', '.join(result.sites)}.")
        if not 0 <= step < view.steps:
            raise ValueError(f"Step {step} is outside the schedule: 0..{view.steps - 1}.")
        return _picture(lambda p: plot_segment_overlays(result, p, site, step, view.truth, max_rows=MAX_OVERLAY_ROWS))

    # ---- transport -------------------------------------------------------------------------

    def transport(
        self,
        target: str,
        config: TransportConfig,
        *,
        source: str | None = None,
        reference: str | Path | None = None,
        reference_prompt: str = "",
        strip: bool = False,
        source_seed: int = 0,
        target_seed: int = 0,
        cancel: threading.Event | None = None,
        out: str | Path | None = None,
    ) -> TransportView:
        """Text-conditioned with `source`, image-conditioned with `reference` (a file path).
        `out` gets the files of `ditlens transport`, or with `strip` those of `ditlens
        interpolate` (its alphas: the strip's and the chosen one)."""
        if (source is None) == (reference is None):
            raise ValueError("Give either a source prompt or a reference image.")
        alpha = config.alpha
        alphas = sorted(set(STRIP_ALPHAS) | {alpha}) if strip else [alpha]
        limits, settings = self.limits, config.generation
        limits.check_settings(settings)
        limits.check_work(2 + len(alphas), self.num_steps(settings), f"source, target and {len(alphas)} alphas")
        limits.check_seeds([source_seed], "source seed")
        limits.check_seeds([target_seed], "target seed")
        self.check_k(config.k)
        notes = []
        options: list[tuple[str, Any]]
        if reference is not None:
            limits.check_prompts([target], "target prompt")
            limits.check_reference(reference)
            if reference_prompt:
                limits.check_prompts([reference_prompt], "reference caption")
            elif config.streams != "img":
                self.check_uncaptioned(config.streams)
                notes.append(
                    "No caption: the reference's text row is the empty prompt, so the text stream moved "
                    "carries no description of the reference."
                )
            else:
                notes.append("No caption: the reference's text row is the empty prompt.")
            self.check_prompts([target] + ([reference_prompt] if reference_prompt else []))
            image, resized = load_image(reference, image_size(self.pipe, settings))  # to the model's size
            if resized:
                notes.insert(0, f"The reference image was resized from {resized.split(' from ')[-1]}.")
            with self.job(cancel):
                result = transport_image(
                    self.pipe, image, target, config, reference_prompt=reference_prompt, alphas=alphas, seed=target_seed
                )
            # the zip's source.png is the reference as the model saw it (resized): the command reads it
            options = [("--reference", "source.png"), ("--reference-prompt", reference_prompt or None)]
            scored_source = reference_prompt or None
        else:
            limits.check_prompts([source], "source prompt")
            limits.check_prompts([target], "target prompt")
            self.check_prompts([source, target])
            with self.job(cancel):
                result = transport_text(
                    self.pipe, source, target, config, alphas=alphas, source_seed=source_seed, target_seed=target_seed
                )
            options = [("--source", source), ("--source-seed", source_seed)]
            scored_source = source
        scorers, not_measured = self.scorers_for([p for p in (scored_source, target) if p])
        if self.builtin and scorers.builtin and not scored_source:
            not_measured.insert(
                0,
                "attribute transfer, layout kept and ghosting: they compare with the source's "
                "caption (give the reference a caption)",
            )
        scores = transport_scores(result, scored_source, target, scorers)
        columns = [key for key in TRANSPORT_COLUMNS if any(key in row for row in scores.values())]

        def cell(row: dict[str, float], key: str) -> float | str:
            if key not in row:
                return ""
            return "inf" if key.startswith("psnr") and row[key] > 99 else _score(row[key], ".3f")  # 100 dB: identical

        table = [[name] + [cell(row, key) for key in columns] for name, row in scores.items()]
        window = list(config.steps) if config.steps else None
        options += [
            ("--target", target),
            ("--target-seed", target_seed),
            ("--k", config.k),
            ("--mask", config.mask),
            ("--foreground", config.foreground),
            ("--streams", config.streams),
            ("--statistic", config.statistic),
            ("--window", window),
            *self._settings_options(settings),
            *self._clip_option(),
        ]
        source_label = "reference" if reference is not None else "source"
        with _run_files(out) as folder:  # as `ditlens transport` (one alpha), or `ditlens interpolate` (a strip)
            result.save(folder)
            _write_json(folder / "scores.json", {"images": scores, "not_measured": not_measured})
            cells = [[result.source, result.target] + list(result.transported)]
            if strip:
                command = cli_command(  # --alpha too: it is in settings.json
                    "interpolate", self.model, options + [("--over", "alpha"), ("--alphas", alphas), ("--alpha", alpha)]
                )
                (folder / "frames").mkdir(exist_ok=True)
                for i, (a, image) in enumerate(zip(alphas, result.transported)):
                    to_pil(image[None])[0].save(folder / "frames" / f"frame_{i:03d}_alpha{a:.2f}.png")
                picture = plot_image_table(
                    cells,
                    folder / "strip.png",
                    [""],
                    [source_label, "target alone"] + [f"a={a:g}" for a in alphas],
                    title=f"{target}  <-  {source or 'the reference image'}",
                )
            else:
                command = cli_command("transport", self.model, options + [("--alpha", alpha)])
                picture = plot_image_table(
                    cells,
                    folder / "strip.png",
                    [""],
                    [source_label, "target alone", f"transported a={alpha:g}"],
                    cell_inches=1.8,
                )
            strip_picture = _opened(picture)
            (folder / "command.txt").write_text(command + "\n")
        unedited = None if result.target is None else result.target[None]
        problems = [
            p
            for p in [
                degenerate("the source", result.source[None]) if reference is None else None,  # an upload: not checked
                degenerate("the target alone", unedited) if unedited is not None else None,
                *(
                    degenerate(f"the transported image at alpha = {a:g}", image[None], unedited)
                    for a, image in zip(alphas, result.transported)
                ),
            ]
            if p
        ]
        return TransportView(
            result=result,
            image=_upscaled(result.transported[alphas.index(alpha)]),
            strip=strip_picture,
            alpha=alpha,
            note=" ".join(notes),
            table=table,
            headers=["image"] + [TRANSPORT_COLUMNS[key] for key in columns],
            not_measured=not_measured,
            problems=problems,
            command=command,
        )

    def check_uncaptioned(self, streams: str) -> None:
        """Image-conditioned transport without a caption moving the text stream: refused on the
        built-in model, where it was measured to wipe out the target."""
        if self.builtin:
            raise ValueError(
                f"A reference image without a caption cannot move the text stream (streams = {streams!r}): its text "
                "row is the empty prompt, so what would move into the target's text tokens is the empty prompt's, "
                "not the reference's, and the target's own prompt is lost (measured on the built-in model: the "
                "target's object is gone, leaving a blank or split background). Give the reference a caption "
                "(a prompt of the built-in model that describes it), or pick streams 'img' (the reference's image "
                "tokens), which runs with the empty prompt."
            )


# ---- the page ---------------------------------------------------------------------------------

CSS = """
.ditlens-status {padding: .5em .8em; border-radius: 6px; margin: .3em 0; font-size: .95em}
.ditlens-status.ok {background: #eef7ee; border: 1px solid #9c9}
.ditlens-status.error {background: #fdecea; border: 1px solid #e99; color: #611a15}
.ditlens-status.info {background: #f4f6fa; border: 1px solid #ccd}
.ditlens-status.warn {background: #fff8e1; border: 1px solid #e0c060; color: #5d4300}
#transport-result img {image-rendering: pixelated}  /* small images upscaled: crisp pixels */
"""


def status_html(kind: str, message: str) -> str:
    """A status line for the page: kind is ok, warn (a degenerate result), error or info; the
    message is escaped."""
    label = {"ok": "Done", "warn": "Degenerate", "error": "Error", "info": ""}[kind]
    prefix = f"<b>{label}:</b> " if label else ""
    return f"<div class='ditlens-status {kind}'>{prefix}{html.escape(message)}</div>"


def result_status(summary: str, problems: list[str], groups: int, what: str) -> str:
    """The status line of a finished run: Done with its summary, or, where `problems` (one
    phrase per degenerate image or condition, see `degenerate`) is not empty, Degenerate,
    with how many of the `groups` (`what`: conditions, images) and why."""
    if not problems:
        return status_html("ok", summary)
    return status_html(
        "warn",
        f"{len(problems)} of {_count(groups, what)} degenerate: {'; '.join(problems)}. {summary} "
        "The scores of a degenerate image describe a failed generation.",
    )


def notes_markdown(not_measured: list[str]) -> str:
    """What a run could not measure, one line each (the page's note under a score table)."""
    return "\n".join(f"- not measured: {html.escape(line)}" for line in not_measured)


def _guard(fn: Callable[..., tuple], on_error: tuple) -> Callable[..., tuple]:
    """Turn exceptions into an error status (the last output); the other outputs get
    `on_error` (None clears a picture, `gr.skip()` keeps a value such as a picker's).

    Bad input (ValueError and its kind) shows its message; anything else shows its type and
    message, with the traceback logged to the server's console, never sent to the page."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Cancelled as err:
            return (*on_error, status_html("info", str(err)))
        except (ValueError, FileNotFoundError) as err:
            message = str(err)
        except Exception as err:  # noqa: BLE001 - the page must get a message, not a traceback
            log.exception("ditlens app: unexpected error")
            message = f"Unexpected {type(err).__name__}: {err} (the server's console has the details)."
        return (*on_error, status_html("error", message))

    return wrapper


STOPPED = "Stopped: a running job ends at its next denoising step, a waiting one leaves the queue."


class _Page:
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

    def job(self, fn: Callable[..., tuple], on_error: tuple) -> Callable[..., Any]:
        """An event handler that runs `fn(values, progress, cancel)` (errors: `_guard`) in a
        worker thread as one cancellable job. When Gradio cancels the event (the tab's Stop
        button, or a client's cancel), Gradio stops waiting at once and frees the queue's
        slot, and `cancel` is set, so the pipeline stops at its next denoising step instead
        of running on unseen in the worker (its result, if any, is dropped)."""
        gr, guarded = self.gr, _guard(fn, on_error)

        async def run(v: dict, progress=gr.Progress(track_tqdm=True)):
            cancel = threading.Event()
            try:
                return await asyncio.to_thread(guarded, v, progress, cancel)  # copies Gradio's context (progress)
            except asyncio.CancelledError:
                cancel.set()
                raise

        run.__name__ = fn.__name__
        return run

    def buttons(self, tab: str, label: str) -> tuple[Any, Any]:
        """The tab's run and Stop buttons, side by side."""
        with self.gr.Row():
            run = self.gr.Button(label, variant="primary", elem_id=f"{tab}-run", scale=3)
            stop = self.gr.Button("stop", variant="stop", elem_id=f"{tab}-stop", scale=1)
        return run, stop

    def wire(
        self,
        tab: str,
        buttons: tuple[Any, Any],
        fn: Callable[..., tuple],
        on_error: tuple,
        inputs,
        outputs,
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

    def prompts_box(self, tab: str, lines: int = 2, first_only: bool = False):
        value = self.prompts.split("\n")[0] if first_only else self.prompts
        return self.gr.Textbox(value, lines=lines, label="prompts (one per line)", elem_id=f"{tab}-prompts")

    def seeds_box(self, tab: str):
        return self.gr.Textbox("0", label="seeds (separated by spaces)", elem_id=f"{tab}-seeds")

    def k_slider(self, label: str, value: int | None = None, every_channel: bool = False):
        # more would not be "a few channels" (the CLI takes any k); transport's measured default
        # on the built-in model is every channel (TransportConfig), so its slider reaches that far
        k_max = self.explorer.hidden_size if every_channel else min(self.explorer.hidden_size, 64)
        return self.gr.Slider(1, k_max, min(value or self.explorer.default_k, k_max), step=1, label=label)

    def statistic(self):
        return self.gr.Dropdown(list(STATISTICS), value="abs_mean", label="statistic (abs_mean: the paper's)")

    def foreground_picker(self, elem_id: str):
        return self.gr.Dropdown(
            list(FOREGROUND_RULES),
            value=DEFAULT_FOREGROUND,
            elem_id=elem_id,
            label=f"which K=2 cluster is the subject ({DEFAULT_FOREGROUND}: {FOREGROUND_RULES[DEFAULT_FOREGROUND].split(' (')[0]})",
        )

    def site_picker(self, label: str, elem_id: str | None = None):
        sites = self.explorer.sites
        return self.gr.Dropdown(sites, value=sites[len(sites) // 2], label=label, elem_id=elem_id)

    def settings_boxes(self, tab: str):
        gr = self.gr
        with gr.Row():
            steps = gr.Number(0, precision=0, minimum=0, label="steps (0: default)", elem_id=f"{tab}-steps")
            guidance = gr.Number(-1, label="guidance (-1: default)", elem_id=f"{tab}-guidance")
        return steps, guidance

    def window_boxes(self):
        gr = self.gr
        with gr.Row():
            start = gr.Number(0, precision=0, minimum=0, label="edit from step")
            stop = gr.Number(0, precision=0, minimum=0, label="edit until step (0: the last)")
        return start, stop

    def picture(self, label: str, elem_id: str | None = None, titled: bool = False, **kwargs):
        """An output picture; `titled` ones (plots with their own title) hide the label that would cover it."""
        return self.gr.Image(
            label=label, show_label=not titled, format="png", buttons=IMAGE_BUTTONS, elem_id=elem_id, **kwargs
        )

    def results(self, tab: str, label: str, command: str | None = None):
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


def _find_tab(page: _Page) -> None:
    gr, explorer = page.gr, page.explorer
    gr.Markdown("Record the channel statistics of every site and step and find the massive channels.")
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

    def run_find(v: dict, progress, cancel: threading.Event):
        progress(0, desc="generating")
        folder = page.downloads.folder("find")
        view = explorer.find(
            parse_prompts(v[prompts]),
            parse_seeds(v[seeds]),
            v[k],
            v[statistic],
            generation_settings(v[steps], v[guidance]),
            v[site],
            None if v[step] is None or v[step] < 0 else int(v[step]),
            cancel=cancel,
            out=folder,
        )
        summary = f"{len(view.table)} sites recorded; the surface shows step {view.surface_step}."
        return (
            view.top_vs_median,
            view.atlas,
            view.surface,
            view.images,
            gr.Dataframe(view.table, headers=view.headers),
            str(page.downloads.zip(folder)),
            result_status(summary, view.problems, len(view.result.images), "image"),
        )

    page.wire(
        "find",
        buttons,
        run_find,
        (None,) * 6,
        {prompts, seeds, k, statistic, site, step, steps, guidance},
        [top, atlas, surface, images, table, download, status],
    )


def _disrupt_tab(page: _Page) -> None:
    gr, explorer = page.gr, page.explorer
    gr.Markdown("Zero (or scale) the top-k channels against bottom-k and random-k controls, with identical noise.")
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

    def run_disrupt(v: dict, progress, cancel: threading.Event):
        def step(i: int, n: int, label: str) -> None:
            progress((i, n), desc=f"condition {label}")

        settings = generation_settings(v[steps], v[guidance])
        folder = page.downloads.folder("disrupt")
        view = explorer.disrupt(
            parse_prompts(v[prompts]),
            parse_seeds(v[seeds]),
            v[ks],
            v[rules],
            v[factor],
            v[draws],
            v[statistic],
            settings,
            parse_window(v[start], v[stop], explorer.num_steps(settings)),
            progress=step,
            cancel=cancel,
            out=folder,
        )
        summary = f"{len(view.table)} conditions generated."
        return (
            view.grid,
            view.curve,
            gr.Dataframe(view.table, headers=view.headers),
            notes_markdown(view.not_measured),
            str(page.downloads.zip(folder)),
            result_status(summary, view.problems, len(view.table), "condition"),
        )

    page.wire(
        "disrupt",
        buttons,
        run_disrupt,
        (None,) * 5,
        {prompts, seeds, ks, rules, factor, draws, statistic, start, stop, steps, guidance},
        [grid, curve, table, notes, download, status],
    )


def _segment_tab(page: _Page) -> None:
    gr, explorer = page.gr, page.explorer
    gr.Markdown(
        "K=2 masks from the massive channels at every site and step, against bottom-k, random-k and all channels."
    )
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
            overlays = page.picture("mask overlays", "segment-overlays", titled=True)
            miou = page.picture(
                "mIoU per site (built-in model: against exact ground truth)", "segment-miou", titled=True
            )
            table, notes, download = page.results("segment", "per rule: mIoU, as ditlens segment prints it")

    def run_segment(v: dict, progress, cancel: threading.Event):
        progress(0, desc="generating")
        folder = page.downloads.folder("segment")
        view = explorer.segment(
            parse_prompts(v[prompts]),
            parse_seeds(v[seeds]),
            v[k],
            v[rules],
            v[statistic],
            generation_settings(v[steps], v[guidance]),
            v[foreground],
            cancel=cancel,
            out=folder,
        )
        sites = view.result.sites
        chosen_site, chosen_step = (v[site] if v[site] in sites else sites[len(sites) // 2]), view.steps // 2
        summary = f"masks kept for {view.steps} steps x {len(sites)} sites. {view.note}".strip()
        return (
            results.put(view),
            explorer.overlays(view, chosen_site, chosen_step),
            view.miou_plot,
            gr.Dropdown(choices=sites, value=chosen_site),
            gr.Slider(0, view.steps - 1, chosen_step, step=1),
            gr.Dataframe(view.table, headers=view.headers),
            notes_markdown(view.not_measured),
            str(page.downloads.zip(folder)),
            result_status(summary, view.problems, len(view.result.images), "image"),
        )

    page.wire(
        "segment",
        buttons,
        run_segment,
        (gr.skip(), None, None, gr.skip(), gr.skip(), None, None, None),
        {prompts, seeds, k, rules, foreground, statistic, steps, guidance, site},
        [kept, overlays, miou, site, step, table, notes, download, status],
        progress_on=overlays,
    )

    def pick(key: str | None, site_name: str, step_index: float):
        view = results.get(key)
        if view is None:
            if key is None:
                return gr.skip(), status_html("info", "Run a segmentation first.")
            return gr.skip(), status_html(
                "info",
                f"This result is no longer kept (the server keeps the last {_count(results.size, 'segmentation')}); "
                "run the segmentation again.",
            )
        step_index = int(step_index)
        return explorer.overlays(view, site_name, step_index), status_html(
            "info", f"masks at {site_name}, step {step_index} (of the last run)"
        )

    # .input: a user's pick only; the run sets the pickers too, and its status must stay on the page
    for picker in (site, step):
        picker.input(_guard(pick, (gr.skip(),)), [kept, site, step], [overlays, status], show_progress="hidden")


def _transport_tab(page: _Page) -> None:
    gr, explorer = page.gr, page.explorer
    gr.Markdown(
        "Move the source's massive activations (its top-k channels, on every token or under a K=2 mask) into the target prompt's "
        "generation: alpha = 1 is the paper's full replacement, 0 the target alone."
    )
    with gr.Row():
        with gr.Column(scale=1):
            mode = gr.Radio(list(MODES), value=MODES[0], label="source", elem_id="transport-mode")
            source = gr.Textbox(page.source, label="source prompt", elem_id="transport-source")
            # image_mode None: Gradio hands over the uploaded file undecoded, whatever its mode, so
            # its size is checked (Limits.reference_px) before anything decodes it
            reference = gr.Image(
                type="filepath", image_mode=None, label="reference image", visible=False, elem_id="transport-reference"
            )
            caption = gr.Textbox(
                "",
                label="reference caption (without one: streams img, the text stream would be the empty prompt's)",
                visible=False,
                elem_id="transport-caption",
            )
            target = gr.Textbox(page.target, label="target prompt", elem_id="transport-target")
            alpha = gr.Slider(0, 1, 1, step=0.05, label="alpha (strength)", elem_id="transport-alpha")
            strip = gr.Checkbox(
                False, label=f"interpolation strip (alpha = {', '.join(f'{a:g}' for a in STRIP_ALPHAS)})"
            )
            with gr.Accordion("options", open=False, elem_id="transport-options"):
                k = page.k_slider("k (channels moved per site and step)", TransportConfig.k, every_channel=True)
                mask = gr.Dropdown(
                    list(APP_MASKS),
                    value=TransportConfig.mask,
                    label="spatial mask (whose K=2 foreground, or all tokens)",
                )
                foreground = page.foreground_picker("transport-foreground")
                streams = gr.Dropdown(
                    list(STREAMS),
                    value=TransportConfig.streams,
                    elem_id="transport-streams",
                    label="streams moved (img: image tokens, txt: text tokens)",
                )
                statistic = page.statistic()
                start, stop = page.window_boxes()
                with gr.Row():
                    source_seed = gr.Number(0, precision=0, label="source seed")
                    target_seed = gr.Number(1 if explorer.builtin else 0, precision=0, label="target seed")
                steps, guidance = page.settings_boxes("transport")
            buttons = page.buttons("transport", "transport")
        with gr.Column(scale=2):
            status = gr.HTML(elem_id="transport-status")
            result = page.picture("transported", "transport-result", height=DISPLAY_PIXELS + 40)
            strip_picture = page.picture("strip", "transport-strip", titled=True)
            table, notes, download = page.results(
                "transport", "per image: the scores of ditlens transport", "transport (with a strip: interpolate)"
            )

    def switch(chosen: str):
        text = chosen == MODES[0]
        return gr.Textbox(visible=text), gr.Image(visible=not text), gr.Textbox(visible=not text)

    mode.change(switch, [mode], [source, reference, caption], show_progress="hidden")

    def run_transport(v: dict, progress, cancel: threading.Event):
        progress(0, desc="generating source and target in one batch")
        settings = generation_settings(v[steps], v[guidance])
        config = TransportConfig(
            k=explorer.check_k(v[k]),
            alpha=float(v[alpha]),
            mask=v[mask],
            foreground=v[foreground],
            streams=v[streams],
            statistic=v[statistic],
            steps=parse_window(v[start], v[stop], explorer.num_steps(settings)),
            generation=settings,
        )
        target_prompt = parse_prompt(v[target], "target prompt")
        folder = page.downloads.folder("transport")
        seeds = dict(target_seed=int(v[target_seed] or 0), strip=v[strip], cancel=cancel, out=folder)
        if v[mode] == MODES[0]:
            source_prompt = parse_prompt(v[source], "source prompt")
            view = explorer.transport(
                target_prompt, config, source=source_prompt, source_seed=int(v[source_seed] or 0), **seeds
            )
        else:
            if not v[reference]:
                raise ValueError("Upload a reference image (or switch the source to 'two prompts').")
            view = explorer.transport(
                target_prompt,
                config,
                reference=v[reference],
                reference_prompt=" ".join((v[caption] or "").split()),
                **seeds,
            )
        summary = f"transported at alpha = {view.alpha:g}. {view.note}".strip()
        return (
            view.image,
            view.strip,
            gr.Dataframe(view.table, headers=view.headers),
            notes_markdown(view.not_measured),
            str(page.downloads.zip(folder)),
            result_status(summary, view.problems, len(view.table) + (v[mode] == MODES[0]), "image"),  # + the source
        )

    page.wire(
        "transport",
        buttons,
        run_transport,
        (None,) * 5,
        {
            mode,
            source,
            reference,
            caption,
            target,
            alpha,
            strip,
            k,
            mask,
            foreground,
            streams,
            statistic,
            start,
            stop,
            source_seed,
            target_seed,
            steps,
            guidance,
        },
        [result, strip_picture, table, notes, download, status],
    )


def build_app(explorer: Explorer):
    """The Gradio page (a `gr.Blocks`) over an `Explorer`, its queue bounded by the explorer's
    limits; `serve` launches it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home
    import gradio as gr

    page = _Page(gr, explorer)
    with gr.Blocks(title="ditlens", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# ditlens: massive activations in diffusion transformers\n{explorer.describe()}")
        with gr.Accordion("this app's limits", open=False):
            gr.Markdown(explorer.describe_limits())
        if explorer.builtin:
            from ..builtin.scenes import GRAMMAR, vocabulary

            with gr.Accordion("the built-in model's words", open=False):
                gr.Markdown(f"Prompts follow a small grammar: `{GRAMMAR}`\n\nWords: {', '.join(vocabulary())}")
        for name, tab in (
            ("find", _find_tab),
            ("disrupt", _disrupt_tab),
            ("segment", _segment_tab),
            ("transport", _transport_tab),
        ):
            with gr.Tab(name, id=name):
                tab(page)
    # one job at a time on the model (each tab's events share one concurrency slot); at most
    # `limits.queue` requests wait, and the page says "busy, try again" to the next one
    return app.queue(max_size=explorer.limits.queue, default_concurrency_limit=1)


def check_address(host: str, port: int) -> None:
    """Fail early, before a model loads, when the address cannot be served."""
    import socket

    if not 1 <= port <= 65535:
        raise ValueError(f"Port {port} is not a port number (1..65535).")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"Cannot serve on host {host!r}: {err.strerror}.") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as err:
            raise ValueError(
                f"Cannot serve on {host}:{port} ({err.strerror}); give another --port (or --host)."
            ) from None


def serve(
    pipe: Any,
    model: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    quiet: bool = False,
    limits: Limits | None = None,
    clip: str | Path | None = None,
) -> None:
    """Build the page for `pipe` and serve it until interrupted (Ctrl+C); `clip`, a local
    CLIPModel folder, adds CLIP score and CLIP-I to the scores."""
    check_address(host, port)
    explorer = Explorer(pipe, model, limits, clip)
    app = build_app(explorer)
    app.launch(
        server_name=host,
        server_port=port,
        quiet=True,
        show_error=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        share=False,
        inbrowser=False,
        css=CSS,
        footer_links=[],
        max_file_size=f"{explorer.limits.upload_mb}mb",
        prevent_thread_lock=True,
    )
    if not quiet:  # only once it serves
        print(f"ditlens app: {explorer.describe()}", flush=True)
        print(f"ditlens app: open http://{host}:{port} in a browser (Ctrl+C stops it)", flush=True)
    app.block_thread()
