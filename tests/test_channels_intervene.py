"""Selection rules and edits on hand-made tensors, without a model."""

from __future__ import annotations

import pytest
import torch

from ditlens.core.channels import (
    BottomK,
    Fixed,
    RandomK,
    Threshold,
    TopK,
    jaccard,
    mean_pairwise_jaccard,
    selector_from_name,
)
from ditlens.core.hooks import HookContext
from ditlens.core.intervene import ReplaceFromRows, ScaleChannels, Scope, ZeroChannels

CTX = HookContext(site="transformer_blocks.0", step=0, call=0, batch_size=4)


def planted(B: int = 2, N: int = 10, D: int = 16) -> torch.Tensor:
    """Random tokens with channel 3 massive (+50) and channel D-5 large and negative (-20)."""
    x = torch.randn(B, N, D, generator=torch.Generator().manual_seed(0))
    x[..., 3] += 50
    x[..., D - 5] -= 20
    return x


def test_top_k_finds_planted_channels_and_bottom_k_avoids_them():
    x = planted()
    top = TopK(2).mask(x)
    assert top.shape == (2, 16) and top[:, [3, 11]].all() and top.sum() == 4
    bottom = BottomK(4).mask(x)
    assert not bottom[:, [3, 11]].any() and bottom.sum() == 8


def test_random_k_is_seeded_and_sized():
    x = planted()
    a, b, c = RandomK(5, seed=1).mask(x), RandomK(5, seed=1).mask(x), RandomK(5, seed=2).mask(x)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.sum(-1).tolist() == [5, 5]


def test_threshold_rule_uses_peak_and_median():
    x = planted()
    assert Threshold(absolute=30, ratio=10).mask(x)[:, 3].all()
    assert not Threshold(absolute=30, ratio=10).mask(x)[:, 0].any()
    assert not Threshold(absolute=1e6, ratio=1).mask(x).any()


def test_selector_validation_names_the_value():
    with pytest.raises(ValueError, match="got 17"):
        TopK(17).validate(16)
    with pytest.raises(ValueError, match="Unknown channel statistic 'median'"):
        TopK(2, statistic="median").validate(16)
    with pytest.raises(ValueError, match=r"within 0\.\.15; got \[3, 16\]"):
        Fixed((3, 16)).validate(16)
    with pytest.raises(ValueError, match="Unknown channel rule 'best'"):
        selector_from_name("best", 2)


def test_jaccard():
    a = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert jaccard(a, b).tolist() == pytest.approx([1 / 3, 1.0])
    assert mean_pairwise_jaccard(torch.stack([a, b, b])).tolist() == pytest.approx([(1 / 3 + 1 / 3 + 1) / 3, 1.0])


def test_scale_channels_touches_only_mask_and_rows():
    x = planted(B=2)
    tokens = torch.zeros(10)
    tokens[2:4] = 1
    out = ScaleChannels(Fixed((5,)), factor=2.0, tokens=tokens, scope=Scope(rows=(0,)))(x, CTX)
    changed = out != x
    assert changed[0, 2:4, 5].all() and changed.sum() == 2
    torch.testing.assert_close(out[0, 2:4, 5], 2 * x[0, 2:4, 5])


def test_replace_alpha_bounds_and_identity():
    with pytest.raises(ValueError, match=r"alpha must be within \[0, 1\]; got 1.5"):
        ReplaceFromRows({1: 0}, 2, TopK(2), alpha=1.5)
    x = planted(B=4)
    out = ReplaceFromRows({1: 0}, 2, TopK(2), alpha=0.0)
    assert not out.applies(CTX)
    assert torch.equal(out(x, CTX), x)  # and were it applied, weight 0 is the identity, exactly


def test_replace_all_channels_all_tokens_copies_the_source_row_exactly():
    x = planted(B=4, D=8)
    out = ReplaceFromRows({1: 0}, 2, Fixed(tuple(range(8))), alpha=1.0)(x, CTX)
    assert torch.equal(out[1], x[0]) and torch.equal(out[3], x[2])  # both CFG halves
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])  # sources untouched


def test_replace_with_user_mask_restricts_to_its_tokens():
    x = planted(B=2, N=10, D=8)
    tokens = torch.zeros(10)
    tokens[:3] = 1
    out = ReplaceFromRows({1: 0}, 2, TopK(2), tokens=tokens, alpha=1.0)(x, CTX)
    changed = (out != x).any(-1)
    assert changed[1, :3].any() and not changed[1, 3:].any() and not changed[0].any()


def test_zero_with_bad_token_mask_length():
    with pytest.raises(ValueError, match="Token mask covers 3 tokens but the image stream has 10"):
        ZeroChannels(TopK(1), tokens=torch.ones(3))(planted(), CTX)


class _MaskOnly:
    """TopK seen through the generic selector protocol only (no channel_indices)."""

    def __init__(self, k: int):
        self.inner = TopK(k)

    def mask(self, img: torch.Tensor) -> torch.Tensor:
        return self.inner.mask(img)

    def validate(self, num_channels: int) -> None:
        self.inner.validate(num_channels)


@pytest.mark.parametrize("channels_from", ["source", "target"])
def test_replace_on_selected_channels_equals_the_generic_mask_path(channels_from):
    gen = torch.Generator().manual_seed(3)
    img = torch.randn(6, 16, 32, generator=gen).to(torch.bfloat16)  # 2 CFG halves x 3 prompts
    tokens = (torch.rand(6, 16, generator=gen) > 0.5).float()
    ctx = HookContext("transformer_blocks.0", 0, 0, 6)
    common = dict(
        source_of={1: 0, 2: 0}, group_size=3, tokens=tokens, alphas={1: 0.5, 2: 1.0}, channels_from=channels_from
    )
    fast = ReplaceFromRows(channels=TopK(4), **common)(img, ctx)
    generic = ReplaceFromRows(channels=_MaskOnly(4), **common)(img, ctx)
    assert torch.equal(fast, generic)
    assert torch.equal(fast[0::3], img[0::3]) and not torch.equal(fast[2::3], img[2::3])


def reference_replace(img, source_of, group_size, k, alphas, tokens, channels_from, rows):
    """ReplaceFromRows written out row by row and channel by channel, for the test below."""
    out, statistic = img.clone(), img.float().mean(dim=1).abs()  # abs_mean, per row
    for r in rows:
        b = r % group_size
        if b not in source_of:
            continue
        s = r - b + source_of[b]
        from_source = set(statistic[s].topk(k).indices.tolist())
        from_target = set(statistic[r].topk(k).indices.tolist())
        chosen = {"source": from_source, "target": from_target, "union": from_source | from_target}[channels_from]
        weight = torch.full((img.shape[1],), alphas[b]) * (1 if tokens is None else tokens[r])
        for c in chosen:
            out[r, :, c] = torch.lerp(img[r, :, c], img[s, :, c], weight.to(img.dtype))
    return out


@pytest.mark.parametrize("channels_from", ["source", "target", "union"])
@pytest.mark.parametrize("selector", ["top_k", "mask_only"])
@pytest.mark.parametrize("tokens", ["all", "mask"])
def test_replace_equals_the_rule_written_out_bit_for_bit(channels_from, selector, tokens):
    """The edit (every row lerps towards its source row at once, weight 0 where nothing
    changes), in place as a CUDA graph runs it and not, gives the rule's values exactly."""
    gen = torch.Generator().manual_seed(5)
    img = torch.randn(6, 16, 32, generator=gen).to(torch.bfloat16)  # 2 CFG halves x 3 prompts
    img[..., 7] += 40  # a massive channel, shared by source and targets
    token_mask = None if tokens == "all" else (torch.rand(6, 16, generator=gen) > 0.5).float()
    ctx = HookContext("transformer_blocks.0", 0, 0, 6)
    rows = (0, 1, 2, 3, 5)  # row 4, a target, out of scope
    edit = ReplaceFromRows(
        source_of={1: 0, 2: 0},
        group_size=3,
        channels=TopK(4) if selector == "top_k" else _MaskOnly(4),
        tokens=token_mask,
        alphas={1: 0.5, 2: 1.0},
        channels_from=channels_from,
        scope=Scope(rows=rows),
    )
    expected = reference_replace(img, {1: 0, 2: 0}, 3, 4, {1: 0.5, 2: 1.0}, token_mask, channels_from, rows)
    assert torch.equal(edit(img, ctx), expected)
    assert torch.equal(edit(img.clone(), ctx, in_place=True), expected)
    assert torch.equal(expected[[0, 3, 4]], img[[0, 3, 4]]) and not torch.equal(expected[5], img[5])
