"""The text-embedding baseline of the real-model transport bench: the target prompt's text
conditioning lerped towards the source's at the transformer's input, by a forward pre-hook,
so that it works on any pipeline whose transformer takes the prompt as keywords (no
`prompt_embeds` layout of its own to know)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..generation import GenerationSettings
from ..transport import _images

#: the transformer arguments that carry the prompt, per token (B, N_txt, D) or pooled (B, D), as
#: diffusers' DiTs name them; and the masks over the text tokens (B, N_txt) some of them take
TEXT_ARGUMENTS = ("encoder_hidden_states", "pooled_projections")
TEXT_MASKS = ("encoder_hidden_states_mask", "encoder_attention_mask")


@contextmanager
def interpolated_text(transformer: torch.nn.Module, weights: list[float]) -> Iterator[None]:
    """While inside, every transformer call lerps each row's text conditioning towards the
    first row of its group: rows come in groups of len(weights) prompts (a batch of `[uncond,
    cond]` is two groups, see ditlens.core.rows), and row r takes weight weights[r % len(weights)].

    The unconditional rows of all prompts are alike (one negative prompt), so their lerp is
    the identity: this needs no knowledge of the guidance layout. A text mask takes the
    target's at weight 0, the source's at 1 and their union in between, so that both ends
    are exactly the target's and the source's conditioning."""
    group = len(weights)

    def lerp_text(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        present = [name for name in TEXT_ARGUMENTS if isinstance(kwargs.get(name), torch.Tensor)]
        if "encoder_hidden_states" not in present:
            raise ValueError(
                f"Text-embedding interpolation needs the prompt as the transformer's encoder_hidden_states keyword; "
                f"{type(module).__name__} was called without it."
            )
        B = kwargs["encoder_hidden_states"].shape[0]
        if B % group:
            raise ValueError(f"A transformer call of {B} rows is no multiple of the {group} prompts of the batch.")
        b = torch.arange(B) % group
        src = torch.arange(B) - b  # each row's source: the first row of its group
        w = torch.tensor(weights)[b]  # (B,)
        kwargs = dict(kwargs)
        for name in present:
            x = kwargs[name]
            weight = w.to(x.device, x.dtype).view(-1, *[1] * (x.ndim - 1))
            kwargs[name] = torch.lerp(x, x[src.to(x.device)], weight)  # exact at weight 0 and 1
        for name in TEXT_MASKS:
            mask = kwargs.get(name)
            if isinstance(mask, torch.Tensor):
                source = mask[src.to(mask.device)]
                shape = (-1, *[1] * (mask.ndim - 1))
                union = torch.maximum(mask, source)
                w_ = w.to(mask.device).view(shape)
                kwargs[name] = torch.where(w_ == 0, mask, torch.where(w_ == 1, source, union))
        return args, kwargs

    handle = transformer.register_forward_pre_hook(lerp_text, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def embedding_interpolation(
    pipe: Any, source: str, target: str, alphas: list[float], seed: int, settings: GenerationSettings
) -> torch.Tensor:
    """(len(alphas), 3, H, W): the target prompt with its text conditioning lerped towards the
    source's by alpha, on `seed`. One batch: [source, target x len(alphas)]; the source row is
    there for its conditioning (its image is not returned)."""
    prompts = [source] + [target] * len(alphas)
    call = {"prompt": prompts}
    generators = [torch.Generator().manual_seed(seed) for _ in prompts]
    with interpolated_text(pipe.transformer, [0.0, *alphas]):
        output = pipe(**call, generator=generators, output_type="pt", **settings.kwargs(pipe, len(prompts), call))
    return _images(output)[1:]
