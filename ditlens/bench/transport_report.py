"""The built-in transport bench's report: its tables, the verdict on Finding 3 and the text
of each section, worded from the numbers `transport.py` measured (nothing here runs a model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..reporting.report import Section
from ..reporting.verdicts import Verdict, transfer_score, transport_verdict
from .builtin_model import model_sentence
from .reports import provenance
from .worlds import BENCH_SEED

if TYPE_CHECKING:  # transport.py imports this module to word its report
    from .transport import Sweep

Scores = dict[str, float]
TRANSPORT = "massive-channel transport"  # the strength curve's row of the chosen setting
ORACLE = "perfect transfer (oracle)"  # the target's renders with the source's object drawn in

#: transport scores -> table headers; texture_from_source is world v2's alone
NAMES = {
    "colour_from_source": "colour from source",
    "shape_from_source": "shape from source",
    "texture_from_source": "texture from source",
    "both_from_source": "colour+shape from source",
    "others_kept": "other object kept",
    "mask_iou_with_target": "mask IoU with target",
    "background_kept": "background kept",
    "ghosting": "ghosting",
}
#: the columns of each table, in order
SWEEP_KEYS = (
    "colour_from_source",
    "shape_from_source",
    "texture_from_source",
    "both_from_source",
    "mask_iou_with_target",
    "background_kept",
    "ghosting",
)
CURVE_KEYS = (
    "both_from_source",
    "colour_from_source",
    "shape_from_source",
    "texture_from_source",
    "mask_iou_with_target",
    "background_kept",
    "ghosting",
)
TWO_OBJECT_KEYS = (
    "both_from_source",
    "shape_from_source",
    "texture_from_source",
    "others_kept",
    "mask_iou_with_target",
    "ghosting",
)


def _keys(keys: tuple[str, ...], textured: bool) -> list[str]:
    return [k for k in keys if textured or k != "texture_from_source"]


def _cells(m: Scores, keys: list[str]) -> list[str]:
    """Table cells of `keys` in m; "—" for a score this run could not measure."""
    return [f"{m[k]:.3f}" if k in m else "—" for k in keys]


def intro(command: str, started: float, model: dict[str, Any], n_pairs: int, textured: bool) -> str:
    return (
        f"{provenance(command, f'seed {BENCH_SEED}', started)}. {model_sentence(model)}. {n_pairs} held-out caption "
        f"pairs (same position and size; another shape{', colour and texture' if textured else ' and colour'})."
    )


def chosen_setting(sweep: Sweep) -> str:
    """The chosen setting in words."""
    c = sweep.chosen
    window = "all steps" if c.step_window is None else f"steps [{c.step_window[0]}, {c.step_window[1]})"
    return f"k = {c.k}, {window}, {sweep.blocks} blocks, mask = {c.mask}, streams = {c.streams}"


def verdict_section(
    textured: bool, sweep: Sweep, curve: dict[float, Scores], baselines: dict[str, dict[float, Scores]], oracle: Scores
) -> tuple[Section, Verdict | None]:
    """The first section: Finding 3's verdict at alpha = 1, or why it is not decided (no
    transfer score); and the verdict."""
    if not sweep.scored:
        text = (
            "Not decided: whether the object takes the source's attributes needs a v2 attribute classifier (see Not "
            "measured). The tables below still show, for every setting, how well the target's layout is kept (mask "
            "IoU with the target alone) and how much of the object region is noise (ghosting)."
        )
        return Section("Finding 3 (transferable): not decided", text, []), None
    verdict = transport_verdict(
        sweep.top_k,
        sweep.random_k,
        sweep.hidden,
        curve[1.0] if 1.0 in curve else curve[max(curve)],
        chosen_setting(sweep),
        {name: table[1.0] for name, table in baselines.items() if 1.0 in table},
        oracle,
    )
    texture = (
        " World v2 objects also have a texture: 'texture from source' is the share whose object takes the source's "
        "texture too (reported beside; the score and the verdict count colour and shape, as on world v1)."
        if textured
        else ""
    )
    text = (
        verdict.sentence() + " Pixel blending at alpha = 1 is the source image itself, so its "
        "transfer is an upper bound on a copy, not a method." + texture
    )
    return Section(verdict.headline, text, []), verdict


def defaults_section(textured: bool, sweep: Sweep) -> Section:
    """How the defaults were chosen, what was chosen, and every setting's scores."""
    keys = _keys(SWEEP_KEYS, textured)
    header = ["setting", *[NAMES[k] if k != "both_from_source" else "colour+shape" for k in keys], "score"]
    rows = [
        [name, *_cells(m, keys), f"{transfer_score(m):.3f}" if sweep.scored else "—"]
        for name, m in sweep.scores.items()
    ]
    setting = chosen_setting(sweep)
    if sweep.scored:
        chosen = f"Chosen: {setting}. {_edge(sweep)}"
    else:
        chosen = (
            "Not chosen: with no transfer score there is nothing to rank, so the sweep's base setting runs "
            f"throughout ({setting})."
        )
    text = (
        "One factor at a time at alpha = 1 (k, then the step window, then the block kinds, then the mask origin, "
        "then the streams), scored by (mean of the shares of images whose object takes the source's colour, and its "
        "shape) x (foreground IoU with the target alone) x (1 - ghosting) x (background kept): the classifier reads "
        "noise of a colour as an object of that colour, so a noisy object must not count as a transfer, and the IoU "
        "sees only the object's footprint, so a setting that redraws the background must not count as keeping the "
        "composition. K=2 masks name the subject by the "
        f"'{sweep.chosen.foreground}' rule. {chosen}"
    )
    title = "Defaults chosen by measurement" if sweep.scored else "Defaults: not chosen (no transfer score)"
    return Section(title, text, [], [header, *rows])


def _edge(sweep: Sweep) -> str:
    """Whether the k sweep shows what lies past its winner."""
    past, k = sweep.past_the_winner, sweep.chosen.k
    if past:
        return f"The k sweep runs past its winner (k = {', '.join(map(str, past))} scored lower)."
    return f"The winner k = {k} is the largest value tried" + (
        " (every channel)." if k == sweep.hidden else "; the sweep does not show what lies beyond it."
    )


def curve_section(
    textured: bool, curve: dict[float, Scores], baselines: dict[str, dict[float, Scores]], oracle: Scores
) -> Section:
    """The chosen setting over alpha, against the two baselines at the same alphas, and the
    oracle's row."""
    keys = _keys(CURVE_KEYS, textured)
    table = [["method", "alpha", *[NAMES[k] for k in keys]]]
    for method, by_alpha in [(TRANSPORT, curve), *baselines.items()]:
        table += [[method, f"{a:g}", *_cells(m, keys)] for a, m in by_alpha.items()]
    table.append([ORACLE, "—", *_cells(oracle, keys)])
    text = (
        "With the chosen settings, over alpha; text-embedding interpolation and pixel blending at the same alpha "
        "for comparison. Transfer = the object at the target's position takes the source's colour and shape "
        "(classifier); preservation = foreground IoU with the target alone and its background kept; ghosting = "
        "share of object-region pixels matching neither object colour nor the target's background"
        + (" (world v2: lying on none of their colour bands)." if textured else ".")
        + f" Last row, {ORACLE}: each target caption's render and the same render with the source's object drawn "
        "in its place (same position, size" + (" and rotation" if textured else "") + "), scored alike: not a "
        "method but the ceiling of each score, a layout IoU below 1 (the source's shape covers other pixels) and "
        "what the classifier reads off a transfer that is exact."
    )
    return Section(
        "Strength curve and baselines at matched strength",
        text,
        [("transport_strips.png", "source, target alone, transported over alpha")],
        table,
    )


def two_object_section(textured: bool, pairs: list[tuple[str, str]], means: dict[str, dict[float, Scores]]) -> Section:
    """Targets with a second object: does each method keep it while moving the first?"""
    keys = _keys(TWO_OBJECT_KEYS, textured)
    table = [["method", "alpha", *[NAMES[k] for k in keys]]]
    for method, by_alpha in means.items():
        table += [[method, f"{a:g}", *_cells(m, keys)] for a, m in by_alpha.items()]
    text = (
        f"{len(pairs)} more held-out pairs whose target has a second object elsewhere (another position, shape"
        f"{', colour and texture' if textured else ' and colour'}); transport under each mask origin and the two "
        "baselines over alpha. Other object kept = the classifier finds it at its position with its shape and colour"
        f"{' (not its texture: object texture is the weakest head of the v2 classifier)' if textured else ''}. "
        "The paper's claim is a localised edit: the source's meaning at its slot, the rest of the target kept."
    )
    return Section(
        "Two-object targets: is the edit local?",
        text,
        [("transport_two_object_strips.png", "source, target alone, transported over alpha")],
        table,
    )


def image_section(textured: bool, image_cond: dict[str, Scores]) -> Section:
    """Transport from a reference render, re-noised and ODE-inverted."""
    keys = _keys(CURVE_KEYS, textured)
    table = [["reference path", *[NAMES[k].replace("from source", "from reference") for k in keys]]]
    table += [[path, *_cells(m, keys)] for path, m in image_cond.items()]
    return Section(
        "Image-conditioned transport (subject from a reference render)",
        "Reference = exact render of the source caption, its caption as the reference prompt, alpha = 1, the chosen "
        "settings; the reference row reaches each step's noise level either re-noised with fixed noise (renoise) "
        "or along its own Euler inversion of the flow ODE (invert). Same scoring as above.",
        [("transport_image_strips.png", "reference, target alone, transported (first rows renoise, then invert)")],
        table,
    )
