"""Non-finite values (NaN, inf) in activations and outputs: a clear error instead of NaN images.

A diffusion transformer that overflows (float16), loads a broken checkpoint or is edited
with a NaN/inf factor keeps running and writes black or garbage images and NaN
statistics. ditlens stops at the first non-finite value instead:

    with ditlens.hooks(pipe, observers=[FiniteCheck()]):    # every site and step
        pipe(prompt)
    check_finite(images, "the generated images")            # one tensor, after the fact

`FiniteCheck` is an ordinary observer (it runs after the edits, so it also catches an edit
that wrote NaN). On CUDA each check is one small reduction and a host sync per site and
step; opt in where that matters.
"""

from __future__ import annotations

import torch

from .hooks import HookContext

HINT = (
    "Only finite values are allowed. Common causes: float16 overflow (try --dtype bfloat16 or float32), "
    "a broken or partly loaded checkpoint, or an edit with a NaN/inf factor."
)


class NonFiniteError(ValueError):
    """A tensor ditlens reads or writes holds NaN or inf."""


def count_non_finite(x: torch.Tensor) -> tuple[int, int]:
    """(NaN count, inf count) of a tensor; (0, 0) for integer and bool tensors."""
    if not x.is_floating_point():
        return 0, 0
    return int(torch.isnan(x).sum()), int(torch.isinf(x).sum())


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise NonFiniteError naming `what` (e.g. "the image stream at site X, step 3")."""
    if not x.is_floating_point() or bool(torch.isfinite(x).all()):
        return
    nan, inf = count_non_finite(x)
    raise NonFiniteError(
        f"{what[:1].upper()}{what[1:]} holds {nan} NaN and {inf} infinite values of {x.numel()}. {HINT}"
    )


class FiniteCheck:
    """Observer for `ditlens.hooks(..., observers=[FiniteCheck()])`: raise NonFiniteError at
    the first site and step whose image (or text) stream holds NaN or inf."""

    def __init__(self, text: bool = True):
        self.text = text  # the text stream too, where the block carries one

    @torch.no_grad()
    def __call__(self, img: torch.Tensor, txt: torch.Tensor | None, ctx: HookContext) -> None:
        check_finite(img, f"the image stream at site {ctx.site}, step {ctx.step}")
        if self.text and txt is not None:
            check_finite(txt, f"the text stream at site {ctx.site}, step {ctx.step}")
