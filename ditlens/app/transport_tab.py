"""The transport tab: move the source's massive activations (a source prompt's, or a reference
image's) into the target prompt's generation. `TransportRequest` is what one run asks;
`transport_view` turns its `TransportResult` into what the tab shows (and writes the files of
`ditlens transport`, or with a strip those of `ditlens interpolate`); `transport_tab` lays the
tab out and runs `Explorer.transport` from it."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..generation import to_pil
from ..transport import STREAMS, TransportConfig, TransportResult
from .degenerate import degenerate
from .downloads import cli_command, run_files, write_json
from .inputs import generation_settings, parse_prompt, parse_window
from .pictures import DISPLAY_PIXELS, opened, upscaled
from .status import result_status
from .tables import transport_table
from .widgets import Page

if TYPE_CHECKING:
    from .explorer import Explorer

MODES = ("two prompts", "reference image")
APP_MASKS = ("source", "target", "union", "all")  # "user" needs a mask image: the CLI offers it
STRIP_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the interpolation strip's frames

ABOUT = (
    "Move the source's massive activations (its top-k channels, on every token or under a K=2 mask) into the "
    "target prompt's generation: alpha = 1 is the paper's full replacement, 0 the target alone."
)


@dataclass(frozen=True)
class TransportRequest:
    """What one transport asks: text-conditioned with `source` (a prompt), image-conditioned
    with `reference` (an image file, described by `reference_prompt` or by nothing)."""

    target: str
    config: TransportConfig
    source: str | None = None
    reference: str | Path | None = None
    reference_prompt: str = ""
    strip: bool = False  # every alpha of STRIP_ALPHAS too, not only the config's
    source_seed: int = 0
    target_seed: int = 0

    @property
    def alpha(self) -> float:
        return self.config.alpha

    @property
    def alphas(self) -> list[float]:
        return sorted(set(STRIP_ALPHAS) | {self.alpha}) if self.strip else [self.alpha]

    @property
    def scored_source(self) -> str | None:
        """The source's words the scores compare with: the source prompt, or the reference's caption."""
        return self.source if self.reference is None else self.reference_prompt or None


@dataclass
class TransportView:
    """What the transport tab shows of one run (every view: see `ditlens.app.explorer`)."""

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


def transport_view(
    explorer: Explorer, result: TransportResult, request: TransportRequest, notes: list[str], out: str | Path | None
) -> TransportView:
    """The tab's scores, pictures and degenerate images of `result`; `out` gets the files of
    `ditlens transport`, or with a strip those of `ditlens interpolate` (its alphas: the
    strip's and the chosen one)."""
    scorers, not_measured = explorer.scorers_for([p for p in (request.scored_source, request.target) if p])
    if explorer.builtin and scorers.builtin and not request.scored_source:
        not_measured.insert(
            0,
            "attribute transfer, layout kept and ghosting: they compare with the source's "
            "caption (give the reference a caption)",
        )
    scores = scorers.score(result)
    headers, table = transport_table(scores)
    command = transport_command(explorer, request)
    with run_files(out, command) as folder:  # as `ditlens transport` (one alpha), or `ditlens interpolate` (a strip)
        result.save(folder)
        write_json(folder / "scores.json", {"images": scores, "not_measured": not_measured})
        strip = opened(_plot_strip(result, request, folder))
    return TransportView(
        result=result,
        image=upscaled(result.transported[request.alphas.index(request.alpha)]),
        strip=strip,
        alpha=request.alpha,
        note=" ".join(notes),
        table=table,
        headers=headers,
        not_measured=not_measured,
        problems=_problems(result, request),
        command=command,
    )


def transport_command(explorer: Explorer, request: TransportRequest) -> str:
    """The `ditlens transport` line (with a strip: `ditlens interpolate`) that writes the same files."""
    config = request.config
    options: list[tuple[str, Any]]
    if request.reference is not None:
        # the zip's source.png is the reference as the model saw it (resized): the command reads it
        options = [("--reference", "source.png"), ("--reference-prompt", request.reference_prompt or None)]
    else:
        options = [("--source", request.source), ("--source-seed", request.source_seed)]
    options += [("--target", request.target), ("--target-seed", request.target_seed), ("--k", config.k)]
    options += [("--mask", config.mask), ("--foreground", config.foreground), ("--streams", config.streams)]
    options += [
        ("--statistic", config.statistic),
        ("--window", list(config.step_window) if config.step_window else None),
    ]
    options += explorer.settings_options(config.generation) + explorer.clip_option()
    if request.strip:  # --alpha too: it is in settings.json
        options += [("--over", "alpha"), ("--alphas", request.alphas), ("--alpha", request.alpha)]
        return cli_command("interpolate", explorer.model, options)
    return cli_command("transport", explorer.model, options + [("--alpha", request.alpha)])


def _plot_strip(result: TransportResult, request: TransportRequest, folder: Path) -> Path:
    """strip.png as the command draws it; an interpolation strip also writes its frames."""
    if not request.strip:
        return result.plot_strip(folder / "strip.png", [(f"transported a={request.alpha:g}", result.transported[0])])
    (folder / "frames").mkdir(exist_ok=True)
    for i, (a, image) in enumerate(zip(request.alphas, result.transported)):
        to_pil(image[None])[0].save(folder / "frames" / f"frame_{i:03d}_alpha{a:.2f}.png")
    title = f"{request.target}  <-  {request.source or 'the reference image'}"
    return result.plot_strip(folder / "strip.png", title=title)


def _problems(result: TransportResult, request: TransportRequest) -> list[str]:
    """The degenerate images of a transport: the source (not an uploaded reference), the
    target alone, and each transported image against the target alone."""
    unedited = None if result.target is None else result.target[None]
    found = [
        degenerate("the source", result.source[None]) if request.reference is None else None,
        degenerate("the target alone", unedited) if unedited is not None else None,
        *(
            degenerate(f"the transported image at alpha = {a:g}", image[None], unedited)
            for a, image in zip(request.alphas, result.transported)
        ),
    ]
    return [p for p in found if p]


# ---- the tab ------------------------------------------------------------------------------------


@dataclass
class TransportForm:
    """The transport tab's inputs, in the order the page makes them: Gradio orders a set of
    inputs by creation, and API clients (`gradio_client`) pass them in that order."""

    mode: Any
    source: Any
    reference: Any
    caption: Any
    target: Any
    alpha: Any
    strip: Any
    k: Any
    mask: Any
    foreground: Any
    streams: Any
    statistic: Any
    start: Any
    stop: Any
    source_seed: Any
    target_seed: Any
    steps: Any
    guidance: Any

    def inputs(self) -> set[Any]:
        return {getattr(self, f.name) for f in fields(self)}


def layout(page: Page) -> None:
    """The tab's inputs and outputs, under its ABOUT line, and its handlers."""
    gr = page.gr
    with gr.Row():
        with gr.Column(scale=1):
            form = _transport_form(page)
            buttons = page.buttons("transport", "transport")
        with gr.Column(scale=2):
            status = gr.HTML(elem_id="transport-status")
            result = page.picture("transported", "transport-result", height=DISPLAY_PIXELS + 40)
            strip = page.picture("strip", "transport-strip", titled=True)
            table, notes, download = page.results(
                "transport", "per image: the scores of ditlens transport", "transport (with a strip: interpolate)"
            )

    def switch(chosen: str) -> tuple:
        text = chosen == MODES[0]
        return gr.Textbox(visible=text), gr.Image(visible=not text), gr.Textbox(visible=not text)

    form.mode.change(switch, [form.mode], [form.source, form.reference, form.caption], show_progress="hidden")

    def run_transport(v: dict, progress: Any, cancel: threading.Event) -> tuple:
        progress(0, desc="generating source and target in one batch")
        folder = page.downloads.folder("transport")
        view = _run_form(page.explorer, form, v, cancel, folder)
        summary = f"transported at alpha = {view.alpha:g}. {view.note}".strip()
        images = len(view.table) + (v[form.mode] == MODES[0])  # + the source
        return (
            view.image,
            view.strip,
            *page.finished(view, folder, result_status(summary, view.problems, images, "image")),
        )

    outputs = [result, strip, table, notes, download, status]
    page.wire("transport", buttons, run_transport, (None,) * 5, form.inputs(), outputs)


def _transport_form(page: Page) -> TransportForm:
    """The tab's inputs: the source (prompt or reference image), the target, alpha, and the options."""
    gr = page.gr
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
    strip = gr.Checkbox(False, label=f"interpolation strip (alpha = {', '.join(f'{a:g}' for a in STRIP_ALPHAS)})")
    with gr.Accordion("options", open=False, elem_id="transport-options"):
        k = page.k_slider("k (channels moved per site and step)", TransportConfig.k, every_channel=True)
        mask = gr.Dropdown(
            list(APP_MASKS), value=TransportConfig.mask, label="spatial mask (whose K=2 foreground, or all tokens)"
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
            target_seed = gr.Number(1 if page.explorer.builtin else 0, precision=0, label="target seed")
        steps, guidance = page.settings_boxes("transport")
    return TransportForm(
        mode=mode,
        source=source,
        reference=reference,
        caption=caption,
        target=target,
        alpha=alpha,
        strip=strip,
        k=k,
        mask=mask,
        foreground=foreground,
        streams=streams,
        statistic=statistic,
        start=start,
        stop=stop,
        source_seed=source_seed,
        target_seed=target_seed,
        steps=steps,
        guidance=guidance,
    )


def _run_form(explorer: Explorer, form: TransportForm, v: dict, cancel: threading.Event, out: Path) -> TransportView:
    """`Explorer.transport` on the form's values `v`: two prompts, or a reference image."""
    settings = generation_settings(v[form.steps], v[form.guidance])
    config = TransportConfig(
        k=explorer.check_k(v[form.k]),
        alpha=float(v[form.alpha]),
        mask=v[form.mask],
        foreground=v[form.foreground],
        streams=v[form.streams],
        statistic=v[form.statistic],
        step_window=parse_window(v[form.start], v[form.stop], explorer.num_steps(settings)),
        generation=settings,
    )
    target = parse_prompt(v[form.target], "target prompt")
    target_seed, strip = int(v[form.target_seed] or 0), bool(v[form.strip])
    run = functools.partial(
        explorer.transport, target, config, target_seed=target_seed, strip=strip, cancel=cancel, out=out
    )
    if v[form.mode] == MODES[0]:
        return run(source=parse_prompt(v[form.source], "source prompt"), source_seed=int(v[form.source_seed] or 0))
    if not v[form.reference]:
        raise ValueError("Upload a reference image (or switch the source to 'two prompts').")
    return run(reference=v[form.reference], reference_prompt=" ".join((v[form.caption] or "").split()))
