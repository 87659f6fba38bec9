"""Text-sequence positions of a prompt's words: which tokens of the text stream a pipeline
hands its transformer hold them. Each adapter's `text_positions` builds on these (the
attention baseline of Finding 2 scores attention to those positions)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .base import UnsupportedModelError

_MARKER = "\x00prompt\x00"  # stands in for the prompt when a template is rendered: no prompt holds it


class TruncatedWordError(ValueError):
    """A word of the prompt none of whose tokens reaches the transformer (truncated, or dropped)."""


def word_positions(prompt: str, words: Sequence[str], tokenizer: Any = None) -> list[int]:
    """Text-sequence positions of `words` (each a word or phrase) in `prompt`, sorted.

    tokenizer None: the built-in text encoder's layout `[CLS] w_1 ... w_n [PAD]...`, so word i
    (0-based, whitespace split) sits at i + 1; phrases match consecutive words exactly.
    A Hugging Face fast tokenizer: every token whose characters overlap a whole-word,
    case-insensitive occurrence; positions count from the start of `tokenizer(prompt)`.
    A real pipeline's text stream is rarely that sequence (templates, dropped prefixes, two
    encoders): `adapter_for(pipe).text_positions(pipe, prompt, words)` knows each family's.
    """
    if isinstance(words, str):
        words = [words]
    if tokenizer is not None:
        return template_positions(tokenizer, prompt, words)
    positions: set[int] = set()
    tokens = prompt.split()
    for word in words:
        phrase = word.split()
        starts = [i for i in range(len(tokens) - len(phrase) + 1) if tokens[i : i + len(phrase)] == phrase]
        if not phrase or not starts:
            raise ValueError(f"Word {word!r} does not occur in prompt {prompt!r}.")
        positions.update(1 + i + j for i in starts for j in range(len(phrase)))  # +1: the CLS token
    return sorted(positions)


def template_positions(
    tokenizer: Any,
    prompt: str,
    words: Sequence[str],
    *,
    template: Callable[[str], str] | None = None,
    keep: slice | Sequence[int] = slice(None),
    limit: str = "",
    **encode: Any,
) -> list[int]:
    """Positions of `words` in a text stream that a pipeline makes from `prompt`, sorted.

    The pipeline formats the prompt as `template(prompt)` (None: the prompt as it is), which
    must hold the prompt verbatim, tokenizes that as `tokenizer(text, **encode)` (its own
    call: padding, truncation, max_length) and hands the transformer the tokens at `keep`
    (indices into those ids, negative ones from the end, as the pipeline selects them), in
    that order. A position counts where its token's characters overlap a whole-word,
    case-insensitive occurrence of a word (or phrase) inside the prompt; the template's own
    text is never searched.

    Raises ValueError for a word absent from the prompt, `TruncatedWordError` for one none of
    whose tokens is kept (`limit` says why tokens are cut), and `UnsupportedModelError` for a
    template that changes the prompt."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Text positions need a fast (Rust) tokenizer for character offsets; got {type(tokenizer).__name__}."
        )
    if isinstance(words, str):
        words = [words]
    before, text = "", prompt
    if template is not None:  # where the prompt sits: render a marker in its place
        before, found, after = template(_MARKER).partition(_MARKER)
        text = template(prompt)
        if not found or text != before + prompt + after:
            raise UnsupportedModelError(
                f"The pipeline's prompt template does not hold the prompt verbatim: got {text!r}."
            )
    offsets = tokenizer(text, return_offsets_mapping=True, **encode)["offset_mapping"]
    ids = range(len(offsets))
    kept = ids[keep] if isinstance(keep, slice) else [ids[i] for i in keep]
    position = {token: i for i, token in enumerate(kept)}  # token index -> text-stream position
    start = len(before)  # the prompt's first character in the text
    positions: set[int] = set()
    for word in words:
        spans = [m.span() for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", prompt, flags=re.IGNORECASE)]
        if not word.strip() or not spans:
            raise ValueError(f"Word {word!r} does not occur in prompt {prompt!r}.")
        tokens = {
            i for i, (s, e) in enumerate(offsets) if e > s for ws, we in spans if s < start + we and e > start + ws
        }
        hits = {position[i] for i in tokens if i in position}
        if not hits:
            raise TruncatedWordError(
                f"Word {word!r} of prompt {prompt!r} does not reach the transformer: {limit or 'cut'}."
            )
        positions.update(hits)
    return sorted(positions)
