"""`Explorer`: the app's computations on one pipeline, without Gradio.

Each capability method takes the page's values, checks them against `Limits` (and the
built-in model's words) before any model runs, runs the library's capability while holding
the model (one job at a time, cancellable between denoising steps) and returns the tab's
view: a small dataclass of PIL pictures and table rows, with the run's result object. The
views are made in the tab modules (`find_tab.find_view`, ...).

Every view also carries its run's result object, its scores as the command reports them
(`table` under `headers`, and `not_measured`: what could not be measured and why; find's
table is its channel summary), the degenerate images found (`problems`: one phrase per
group of images holding one, empty if none) and the `ditlens` command line that writes the
same files (`command`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from ..adapters import adapter_for
from ..choices import DEFAULT_FOREGROUND
from ..disrupt import RULES as DISRUPT_RULES
from ..disrupt import DisruptConfig, disrupt
from ..disrupt import conditions as disrupt_conditions
from ..find import FindConfig, find_channels
from ..generation import GenerationSettings, default_steps, image_size
from ..io.images import load_image
from ..metrics.scores import Scorers
from ..models import is_builtin
from ..segment import RULES as SEGMENT_RULES
from ..segment import SegmentConfig, segment_generated
from ..transport import TransportConfig, transport_image, transport_text
from .disrupt_tab import DisruptView, disrupt_view
from .downloads import cli_command
from .find_tab import FindView, find_view
from .limits import Limits, plural
from .segment_tab import SegmentView, overlays, segment_view
from .status import Cancelled
from .transport_tab import TransportRequest, TransportView, transport_view


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

            device = next(self.adapter.transformer.parameters()).device
            clip_scorer = ClipScorer.from_pretrained(clip, device=device)
        self.scorers = Scorers(builtin=self.builtin, clip=clip_scorer)
        self._lock = threading.Lock()

    @property
    def builtin(self) -> bool:
        return is_builtin(self.model)

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

    # ---- checks: before any model runs -------------------------------------------------------

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
        counted = [plural(len(prompts), "prompt"), plural(len(seeds), "seed")]
        if conditions > 1:
            counted.append(plural(conditions, "condition"))
        limits.check_work(len(prompts) * len(seeds) * conditions, self.num_steps(settings), " x ".join(counted))
        self.check_prompts(prompts)

    def check_transport(self, request: TransportRequest) -> None:
        """What every transport asks (source, target and each alpha), against `limits`."""
        limits, settings = self.limits, request.config.generation
        limits.check_settings(settings)
        alphas = len(request.alphas)
        limits.check_work(2 + alphas, self.num_steps(settings), f"source, target and {alphas} alphas")
        limits.check_seeds([request.source_seed], "source seed")
        limits.check_seeds([request.target_seed], "target seed")
        self.check_k(request.config.k)

    def check_source(self, source: str, target: str) -> list[str]:
        """A text-conditioned transport's two prompts; no notes for the page."""
        self.limits.check_prompts([source], "source prompt")
        self.limits.check_prompts([target], "target prompt")
        self.check_prompts([source, target])
        return []

    def check_reference(self, request: TransportRequest, reference: str | Path) -> list[str]:
        """An image-conditioned transport's target, reference image and caption; the notes the
        page shows of a reference without a caption."""
        limits, caption = self.limits, request.reference_prompt
        limits.check_prompts([request.target], "target prompt")
        limits.check_reference(reference)
        notes = []
        if caption:
            limits.check_prompts([caption], "reference caption")
        elif request.config.streams != "img":
            self.check_uncaptioned(request.config.streams)
            notes.append(
                "No caption: the reference's text row is the empty prompt, so the text stream moved "
                "carries no description of the reference."
            )
        else:
            notes.append("No caption: the reference's text row is the empty prompt.")
        self.check_prompts([request.target] + ([caption] if caption else []))
        return notes

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

    # ---- the command line that writes a run's files ----------------------------------------

    def settings_options(self, settings: GenerationSettings) -> list[tuple[str, Any]]:
        return [
            ("--steps", settings.num_inference_steps),
            ("--guidance", settings.guidance_scale),
            ("--height", settings.height),
            ("--width", settings.width),
        ]

    def clip_option(self) -> list[tuple[str, Any]]:
        return [("--clip", self.clip_path)]

    def command(
        self,
        name: str,
        prompts: list[str],
        seeds: list[int],
        options: list[tuple[str, Any]],
        settings: GenerationSettings,
        clip: bool = False,
    ) -> str:
        """The `ditlens NAME` line that writes a run's files: each prompt, the seeds, `options`,
        the generation settings and, for a tab scored with CLIP (`clip`), the CLIP folder."""
        given = [*(("--prompt", p) for p in prompts), ("--seeds", seeds), *options, *self.settings_options(settings)]
        return cli_command(name, self.model, given + (self.clip_option() if clip else []))

    # ---- one job at a time on the model ----------------------------------------------------

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

    # ---- the capabilities: check, run on the model, make the tab's view ----------------------

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
            surface_site=surface_site or None,
            surface_step=int(surface_step),
            generation=settings,
        )
        with self.job(cancel):
            result = find_channels(self.pipe, config)
        return find_view(self, result, settings, out)

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
            step_window=window,
            generation=settings,
        )
        self.check_request(prompts, seeds, settings, conditions=len(disrupt_conditions(config)))
        with self.job(cancel):
            result = disrupt(self.pipe, config, progress=progress)
        return disrupt_view(self, result, out)

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
        return segment_view(self, result, config, out)

    def overlays(self, view: SegmentView, site: str, step: int) -> Image.Image:
        """Masks of one site and step over the images: no generation, the masks are kept."""
        site, step = view.result.view(site, step)  # "Unknown site" or a step outside the schedule
        return overlays(view, site, step)

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
        request = TransportRequest(target, config, source, reference, reference_prompt, strip, source_seed, target_seed)
        self.check_transport(request)
        alphas = request.alphas
        if reference is not None:
            notes = self.check_reference(request, reference)
            image, resized = load_image(reference, image_size(self.pipe, config.generation))  # to the model's size
            if resized:
                notes.insert(0, f"The reference image was resized from {resized.split(' from ')[-1]}.")
            with self.job(cancel):
                result = transport_image(
                    self.pipe, image, target, config, reference_prompt=reference_prompt, alphas=alphas, seed=target_seed
                )
        elif source is not None:  # always, where there is no reference (checked above)
            notes = self.check_source(source, target)
            with self.job(cancel):
                result = transport_text(
                    self.pipe, source, target, config, alphas=alphas, source_seed=source_seed, target_seed=target_seed
                )
        return transport_view(self, result, request, notes, out)
