"""K = 2 masks of exact renders (Finding 2's second image set): the world's renders of the
prompts, noised to one noise level, through ONE conditional forward pass of the built-in
model. Renders have exact object masks, so their scores need no foreground guess."""

from __future__ import annotations

from typing import Any

import torch

from ..core.hooks import hooks
from ..segment import MaskObserver, SegmentConfig, SegmentResult
from .worlds import metrics_of, render_seeds, subject_positions, world_of


def renders_through_model(
    pipe: Any, prompts: list[str], rules: list[str], k: int, sigma: float, seed: int, seeds: list[int] | None = None
) -> SegmentResult:
    """K = 2 masks of exact renders noised to `sigma`, from ONE conditional forward pass,
    each split named by every foreground rule (the default first). seed: the noise's;
    seeds: the renders' (world v2; default: render_seeds)."""
    from ..attention import AttentionMaps, attention_masks
    from ..builtin.pipeline import image_ids, patchify

    world = world_of(pipe)
    size = pipe.config.image_size
    seeds = seeds if seeds is not None else render_seeds(len(prompts))
    x0 = metrics_of(world).renders(prompts, seeds) * 2 - 1  # (n, 3, H, W) in [-1, 1]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    p = pipe.patch_size
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    x_t = patchify((1 - sigma) * x0 + sigma * noise, p).to(device, dtype)  # (n, N_img, 3 p^2)
    txt, vec = pipe.encode_prompt(prompts, device)

    foregrounds = SegmentConfig(prompts=prompts, compare_foregrounds=True).foregrounds
    observer = MaskObserver(rules, k, foregrounds=foregrounds, image_size=(size, size))
    maps = AttentionMaps(pipe.transformer, [subject_positions(prompt, world) for prompt in prompts])
    with torch.no_grad(), hooks(pipe.transformer, observers=[observer]), maps:
        pipe.transformer(
            hidden_states=x_t,
            encoder_hidden_states=txt,
            pooled_projections=vec,
            timestep=torch.full((len(prompts),), sigma, device=device, dtype=dtype),
            img_ids=image_ids(size, size, p, device, dtype),
            txt_ids=torch.zeros(txt.shape[1], 3, device=device, dtype=dtype),
            return_dict=False,
        )
    attention = attention_masks(maps.result())
    named = {fg: masks | {"attention": attention} for fg, masks in observer.result().items()}
    return SegmentResult(
        sites=observer.sites,
        masks=named.pop(foregrounds[0]),
        image_size=(size, size),
        images=(x0 + 1) / 2,
        foreground=foregrounds[0],
        other_foregrounds=named,
        heat=observer.heat(),
    )
