"""K = 2 masks, upsampling and IoU on hand-made cases."""

from __future__ import annotations

import pytest
import torch

from ditlens.masks import foreground_tokens, iou, kmeans2, miou, token_grid, upsample


def two_regions(B: int = 3, side: int = 8, D: int = 16, seed: int = 0):
    """Tokens on a side x side grid; a random rectangle per sample carries +5 on channels 2 and D-1."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, side * side, D, generator=gen) * 0.3
    truth = torch.zeros(B, side, side, dtype=torch.bool)
    for b in range(B):
        r0, c0 = torch.randint(0, side // 2, (2,), generator=gen).tolist()
        truth[b, r0 : r0 + side // 2, c0 : c0 + side // 2 + 1] = True
    x[..., [2, D - 1]] += 5 * truth.view(B, -1, 1).float()
    return x, truth


def test_kmeans_recovers_planted_two_region_structure():
    x, truth = two_regions()
    channels = torch.zeros(3, 16, dtype=torch.bool)
    channels[:, [2, 15]] = True
    fg = foreground_tokens(x, channels)
    assert torch.equal(fg.view(3, 8, 8), truth)


def test_foreground_is_the_higher_cluster_even_when_the_subject_is_negative():
    x, truth = two_regions()
    x[..., [2, 15]] *= -1  # the subject now has the lower raw value on both channels
    channels = torch.zeros(3, 16, dtype=torch.bool)
    channels[:, [2, 15]] = True
    fg = foreground_tokens(x, channels)
    # min-max normalised, the background is now the high cluster: the rule picks it
    assert torch.equal(fg.view(3, 8, 8), ~truth)


def test_all_channels_and_kmeans_shapes():
    x, truth = two_regions(D=4)
    fg = foreground_tokens(x)  # all channels, the signal dominates
    assert fg.shape == (3, 64) and torch.equal(fg.view(3, 8, 8), truth)
    labels = kmeans2(torch.tensor([[[0.0], [0.1], [1.0], [0.9]]]))
    assert labels.tolist() == [[False, False, True, True]]


def test_upsample_to_image_size():
    mask = torch.tensor([[True, False, False, True]])
    up = upsample(mask, (2, 2), (4, 6))
    assert up.shape == (1, 4, 6)
    assert up[0, :2, :3].all() and not up[0, :2, 3:].any() and up[0, 2:, 3:].all()
    assert token_grid(256) == (16, 16) and token_grid(8, height=32, width=64) == (2, 4)
    with pytest.raises(ValueError, match="Cannot lay 10 tokens"):
        token_grid(10)


def test_iou_and_miou_on_hand_made_cases():
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    a[0, :2] = True  # 8 pixels
    b[0, :1] = True  # 4 pixels, inside a
    assert iou(a, b).item() == pytest.approx(4 / 8)
    assert iou(~a, ~b).item() == pytest.approx(8 / 12)
    assert miou(a, b).item() == pytest.approx((4 / 8 + 8 / 12) / 2)
    assert iou(a, a).item() == 1.0 and iou(b & ~b, b & ~b).item() == 1.0


def lloyd_reference(x: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Textbook K = 2 Lloyd's algorithm with explicit distances (the seeds of kmeans2)."""
    score = x.sum(-1)
    rows = torch.arange(x.shape[0])
    centres = torch.stack([x[rows, score.argmin(1)], x[rows, score.argmax(1)]], dim=1)
    for _ in range(iterations):
        label = torch.cdist(x, centres).argmin(-1)
        for c in (0, 1):
            members = (label == c).unsqueeze(-1)
            count = members.sum(1)
            mean = (x * members).sum(1) / count.clamp(min=1)
            centres[:, c] = torch.where(count > 0, mean, centres[:, c])
    return torch.cdist(x, centres).argmin(-1) == 1


@pytest.mark.parametrize("k", [1, 2, 4])
def test_kmeans_equals_textbook_lloyd(k):
    gen = torch.Generator().manual_seed(k)
    x = torch.rand(6, 256, k, generator=gen) ** 3  # skewed, like normalised massive channels
    assert torch.equal(kmeans2(x), lloyd_reference(x))


@pytest.mark.parametrize("k", [2, 64])
def test_stopping_when_the_labels_repeat_changes_nothing(k):
    """The CPU's early stop returns exactly what every iteration would."""
    for seed in range(20):
        x = torch.rand(4, 256, k, generator=torch.Generator().manual_seed(seed)) ** 3
        assert torch.equal(kmeans2(x, stop_when_stable=True), kmeans2(x, stop_when_stable=False))


def test_channels_as_indices_or_mask_give_the_same_foreground():
    x, truth = two_regions()
    index = torch.tensor([[2, 15]] * 3)
    mask = torch.zeros(3, 16, dtype=torch.bool).scatter_(1, index, True)
    assert torch.equal(foreground_tokens(x, index), foreground_tokens(x, mask))
    assert torch.equal(foreground_tokens(x, index).view(3, 8, 8), truth)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_graph_replay_equals_eager_clustering(compiled, monkeypatch):
    import ditlens.masks as masks

    monkeypatch.setattr(masks, "COMPILE_ON_CUDA", compiled)
    gen = torch.Generator().manual_seed(0)
    for B in (1, 2, 2, 3):  # a repeated shape replays the captured graph
        x = torch.randn(B, 4096, 3072, generator=gen).to("cuda", torch.bfloat16)
        x[:, :1500, :8] += 2.0  # a planted foreground on the strongest channels
        index = x.float().mean(1).abs().topk(4, dim=-1).indices
        graphed = foreground_tokens(x, index)
        monkeypatch.setattr(masks, "CUDA_GRAPHS", False)
        eager = foreground_tokens(x, index)
        monkeypatch.setattr(masks, "CUDA_GRAPHS", True)
        if compiled:  # fused reductions may sum in another order: a boundary token may flip
            assert (graphed == eager).float().mean() > 0.999
        else:
            assert torch.equal(graphed, eager)
