"""Verdicts follow the numbers: each finding worded as holding, partly or failing from
figures built to land in each case."""

from __future__ import annotations

from ditlens.reporting.verdicts import (
    FAILS,
    HOLDS,
    PARTLY,
    disruption_verdict,
    segment_summary,
    segmentation_verdict,
    transfer_score,
    transport_verdict,
)


def disruption(top_acc: float, control_acc: float, top_fd: float, control_fd: float):
    by_rule = {
        "top": {1: {"accuracy": top_acc, "frechet": top_fd}, 8: {"accuracy": 0.0, "frechet": 999.0}},
        "bottom": {1: {"accuracy": control_acc, "frechet": control_fd}, 8: {"accuracy": 0.9, "frechet": 2.0}},
        "random": {1: {"accuracy": 1.0, "frechet": 1.0}, 8: {"accuracy": 1.0, "frechet": 1.0}},
    }
    return disruption_verdict({"accuracy": 1.0, "frechet": 0.5}, by_rule)


def test_finding_1_is_decided_at_the_smallest_k():
    assert disruption(0.2, 0.95, 200.0, 3.0).status == HOLDS
    # fidelity kept, but the Frechet distance explodes against the controls: partly
    partly = disruption(1.0, 1.0, 187.5, 9.5)
    assert partly.status == PARTLY and "187.5" in partly.evidence and "x19.7" in partly.evidence
    # a control hurts as much as the top channels: the finding fails, and says so
    fails = disruption(0.9, 0.9, 4.0, 3.0)
    assert fails.status == FAILS
    assert fails.headline == "Finding 1 (functionally critical): does not hold"
    assert "does not hold" in fails.sentence() and "k = 1" in fails.evidence


def test_finding_2_needs_the_margin_on_every_image_set():
    strong = {"top": 0.9, "bottom": 0.4, "random": 0.7, "all": 0.8}
    weak = {"top": 0.85, "bottom": 0.45, "random": 0.80}
    lost = {"top": 0.26, "bottom": 0.33, "random": 0.53}
    assert segmentation_verdict({"generated": strong, "renders": strong}, 2).status == HOLDS
    assert segmentation_verdict({"generated": strong, "renders": weak}, 2).status == PARTLY
    assert segmentation_verdict({"generated": weak}, 2).status == PARTLY
    fails = segmentation_verdict({"generated": lost, "renders": lost}, 2)
    assert fails.status == FAILS and "does not hold" in fails.sentence()
    assert "top-2 0.260 vs bottom-2 0.330 and random-2 0.530 (margin -0.270" in fails.evidence
    assert "does not hold" in segment_summary(lost, 2, "these 3 images")
    assert segment_summary({"top": 0.5, "all": 0.6}, 2, "x") == "Best-site mIoU on x: top 0.500, all 0.600."


def test_finding_3_is_decided_on_a_few_channels_against_random_ones():
    def scores(colour, shape, both, iou, ghosting=0.1):
        return {
            "colour_from_source": colour,
            "shape_from_source": shape,
            "both_from_source": both,
            "mask_iou_with_target": iou,
            "ghosting": ghosting,
        }

    nothing = scores(0.0, 0.0, 0.0, 0.99)
    strong = scores(0.8, 0.7, 0.6, 0.7)
    every_channel = scores(0.56, 0.41, 0.22, 0.36)
    exact = scores(1.0, 1.0, 1.0, 0.76, ghosting=0.0)  # the oracle: layout bar 0.75 x 0.76 = 0.57

    def verdict(per_k, random_per_k, chosen, setting, baselines, oracle=exact):
        return transport_verdict(per_k, random_per_k, 256, chosen, setting, baselines, oracle)

    assert verdict({2: strong, 256: every_channel}, {2: nothing}, every_channel, "k = 256", {}).status == HOLDS
    # as many random channels move as much: no finding
    assert verdict({2: strong}, {2: strong}, strong, "k = 2", {}).status == FAILS
    assert verdict({8: scores(0.0, 0.72, 0.0, 0.6)}, {8: nothing}, strong, "k = 8", {}).status == PARTLY
    # the classifier reads noise of the source's colour as the source's object: noise is no transfer
    noisy = scores(1.0, 1.0, 1.0, 0.9, ghosting=0.65)
    assert verdict({2: noisy}, {2: nothing}, noisy, "k = 2", {}).status == FAILS
    # the layout bar is a share of the oracle's IoU: 0.45 is kept where a perfect transfer keeps
    # 0.55 (bar 0.41), not where it keeps 0.76 (bar 0.57)
    moved = scores(0.0, 0.6, 0.0, 0.45)
    assert verdict({8: moved}, {8: nothing}, moved, "k = 8", {}).status == FAILS
    kept = verdict({8: moved}, {8: nothing}, moved, "k = 8", {}, oracle=scores(1.0, 1.0, 1.0, 0.55, ghosting=0.0))
    assert kept.status == PARTLY and "Layout bar: 0.75 x 0.55 = 0.41." in kept.evidence
    # only a copy of every channel moves anything: decided on the few, so it does not hold
    fails = verdict(
        {2: nothing, 32: scores(0.0, 0.06, 0.0, 0.89), 256: every_channel},
        {},
        every_channel,
        "k = 256, mask = source",
        {"pixel blending": scores(1, 1, 1, 0.18)},
    )
    assert fails.status == FAILS and "does not hold" in fails.sentence()
    assert "k = 32 of 256" in fails.evidence and "(k = 256, mask = source): colour 0.56" in fails.evidence
    assert "pixel blending: colour 1.00, shape 1.00, both 1.00, layout IoU 0.18, ghosting 0.10" in fails.evidence


def test_the_transfer_score_by_hand():
    """(colour + shape) / 2 x IoU x (1 - ghosting) x background kept; a row without the
    background (a score of no classifier's background head) counts it as kept."""
    row = {
        "colour_from_source": 0.2,
        "shape_from_source": 0.6,
        "mask_iou_with_target": 0.5,
        "ghosting": 0.25,
        "background_kept": 0.8,
    }
    assert abs(transfer_score(row) - 0.4 * 0.5 * 0.75 * 0.8) < 1e-12
    assert abs(transfer_score({k: v for k, v in row.items() if k != "background_kept"}) - 0.4 * 0.5 * 0.75) < 1e-12
    # v2 l's 32 pairs, mask stage: the source's mask keeps the background, no mask does not
    source = {"colour_from_source": 0.062, "shape_from_source": 0.375, "mask_iou_with_target": 0.473,
              "ghosting": 0.156, "background_kept": 0.719}  # fmt: skip
    everywhere = {"colour_from_source": 0.062, "shape_from_source": 0.594, "mask_iou_with_target": 0.364,
                  "ghosting": 0.260, "background_kept": 0.094}  # fmt: skip
    assert transfer_score(source) > transfer_score(everywhere)
    assert transfer_score(source) / 0.719 < transfer_score(everywhere) / 0.094  # without the factor: the other way
