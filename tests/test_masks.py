"""K = 2 masks, upsampling and IoU on hand-made cases."""

from __future__ import annotations

import pytest
import torch

from ditlens.core.masks import (
    FOREGROUND_RULES,
    adjusted_rand_index,
    border_tokens,
    foreground_tokens,
    iou,
    kmeans2,
    miou,
    oracle_miou,
    token_grid,
    upsample,
)
from ditlens.core.performance import PerformanceConfig

EAGER = PerformanceConfig(cuda_graphs=False)  # the clustering's kernels one by one, as on the CPU


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


def test_high_rule_picks_the_higher_cluster_even_when_the_subject_is_negative():
    x, truth = two_regions()
    x[..., [2, 15]] *= -1  # the subject now has the lower raw value on both channels
    channels = torch.zeros(3, 16, dtype=torch.bool)
    channels[:, [2, 15]] = True
    # min-max normalised, the background is now the high cluster: `high` picks it, the
    # border prior still finds the subject
    assert torch.equal(foreground_tokens(x, channels, rule="high").view(3, 8, 8), ~truth)
    assert torch.equal(foreground_tokens(x, channels, rule="border").view(3, 8, 8), truth)


def background_massive(B: int = 4, side: int = 12, D: int = 8, seed: int = 0):
    """The built-in model's case: the massive channel is large on the background and small
    on a central blob (a disc of radius 3)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.arange(side).float() - (side - 1) / 2
    blob = (r.view(-1, 1) ** 2 + r.view(1, -1) ** 2 <= 9).expand(B, side, side)
    x = torch.randn(B, side * side, D, generator=gen) * 0.1
    x[..., 0] += 40.0 - 30.0 * blob.reshape(B, -1).float()  # high on the background
    return x, blob


@pytest.mark.parametrize("rule, names_blob", [("border", True), ("smaller", True), ("low", True), ("high", False)])
def test_foreground_rules_on_a_background_massive_channel(rule, names_blob):
    x, blob = background_massive()
    fg = foreground_tokens(x, torch.zeros(4, 1, dtype=torch.long), rule=rule).view(blob.shape)
    assert torch.equal(fg, blob if names_blob else ~blob)
    pixels = upsample(fg.flatten(1), (12, 12), (24, 24))
    truth = upsample(blob.flatten(1), (12, 12), (24, 24))
    # the oracle (better labelling) bounds every rule; the split itself is perfect either way
    assert (oracle_miou(pixels, truth) >= miou(pixels, truth)).all()
    assert torch.allclose(oracle_miou(pixels, truth), torch.ones(4))
    assert torch.allclose(adjusted_rand_index(pixels, truth), torch.ones(4))
    assert torch.allclose(miou(pixels, truth), torch.ones(4) if names_blob else torch.zeros(4))


def test_several_rules_name_one_split():
    x, blob = background_massive()
    index = torch.zeros(4, 1, dtype=torch.long)
    both = foreground_tokens(x, index, rule=("border", "high"))
    assert both.shape == (2, 4, 144)
    assert torch.equal(both[0], foreground_tokens(x, index, rule="border"))
    assert torch.equal(both[1], ~both[0])


def test_border_rule_on_a_non_square_grid_and_its_tie_break():
    assert border_tokens((2, 4)).all()  # two rows: every token is on the ring
    ring = border_tokens((3, 4)).view(3, 4)
    assert ring.sum() == 10 and not ring[1, 1] and not ring[1, 2]
    # a 3 x 6 grid whose left 2 columns are one cluster: 6 tokens, 5 of them on the ring,
    # against 12 tokens, 9 on the ring: border names the left block
    x = torch.zeros(1, 18, 1)
    x.view(1, 3, 6, 1)[:, :, :2] = 1.0
    fg = foreground_tokens(x, rule="border", grid=(3, 6)).view(3, 6)
    assert fg[:, :2].all() and not fg[:, 2:].any()
    # two halves with equal border counts: the tie goes to the smaller cluster
    x = torch.zeros(1, 16, 1)
    x.view(1, 4, 4, 1)[:, :, :1] = 1.0  # left column (4 tokens, 4 on the ring) vs 12 (8 on the ring)
    assert foreground_tokens(x, rule="border").view(4, 4)[:, 0].all()
    with pytest.raises(ValueError, match="Unknown foreground rule 'biggest'. Allowed: border, smaller, high, low"):
        foreground_tokens(x, rule="biggest")
    assert set(FOREGROUND_RULES) == {"border", "smaller", "high", "low"}


def test_adjusted_rand_index_against_a_hand_computation():
    # 6 pixels; pred = [1 1 1 0 0 0], truth = [1 1 0 0 0 0]: contingency [[2, 1], [0, 3]]
    pred = torch.tensor([[1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    truth = torch.tensor([[1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    index = 1 + 0 + 0 + 3  # sum C(n_ij, 2)
    rows, cols = 3 + 3, 1 + 6  # sum C(a_i, 2), sum C(b_j, 2)
    expected = rows * cols / 15
    ari = (index - expected) / ((rows + cols) / 2 - expected)
    assert adjusted_rand_index(pred, truth).item() == pytest.approx(ari)
    assert adjusted_rand_index(~pred, truth).item() == pytest.approx(ari)  # labelling-free
    assert adjusted_rand_index(pred, pred).item() == pytest.approx(1.0)
    one_part = torch.zeros(1, 6, dtype=torch.bool)
    assert adjusted_rand_index(one_part, one_part).item() == 1.0
    assert adjusted_rand_index(one_part, truth).item() == 0.0


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
def test_cuda_graph_replay_equals_eager_clustering(compiled):
    graphs = PerformanceConfig(compile_clustering=compiled)
    gen = torch.Generator().manual_seed(0)
    for B in (1, 2, 2, 3):  # a repeated shape replays the captured graph
        x = torch.randn(B, 4096, 3072, generator=gen).to("cuda", torch.bfloat16)
        x[:, :1500, :8] += 2.0  # a planted foreground on the strongest channels
        index = x.float().mean(1).abs().topk(4, dim=-1).indices
        graphed = foreground_tokens(x, index, performance=graphs)
        eager = foreground_tokens(x, index, performance=EAGER)
        if compiled:  # fused reductions may sum in another order: a boundary token may flip
            assert (graphed == eager).float().mean() > 0.999
        else:
            assert torch.equal(graphed, eager)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("rule", sorted(FOREGROUND_RULES))
def test_every_foreground_rule_runs_unchanged_inside_a_cuda_graph(rule):
    """Each rule is device ops only: captured and replayed, it equals the eager result."""
    graphs = PerformanceConfig(compile_clustering=False)
    x, blob = background_massive(B=3, side=32, D=64)
    x = x.cuda()
    index = torch.zeros(3, 1, dtype=torch.long, device="cuda")
    for _ in range(3):  # capture, then replays
        graphed = foreground_tokens(x, index, rule=rule, performance=graphs)
    eager = foreground_tokens(x, index, rule=rule, performance=EAGER)
    assert torch.equal(graphed, eager)
    assert torch.equal(eager.view(blob.shape).cpu(), ~blob if rule == "high" else blob)
    static = torch.zeros_like(x)
    graph = torch.cuda.CUDAGraph()
    static.copy_(x)
    foreground_tokens(static, index, rule=rule, performance=graphs)  # warm-up outside the capture
    with torch.cuda.graph(graph):  # inside another capture, the clustering joins that graph
        captured = foreground_tokens(static, index, rule=rule, performance=graphs)
    graph.replay()
    assert torch.equal(captured, eager)
