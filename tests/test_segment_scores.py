"""Mask scores and the bench's rows against a hand computation, pixel by pixel."""

from __future__ import annotations

import pytest
import torch

from ditlens.bench import background_groups, mask_scores_table
from ditlens.segment import SegmentResult


def hand_miou(pred: list[list[bool]], truth: list[list[bool]]) -> float:
    """Two-class mIoU written out: IoU of the foreground and of the background, averaged."""
    flat_p = [v for row in pred for v in row]
    flat_t = [v for row in truth for v in row]

    def iou(a: list[bool], b: list[bool]) -> float:
        inter = sum(x and y for x, y in zip(a, b))
        union = sum(x or y for x, y in zip(a, b))
        return inter / union if union else 1.0

    return (iou(flat_p, flat_t) + iou([not v for v in flat_p], [not v for v in flat_t])) / 2


@pytest.fixture()
def result_and_truth():
    """2 steps x 2 sites x 3 samples on a 2 x 2 token grid, images 4 x 4 (2 x 2 pixels a token)."""
    gen = torch.Generator().manual_seed(3)
    masks = torch.rand(2, 2, 3, 4, generator=gen) > 0.5
    masks[0, 0, 0] = torch.tensor([True, False, False, False])  # a known case: the top-left token
    truth = torch.zeros(3, 4, 4, dtype=torch.bool)
    truth[0, :2, :2] = True  # sample 0: the top-left quarter
    truth[1, :, :2] = True  # sample 1: the left half
    truth[2, 2:, :] = True  # sample 2: the bottom half
    result = SegmentResult(sites=["a.0", "a.1"], masks={"top": masks, "all": ~masks}, image_size=(4, 4))
    return result, truth


def pixel_mask(tokens: torch.Tensor) -> list[list[bool]]:
    """(4,) token mask on the 2 x 2 grid -> 4 x 4 pixels, nearest neighbour by hand."""
    return [[bool(tokens[(r // 2) * 2 + c // 2]) for c in range(4)] for r in range(4)]


def test_scores_equal_the_hand_computation(result_and_truth):
    result, truth = result_and_truth
    scores = result.scores(truth)
    for rule, masks in result.masks.items():
        for t in range(2):
            for s in range(2):
                for i in range(3):
                    pred = pixel_mask(masks[t, s, i])
                    gt = [[bool(v) for v in row] for row in truth[i]]
                    flipped = [[not v for v in row] for row in pred]
                    assert scores[rule].miou[t, s, i].item() == pytest.approx(hand_miou(pred, gt))
                    assert scores[rule].oracle[t, s, i].item() == pytest.approx(
                        max(hand_miou(pred, gt), hand_miou(flipped, gt))
                    )
    assert scores["top"].miou[0, 0, 0].item() == 1.0 and scores["top"].ari[0, 0, 0].item() == pytest.approx(1.0)
    # the complement of a split is the same split: same oracle and ARI, mIoU mirrored
    assert torch.allclose(scores["top"].oracle, scores["all"].oracle)
    assert torch.allclose(scores["top"].ari, scores["all"].ari)


def test_bench_rows_match_the_hand_means_per_group(result_and_truth):
    result, truth = result_and_truth
    groups = {"g1": [0, 2], "g2": [1]}
    numbers, rows = mask_scores_table(result, truth, groups, "generated", k=2)
    scores = result.scores(truth)["top"]
    for group, index in groups.items():
        per_site = [
            sum(
                hand_miou(pixel_mask(result.masks["top"][t, s, i]), [[bool(v) for v in r] for r in truth[i]])
                for t in range(2)
                for i in index
            )
            / (2 * len(index))
            for s in range(2)
        ]
        best = max(range(2), key=lambda s: per_site[s])
        n = numbers[group]["top"]
        assert n["miou"] == pytest.approx(per_site[best]) and n["best_site"] == result.sites[best]
        assert n["oracle"] == pytest.approx(float(scores.oracle[:, best][:, index].mean()))
        assert n["agreement"] == pytest.approx(float(scores.agrees[:, best][:, index].float().mean()))
        assert n["oracle"] >= n["miou"] - 1e-9
        row = next(r for r in rows if r[0] == f"generated, {group} ({len(index)})" and r[1] == "top-2")
        assert row[2] == f"{n['miou']:.3f} ({n['best_site']})" and row[3] == f"{n['oracle']:.3f}"


def test_background_groups_split_the_prompts():
    prompts = [
        "a large red circle in the center on a gray background",
        "a small blue square on the left on a gray and navy background",
        "a large green triangle on the right on a black background",
    ]
    assert background_groups(prompts) == {
        "all images": [0, 1, 2],
        "one-colour backgrounds": [0, 2],
        "split backgrounds": [1],
    }


def test_concatenate_keeps_the_grid_and_orders_the_samples():
    """Batches joined as one result: samples in order, the grid they were made on kept (a
    non-square token grid cannot be told from the image size alone), no heat map stays none."""
    from ditlens.segment import SegmentResult

    def part(offset: int) -> SegmentResult:
        masks = torch.zeros(2, 1, 1, 6, dtype=torch.bool)  # (steps, sites, samples, N)
        masks[..., offset] = True
        return SegmentResult(
            sites=["s"],
            masks={"top": masks},
            image_size=(32, 48),
            images=torch.full((1, 3, 32, 48), offset / 10),
            meta={"batch": offset},
            token_rows_cols=(2, 3),
        )

    joined = SegmentResult.concatenate([part(0), part(4)])
    assert (
        joined.masks["top"].shape == (2, 1, 2, 6)
        and joined.masks["top"][0, 0, 1, 4]
        and not joined.masks["top"][0, 0, 1, 0]
    )
    assert joined.grid == (2, 3) and joined.heat is None and joined.meta == {"batch": 0}
    assert torch.equal(joined.images[:, 0, 0, 0], torch.tensor([0.0, 0.4]))
