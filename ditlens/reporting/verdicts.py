"""Verdicts on the paper's three findings, worded from the numbers they stand over.

Every headline that says whether a finding holds (bench reports, the demo, the app, the
README) comes from these functions, so a table and the sentence above it cannot disagree.
Each verdict names its criterion and the figures it was decided on. The thresholds are
fixed here, before any run: a finding *holds* when the effect is large against its
controls of the same size, *partly* when it is there but small or only on some of the
measures, and *does not hold* otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

HOLDS, PARTLY, FAILS = "holds", "partly holds", "does not hold"

# Finding 1: zeroing the top-k channels must hurt far more than zeroing bottom-k or random-k
FIDELITY_DROP = 0.30  # share of fully correct objects lost by top-k ...
CONTROL_DROP = 0.10  # ... while no control loses more than this
FRECHET_FACTOR = 5.0  # or (partly): top-k's Frechet distance at least this multiple of every control's
# Finding 2: top-k masks must beat the same-size controls
MASK_MARGIN = 0.10  # mIoU margin over bottom-k and random-k for "holds", on every image set
# Finding 3: the object takes the source's attributes while the target's layout stays
TRANSFER = 0.50  # share of pairs whose object takes the source's colour and shape (holds) ...
TRANSFER_PARTLY = 0.25  # ... or one of the two (partly)
# layout kept: the foreground IoU with the target alone is at least this share of a perfect
# transfer's (the oracle: the target's renders with the source's object drawn in its place).
# A share, not a fixed IoU: a circle in a square's place overlaps it by ~0.8, a star in a
# diamond's much less, and the fixed bar of 0.50 used before was missed by the oracle itself
# on world v2's 32 bench pairs (0.48).
LAYOUT_KEPT = 0.75
GHOSTING_MAX = 0.25  # and at most this share of the object region is noise (a transfer must be an object)
FEW_CHANNELS = 1 / 8  # "a few channels": at most this share of the hidden size (32 of the built-in 256)


@dataclass(frozen=True)
class Verdict:
    finding: str  # e.g. "Finding 2 (spatially organised)"
    status: str  # HOLDS, PARTLY or FAILS
    evidence: str  # the figures it was decided on
    criterion: str  # the rule, in words

    @property
    def headline(self) -> str:
        return f"{self.finding}: {self.status}"

    def sentence(self) -> str:
        return f"{self.headline}. {self.evidence} (Criterion: {self.criterion}.)"

    def as_dict(self) -> dict[str, str]:
        return {
            "finding": self.finding,
            "status": self.status,
            "evidence": self.evidence,
            "criterion": self.criterion,
            "text": self.sentence(),
        }


def disruption_verdict(base: dict[str, float], by_rule: dict[str, dict[int, dict[str, float]]]) -> Verdict:
    """base: {"accuracy", "frechet"} of the unedited images; by_rule["top"|"bottom"|"random"][k]:
    the same after zeroing k channels. Decided at the smallest k, where the claim is sharpest
    (a few channels matter, as many others do not)."""
    k = min(by_rule["top"])
    top = by_rule["top"][k]
    controls = {rule: by_rule[rule][k] for rule in ("bottom", "random") if rule in by_rule}
    drop = base["accuracy"] - top["accuracy"]
    control_drop = max(base["accuracy"] - c["accuracy"] for c in controls.values())
    control_fd = max(c["frechet"] for c in controls.values())
    fd_factor = top["frechet"] / max(control_fd, 1e-9)
    if drop >= FIDELITY_DROP and control_drop <= CONTROL_DROP:
        status = HOLDS
    elif fd_factor >= FRECHET_FACTOR or drop - control_drop >= FIDELITY_DROP:
        status = PARTLY
    else:
        status = FAILS
    evidence = (
        f"At k = {k}, zeroing the top-k channels moves the share of fully correct objects from {base['accuracy']:.3f} "
        f"to {top['accuracy']:.3f} (largest control drop {control_drop:.3f}) and the Frechet distance from "
        f"{base['frechet']:.1f} to {top['frechet']:.1f} (largest control {control_fd:.1f}, x{fd_factor:.1f})."
    )
    criterion = (
        f"holds if top-k costs >= {FIDELITY_DROP:.2f} of fidelity while bottom-k and random-k cost <= "
        f"{CONTROL_DROP:.2f}; "
        f"partly if top-k's Frechet distance is >= {FRECHET_FACTOR:g}x every control's, or top-k costs >= "
        f"{FIDELITY_DROP:.2f} more fidelity than any control"
    )
    return Verdict("Finding 1 (functionally critical)", status, evidence, criterion)


def segmentation_verdict(best: dict[str, dict[str, float]], k: int) -> Verdict:
    """best[image set][rule]: the best-site mIoU of the foreground rule's labelling, per image
    set (e.g. "generated, one-colour backgrounds", "renders"), for rules top, bottom, random
    (and, for reference, all and attention)."""
    margins = {name: rules["top"] - max(rules["bottom"], rules["random"]) for name, rules in best.items()}
    if all(m >= MASK_MARGIN for m in margins.values()):
        status = HOLDS
    elif all(m > 0 for m in margins.values()) or any(m >= MASK_MARGIN for m in margins.values()):
        status = PARTLY
    else:
        status = FAILS
    parts = []
    for name, rules in best.items():
        refs = ", ".join(f"{r} {rules[r]:.3f}" for r in ("all", "attention") if r in rules)
        parts.append(
            f"{name}: top-{k} {rules['top']:.3f} vs bottom-{k} {rules['bottom']:.3f} and random-{k} "
            f"{rules['random']:.3f} "
            f"(margin {margins[name]:+.3f}" + (f"; {refs}" if refs else "") + ")"
        )
    evidence = "Best-site mIoU, " + "; ".join(parts) + "."
    criterion = (
        f"holds if top-k masks beat bottom-k and random-k by >= {MASK_MARGIN:.2f} mIoU on every image set; partly if "
        "they "
        "beat both on every set by less, or by that much on some"
    )
    return Verdict("Finding 2 (spatially organised)", status, evidence, criterion)


def transfer_score(m: dict[str, float]) -> float:
    """Clean transfer that keeps the composition, as the transport bench ranks settings: the
    mean of the colour and shape transfer shares, times the foreground IoU with the target
    alone, times the share of the object region that is not noise (1 - ghosting), times the
    share of images whose background is the target's (where measured).

    Ghosting counts because the classifier reads pixel noise in a colour as an object of that
    colour: on the demo's pair, every channel copied under the source mask from another seed
    gave a "red circle" of noise (ghosting 0.65), which the first two factors alone scored as
    a full transfer. The background counts because transport succeeds when the object takes
    the source's attributes while the target's layout and background stay, and the IoU sees
    only the object's footprint: on v2 `l`'s 32 pairs, without this factor, copying under no
    mask at all (mask = all: background kept 0.09) won over the source's mask (0.72) by 0.088
    to 0.087."""
    transfer = (m["colour_from_source"] + m["shape_from_source"]) / 2
    return transfer * m["mask_iou_with_target"] * (1 - m["ghosting"]) * m.get("background_kept", 1.0)


def transport_verdict(
    per_k: dict[int, dict[str, float]],
    random_per_k: dict[int, dict[str, float]],
    hidden_size: int,
    chosen: dict[str, float],
    setting: str,
    baselines: dict[str, dict[str, float]],
    oracle: dict[str, float],
) -> Verdict:
    """per_k / random_per_k: scores at alpha = 1 of the top-k channels and of k random ones
    (colour_from_source, shape_from_source, both_from_source, mask_iou_with_target), per k.
    The finding is about a FEW channels, so it is decided on the best k <= FEW_CHANNELS of
    the hidden size; `chosen` (the bench's pick with every setting open, `setting` in words)
    and `baselines` (at the same alpha) are reported beside it. `oracle`: the same scores of
    a perfect transfer on the same pairs, whose layout IoU the layout bar is a share of."""
    few = {k: m for k, m in per_k.items() if k <= hidden_size * FEW_CHANNELS}
    k = max(few, key=lambda q: transfer_score(few[q]))
    m = few[k]
    both, iou = m["both_from_source"], m["mask_iou_with_target"]
    one = max(m["colour_from_source"], m["shape_from_source"])
    control = random_per_k.get(k)
    beats_control = control is None or transfer_score(m) > transfer_score(control)
    clean = m["ghosting"] <= GHOSTING_MAX
    layout_bar = LAYOUT_KEPT * oracle["mask_iou_with_target"]
    kept = iou >= layout_bar
    if both >= TRANSFER and kept and clean and beats_control:
        status = HOLDS
    elif one >= TRANSFER_PARTLY and kept and clean and beats_control:
        status = PARTLY
    else:
        status = FAILS

    def figures(x: dict[str, float]) -> str:
        return (
            f"colour {x['colour_from_source']:.2f}, shape {x['shape_from_source']:.2f}, both "
            f"{x['both_from_source']:.2f}, "
            f"layout IoU {x['mask_iou_with_target']:.2f}, ghosting {x['ghosting']:.2f}"
        )

    evidence = (
        f"At alpha = 1, the best few-channel setting (k = {k} of {hidden_size}) moves the source's {figures(m)}"
        + (f"; {k} random channels: {figures(control)}" if control is not None else "")
        + f". With every setting open ({setting}): {figures(chosen)}"
        + "".join(f"; {name}: {figures(b)}" for name, b in baselines.items())
        + f"; a perfect transfer (oracle: the target's renders with the source's object drawn in): {figures(oracle)}"
        + f". Layout bar: {LAYOUT_KEPT:.2f} x {oracle['mask_iou_with_target']:.2f} = {layout_bar:.2f}."
    )
    criterion = (
        f"decided at k <= {FEW_CHANNELS:g} of the hidden size; holds if colour and shape both move in >= "
        f"{TRANSFER:.2f} of pairs "
        f"with layout IoU >= {LAYOUT_KEPT:.2f} of the perfect transfer's and ghosting <= {GHOSTING_MAX:.2f}, "
        f"partly if one of them moves in >= "
        f"{TRANSFER_PARTLY:.2f} with the layout kept and the object clean; either way ahead of as many random channels"
    )
    return Verdict("Finding 3 (transferable)", status, evidence, criterion)


def segment_summary(best: dict[str, float], k: int, label: str) -> str:
    """One line over a segment run's best-site mIoU per rule (`best`): the verdict where top,
    bottom and random were all run, else the figures alone."""
    if all(rule in best for rule in ("top", "bottom", "random")):
        return segmentation_verdict({label: best}, k).sentence()
    return f"Best-site mIoU on {label}: " + ", ".join(f"{rule} {value:.3f}" for rule, value in best.items()) + "."
