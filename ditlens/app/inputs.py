"""The page's values -> the library's values, with messages that name the field."""

from __future__ import annotations

from ..generation import GenerationSettings


def parse_prompts(text: str | None, field_name: str = "prompts") -> list[str]:
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"Type at least one prompt in {field_name!r} (one per line).")
    return prompts


def parse_prompt(text: str | None, field_name: str) -> str:
    prompt = " ".join((text or "").split())
    if not prompt:
        raise ValueError(f"Type a prompt in {field_name!r}.")
    return prompt


def parse_seeds(text: str | None) -> list[int]:
    words = str(text if text is not None else "").replace(",", " ").split()
    try:
        seeds = [int(w) for w in words]
    except ValueError:
        raise ValueError(f"Seeds must be whole numbers separated by spaces; got {text!r}.") from None
    if not seeds:
        raise ValueError("Give at least one seed (e.g. 0).")
    return seeds


def _optional_int(value: float | None, what: str, minimum: int) -> int | None:
    """Blank (None) or 0 in a number box means "the default"."""
    if value is None or value == 0:
        return None
    if value != int(value) or value < minimum:
        raise ValueError(f"{what} must be a whole number >= {minimum} (or 0 for the default); got {value!r}.")
    return int(value)


def generation_settings(steps: float | None, guidance: float | None) -> GenerationSettings:
    # checked with the request, against the app's limits first (Limits.check_settings)
    return GenerationSettings(
        num_inference_steps=_optional_int(steps, "Steps", 1),
        guidance_scale=None if guidance is None or guidance < 0 else float(guidance),
    )


def parse_generation(
    prompts: str | None, seeds: str | None, steps: float | None, guidance: float | None
) -> tuple[list[str], list[int], GenerationSettings]:
    """The boxes every generating tab has: (prompts, seeds, settings)."""
    return parse_prompts(prompts), parse_seeds(seeds), generation_settings(steps, guidance)


def parse_window(start: float | None, stop: float | None, num_steps: int | None) -> tuple[int, int] | None:
    """[start, stop) in steps; blank or 0 stop means "to the last step"; 0 and 0 (or blank): every step."""
    start = 0 if start is None else start
    stop = 0 if stop is None else stop
    if start != int(start) or stop != int(stop) or start < 0 or stop < 0:
        raise ValueError(f"The step window takes whole numbers >= 0; got start {start!r}, stop {stop!r}.")
    if start == 0 and stop == 0:
        return None
    if stop == 0:
        if num_steps is None:
            raise ValueError("Give the step window's stop (this pipeline's default number of steps is unknown).")
        stop = num_steps
    return (int(start), int(stop))
