"""`ditlens app`: a local web app (Gradio) to look at and use a model's massive activations.

Two layers, so that the science stays in the library:

- `Explorer` computes. Each method validates the page's inputs, calls the library
  (`find_channels`, `disrupt`, `segment_generated`, `transport_text` / `transport_image`)
  and draws with `ditlens.plots`, returning a small view dataclass of PIL pictures and
  table rows. It imports no Gradio and can be used (and tested) on its own.
- `build_app` wires an `Explorer` to a Gradio page: one tab per capability, progress bars
  during generation (Gradio follows the pipeline's tqdm bar), and every error shown as a
  status line in the page. Tracebacks stay in the server's console.

Under load: every request is checked against `Limits` before any model runs; one job runs
on the model at a time, behind a queue of bounded length (a request beyond it is refused,
not left waiting); a running job stops at its next denoising step when the page's Stop
button (or any client) cancels it; and the server keeps only the last few results.

Offline by design: analytics off, the default theme's fonts are served by Gradio itself,
server-side rendering (which would need Node) off.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .adapters import adapter_for
from .channels import STATISTICS
from .disrupt import RULES as DISRUPT_RULES
from .disrupt import DisruptConfig, disrupt
from .disrupt import conditions as disrupt_conditions
from .find import FindConfig, find_channels
from .generation import GenerationSettings, default_steps, image_size, to_pil
from .images import load_image
from .masks import DEFAULT_FOREGROUND, FOREGROUND_RULES
from .plots import (
    image_grid,
    plot_channel_atlas,
    plot_image_table,
    plot_magnitude_surface,
    plot_miou_curves,
    plot_segment_overlays,
    plot_top_vs_median,
)
from .segment import RULES as SEGMENT_RULES
from .segment import SegmentConfig, SegmentResult, segment_generated
from .transport import STREAMS, TransportConfig, TransportResult, transport_image, transport_text
from .verdicts import segment_summary

log = logging.getLogger("ditlens.app")

MODES = ("two prompts", "reference image")
APP_MASKS = ("source", "target", "union", "all")  # "user" needs a mask image: the CLI offers it
STRIP_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the interpolation strip's frames
DISRUPT_KS = (1, 2, 4, 8, 16, 32)  # choices offered; the default is the demo's small / medium / large
IMAGE_BUTTONS = ["download", "fullscreen"]  # no "share": it would upload to a hosting service
MAX_OVERLAY_ROWS = 8  # overlays of more images would not fit a screen
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


@dataclass
class FindView:
    images: Image.Image  # the generated images, one row per seed
    top_vs_median: Image.Image
    atlas: Image.Image
    surface: Image.Image | None
    table: list[list[Any]]  # per site: top channels, ratio to median, stability
    headers: list[str] = field(
        default_factory=lambda: ["site", "top channels", "x median", "Jaccard prompts", "Jaccard steps"]
    )


@dataclass
class DisruptView:
    grid: Image.Image  # rows: rule, columns: k, first image
    table: list[list[Any]]
    headers: list[str]


@dataclass
class SegmentView:
    result: SegmentResult
    truth: torch.Tensor | None  # (n, H, W) bool ground truth (built-in model), else None
    miou_plot: Image.Image | None
    note: str = ""

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


def _upscaled(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL, upscaled with nearest neighbour so small images stay crisp."""
    pil = to_pil(image[None])[0]
    scale = max(1, DISPLAY_PIXELS // max(pil.size))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


_PLOTTING = threading.Lock()  # pyplot keeps global state: one picture at a time across the worker threads


def _picture(draw: Callable[[Path], Path]) -> Image.Image:
    """Run a `ditlens.plots` function into a temporary file and return the picture in memory."""
    with _PLOTTING, tempfile.TemporaryDirectory(prefix="ditlens-app-") as tmp:
        with Image.open(draw(Path(tmp) / "plot.png")) as image:
            return image.convert("RGB")


class Explorer:
    """The app's computations on one pipeline. Methods take page values and return views;
    bad values, and requests over `limits`, raise `ValueError` with a message for the page
    before any model runs.

    One job runs on the model at a time (a lock; Gradio's queue is not enough: it frees its
    slot as soon as a job is cancelled, while the job's thread runs on to its next step). A
    method given `cancel` stops at the next denoising step once the event is set, raising
    `Cancelled`."""

    def __init__(self, pipe: Any, model: str | None = None, limits: Limits | None = None):
        self.pipe = pipe
        self.model = model or "builtin"
        self.limits = limits or Limits()
        self.adapter = adapter_for(pipe)  # fails early, listing the supported classes
        self.sites = [s.name for s in self.adapter.sites()]
        self.hidden_size = self.adapter.hidden_size
        self._lock = threading.Lock()

    @property
    def builtin(self) -> bool:
        return self.model == "builtin"

    @property
    def default_k(self) -> int:
        return 2 if self.builtin else 4  # the built-in model has one or two massive channels per site

    def describe(self) -> str:
        transformer = type(getattr(self.pipe, "transformer", self.pipe)).__name__
        return (
            f"model: {self.model} ({type(self.pipe).__name__}, {transformer}), "
            f"{len(self.sites)} sites, {self.hidden_size} channels"
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
            "Stop ends a job at its next denoising step."
        )

    def num_steps(self, settings: GenerationSettings) -> int | None:
        return settings.num_inference_steps or default_steps(self.pipe)

    def check_prompts(self, prompts: list[str]) -> None:
        """The built-in model knows a small vocabulary: say so before generating anything."""
        if self.builtin:
            from .builtin.scenes import check_words

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
        surface_step: int = 0,
        cancel: threading.Event | None = None,
    ) -> FindView:
        self.check_request(prompts, seeds, settings)
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
                info["jaccard_across_prompts"],
                info["jaccard_across_steps"],
            ]
            for site, info in summary["sites"].items()
        ]
        surface = None
        if result.surface is not None:
            site = result.stats.meta["surface_site"]
            surface = _picture(
                lambda p: plot_magnitude_surface(result.surface, p, f"|x| at {site}, step {config.surface_step}")
            )
        scale = max(1, DISPLAY_PIXELS // 2 // max(result.images[0].size))  # small images: upscaled, crisp
        return FindView(
            images=_picture(lambda p: image_grid(result.images, p, columns=len(prompts), scale=scale)),
            top_vs_median=_picture(lambda p: plot_top_vs_median(result.samples, p, statistic)),
            atlas=_picture(lambda p: plot_channel_atlas(result.samples, p, statistic)),
            surface=surface,
            table=table,
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
        distances = result.distances()
        headers = ["condition", "PSNR to unedited (dB)"]
        correct = None
        if self.builtin:
            from .builtin.scenes import CaptionError
            from .metrics.fidelity import objects_fully_correct

            try:
                all_prompts = prompts * len(seeds)
                correct = {c.label: objects_fully_correct(imgs, all_prompts) for c, imgs in result.images.items()}
                headers.append("objects fully correct")
            except CaptionError:
                correct = None  # known words, but not the caption grammar: no classifier score
        table = []
        for label, d in distances.items():
            row = [label, "inf" if d["psnr_db"] > 99 else round(d["psnr_db"], 1)]
            if correct is not None:
                row.append(round(sum(correct[label]) / len(correct[label]), 2))
            table.append(row)
        rule_names, k_names, cells = result.grid_rows(0)
        baseline = result.baseline[0]
        grid = _picture(
            lambda p: plot_image_table(
                [[baseline] + row for row in cells],
                p,
                [f"{r}-k" for r in rule_names],
                ["none"] + [f"k={k}" for k in k_names],
                title=f"factor {factor:g} on the channels: {prompts[0]}" if len(prompts[0]) < 90 else "",
            )
        )
        return DisruptView(grid=grid, table=table, headers=headers)

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
    ) -> SegmentView:
        self.check_request(prompts, seeds, settings)
        if not rules:
            raise ValueError(f"Tick at least one channel rule ({', '.join(SEGMENT_RULES)}).")
        config = SegmentConfig(
            prompts=prompts, seeds=seeds, k=self.check_k(k), rules=list(rules), statistic=statistic,
            foreground=foreground, generation=settings,
        )
        with self.job(cancel):
            result = segment_generated(self.pipe, config)
        truth, miou_plot, note = None, None, ""
        if self.builtin:
            from .builtin.scenes import CaptionError
            from .metrics.fidelity import off_background_masks

            try:
                truth = off_background_masks(result.images, prompts * len(seeds))
            except CaptionError as err:
                note = f"No ground truth (so no mIoU): {err}"
        if truth is not None:
            scores = result.scores(truth)
            miou_plot = _picture(
                lambda p: plot_miou_curves(
                    {r: sc.miou.mean(-1) for r, sc in scores.items()}, result.sites, p,
                    f"K=2 masks vs ground truth (k={config.k}, {foreground} rule; dotted: oracle labelling)",
                    oracle={r: sc.oracle.mean(-1) for r, sc in scores.items()},
                )
            )
            best = {rule: float(sc.per_site()["miou"].max()) for rule, sc in scores.items()}
            note = segment_summary(best, config.k, f"these {len(result.images)} images")
        return SegmentView(result=result, truth=truth, miou_plot=miou_plot, note=note)

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
    ) -> TransportView:
        """Text-conditioned with `source`, image-conditioned with `reference` (a file path)."""
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
        note = ""
        if reference is not None:
            limits.check_prompts([target], "target prompt")
            if reference_prompt:
                limits.check_prompts([reference_prompt], "reference caption")
            limits.check_reference(reference)
            self.check_prompts([target] + ([reference_prompt] if reference_prompt else []))
            image, resized = load_image(reference, image_size(self.pipe, settings))  # to the model's size
            if resized:
                note = f"The reference image was resized from {resized.split(' from ')[-1]}."
            with self.job(cancel):
                result = transport_image(
                    self.pipe, image, target, config, reference_prompt=reference_prompt, alphas=alphas, seed=target_seed
                )
        else:
            limits.check_prompts([source], "source prompt")
            limits.check_prompts([target], "target prompt")
            self.check_prompts([source, target])
            with self.job(cancel):
                result = transport_text(
                    self.pipe, source, target, config, alphas=alphas, source_seed=source_seed, target_seed=target_seed
                )
        chosen = result.transported[alphas.index(alpha)]
        cells = [[result.source, result.target] + list(result.transported)]
        columns = ["reference" if reference is not None else "source", "target alone"] + [f"a={a:g}" for a in alphas]
        return TransportView(
            result=result,
            image=_upscaled(chosen),
            strip=_picture(lambda p: plot_image_table(cells, p, [""], columns, cell_inches=1.6)),
            alpha=alpha,
            note=note,
        )


# ---- the page ---------------------------------------------------------------------------------

CSS = """
.ditlens-status {padding: .5em .8em; border-radius: 6px; margin: .3em 0; font-size: .95em}
.ditlens-status.ok {background: #eef7ee; border: 1px solid #9c9}
.ditlens-status.error {background: #fdecea; border: 1px solid #e99; color: #611a15}
.ditlens-status.info {background: #f4f6fa; border: 1px solid #ccd}
#transport-result img {image-rendering: pixelated}  /* small images upscaled: crisp pixels */
"""


def status_html(kind: str, message: str) -> str:
    """A status line for the page: kind is ok, error or info; the message is escaped."""
    label = {"ok": "Done", "error": "Error", "info": ""}[kind]
    prefix = f"<b>{label}:</b> " if label else ""
    return f"<div class='ditlens-status {kind}'>{prefix}{html.escape(message)}</div>"


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
            from .builtin.examples import EXAMPLE_PROMPTS, EXAMPLE_TRANSPORT_PAIRS

            self.prompts = "\n".join(EXAMPLE_PROMPTS[:2])
            self.source, self.target = EXAMPLE_TRANSPORT_PAIRS[0]
        # one generation at a time across all tabs: one model, few cores
        self.busy = dict(concurrency_limit=1, concurrency_id="pipeline")

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
        self, tab: str, buttons: tuple[Any, Any], fn: Callable[..., tuple], on_error: tuple, inputs, outputs,
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
            list(FOREGROUND_RULES), value=DEFAULT_FOREGROUND, elem_id=elem_id,
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


def _find_tab(page: _Page) -> None:
    gr, explorer = page.gr, page.explorer
    gr.Markdown("Record the channel statistics of every site and step and find the massive channels.")
    with gr.Row():
        with gr.Column(scale=1):
            prompts, seeds = page.prompts_box("find"), page.seeds_box("find")
            k = page.k_slider("k (channels per site and step)")
            statistic = page.statistic()
            site = page.site_picker("site of the surface plot")
            step = gr.Number(0, precision=0, minimum=0, label="step of the surface plot")
            steps, guidance = page.settings_boxes("find")
            buttons = page.buttons("find", "find channels")
        with gr.Column(scale=3):
            status = gr.HTML(elem_id="find-status")
            top = page.picture("per site: top-1/2/3 channels vs the median channel", "find-top", titled=True)
            atlas = page.picture("channel atlas: top-1 channel per site and step", "find-atlas", titled=True)
            with gr.Row():
                surface = page.picture("token x channel surface at the chosen site and step", titled=True)
                images = page.picture("generated images (rows: seeds)")
            table = gr.Dataframe(label="per site", interactive=False)

    def run_find(v: dict, progress, cancel: threading.Event):
        progress(0, desc="generating")
        view = explorer.find(
            parse_prompts(v[prompts]),
            parse_seeds(v[seeds]),
            v[k],
            v[statistic],
            generation_settings(v[steps], v[guidance]),
            v[site],
            v[step],
            cancel=cancel,
        )
        done = status_html("ok", f"{len(view.table)} sites recorded.")
        return (
            view.top_vs_median,
            view.atlas,
            view.surface,
            view.images,
            gr.Dataframe(view.table, headers=view.headers),
            done,
        )

    page.wire(
        "find", buttons, run_find, (None,) * 5,
        {prompts, seeds, k, statistic, site, step, steps, guidance},
        [top, atlas, surface, images, table, status],
    )


def _disrupt_tab(page: _Page) -> None:
    gr, explorer = page.gr, page.explorer
    gr.Markdown("Zero (or scale) the top-k channels against bottom-k and random-k controls, with identical noise.")
    with gr.Row():
        with gr.Column(scale=1):
            prompts, seeds = page.prompts_box("disrupt", lines=1, first_only=True), page.seeds_box("disrupt")
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
            table = gr.Dataframe(label="per condition", interactive=False)

    def run_disrupt(v: dict, progress, cancel: threading.Event):
        def step(i: int, n: int, label: str) -> None:
            progress((i, n), desc=f"condition {label}")

        settings = generation_settings(v[steps], v[guidance])
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
        )
        done = status_html("ok", f"{len(view.table)} conditions generated.")
        return view.grid, gr.Dataframe(view.table, headers=view.headers), done

    page.wire(
        "disrupt", buttons, run_disrupt, (None, None),
        {prompts, seeds, ks, rules, factor, draws, statistic, start, stop, steps, guidance},
        [grid, table, status],
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

    def run_segment(v: dict, progress, cancel: threading.Event):
        progress(0, desc="generating")
        view = explorer.segment(
            parse_prompts(v[prompts]),
            parse_seeds(v[seeds]),
            v[k],
            v[rules],
            v[statistic],
            generation_settings(v[steps], v[guidance]),
            v[foreground],
            cancel=cancel,
        )
        sites = view.result.sites
        chosen_site, chosen_step = (v[site] if v[site] in sites else sites[len(sites) // 2]), view.steps // 2
        done = status_html("ok", f"masks kept for {view.steps} steps x {len(sites)} sites. {view.note}".strip())
        return (
            results.put(view),
            explorer.overlays(view, chosen_site, chosen_step),
            view.miou_plot,
            gr.Dropdown(choices=sites, value=chosen_site),
            gr.Slider(0, view.steps - 1, chosen_step, step=1),
            done,
        )

    page.wire(
        "segment", buttons, run_segment, (gr.skip(), None, None, gr.skip(), gr.skip()),
        {prompts, seeds, k, rules, foreground, statistic, steps, guidance, site},
        [kept, overlays, miou, site, step, status],
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
            "ok", f"masks at {site_name}, step {step_index}"
        )

    for picker in (site, step):
        picker.change(_guard(pick, (gr.skip(),)), [kept, site, step], [overlays, status], show_progress="hidden")


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
            caption = gr.Textbox("", label="reference caption (optional)", visible=False, elem_id="transport-caption")
            target = gr.Textbox(page.target, label="target prompt", elem_id="transport-target")
            alpha = gr.Slider(0, 1, 1, step=0.05, label="alpha (strength)", elem_id="transport-alpha")
            strip = gr.Checkbox(
                False, label=f"interpolation strip (alpha = {', '.join(f'{a:g}' for a in STRIP_ALPHAS)})"
            )
            with gr.Accordion("options", open=False, elem_id="transport-options"):
                k = page.k_slider("k (channels moved per site and step)", TransportConfig.k, every_channel=True)
                mask = gr.Dropdown(list(APP_MASKS), value=TransportConfig.mask, label="spatial mask (whose K=2 foreground, or all tokens)")
                foreground = page.foreground_picker("transport-foreground")
                streams = gr.Dropdown(list(STREAMS), value=TransportConfig.streams, label="streams moved (img: image tokens, txt: text tokens)")
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
        seeds = dict(target_seed=int(v[target_seed] or 0), strip=v[strip], cancel=cancel)
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
        return view.image, view.strip, status_html("ok", f"transported at alpha = {view.alpha:g}. {view.note}".strip())

    page.wire(
        "transport", buttons, run_transport, (None, None),
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
        [result, strip_picture, status],
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
            from .builtin.scenes import GRAMMAR, vocabulary

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
) -> None:
    """Build the page for `pipe` and serve it until interrupted (Ctrl+C)."""
    check_address(host, port)
    explorer = Explorer(pipe, model, limits)
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
