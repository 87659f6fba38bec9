"""A sweep's prompts: a list and/or a file in the config, else the built-in model's examples or
one per row of the embeddings file; each checked (not empty, not twice, and on the built-in
model in its vocabulary) before the model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .text import config_error, decode, relative, show


def read_prompts(raw: dict[str, Any], path: Path, builtin: bool, embeds: Path | None) -> list[tuple[str, str]]:
    """(where, prompt) for each prompt of the sweep, checked; `where` names the prompt's place
    for messages: prompts[2], prompts.file 'p.txt' line 7."""
    given = _given_prompts(raw, path)
    if given is None:  # left out: the built-in model's examples, or one item per embeddings row
        given = _default_prompts(path, builtin, embeds)
    elif not given:
        default = (
            "the built-in model's example prompts"
            if builtin
            else "one item per embeddings row"
            if embeds is not None
            else None
        )
        raise config_error(
            path,
            f"'prompts' gives no prompt ({show(raw['prompts'])}); give at least one"
            + (f", or leave 'prompts' out for {default}." if default else "."),
        )
    first: dict[str, str] = {}
    for where, prompt in given:
        if prompt in first:
            raise config_error(
                path,
                f"prompt {show(prompt)} is listed twice ({first[prompt]} and {where}); "
                "each prompt x seed x setting must be one item.",
            )
        first[prompt] = where
    if embeds is not None and len(given) != embeds_rows(embeds):
        raise config_error(
            path,
            f"{len(given)} prompts but the embeddings file has {embeds_rows(embeds)} rows; "
            "they must match (one row per prompt).",
        )
    return given


def _default_prompts(path: Path, builtin: bool, embeds: Path | None) -> list[tuple[str, str]]:
    if builtin:
        from ..builtin.examples import EXAMPLE_PROMPTS

        return [(f"the built-in example prompt {i}", p) for i, p in enumerate(EXAMPLE_PROMPTS)]
    if embeds is not None:
        return [(f"model.embeds row {i}", f"<embeds row {i}>") for i in range(embeds_rows(embeds))]
    raise config_error(
        path, "no prompts: give 'prompts' (a list, or a table with 'list' and/or 'file'), or model.embeds."
    )


def _given_prompts(raw: dict[str, Any], path: Path) -> list[tuple[str, str]] | None:
    """(where, prompt) for each prompt the config gives, stripped; None where it has no 'prompts'."""
    value = raw.get("prompts")
    if value is None:
        return None
    if isinstance(value, list):
        table, key = {"list": value}, "prompts"
    elif isinstance(value, dict):
        table, key = value, "prompts.list"
        extra = [k for k in table if k not in ("list", "file")]
        if extra:
            raise config_error(path, f"unknown key 'prompts.{extra[0]}'; allowed: list, file.")
    else:
        raise config_error(
            path, f"'prompts' must be a list of strings or a table with 'list' and/or 'file'; got {show(value)}."
        )
    given = _listed_prompts(table.get("list", []), key, path)
    if "file" in table:
        given += _file_prompts(table["file"], path)
    return given


def _listed_prompts(inline: Any, key: str, path: Path) -> list[tuple[str, str]]:
    if not isinstance(inline, list):
        raise config_error(path, f"'{key}' must be a list of prompts (strings); got {show(inline)}.")
    given = []
    for i, prompt in enumerate(inline):
        if not isinstance(prompt, str):
            raise config_error(path, f"'{key}[{i}]' must be a prompt (a string); got {show(prompt)}.")
        if not prompt.strip():
            raise config_error(
                path, f"'{key}[{i}]' is an empty prompt ({prompt!r}); every prompt needs at least one word."
            )
        given.append((f"{key}[{i}]", prompt.strip()))
    return given


def _file_prompts(name: Any, path: Path) -> list[tuple[str, str]]:
    """One prompt per line of the prompts file; blank lines separate groups, they are not prompts."""
    if not isinstance(name, str):
        raise config_error(path, f"'prompts.file' must be a file path; got {show(name)}.")
    file = relative(path, name)
    where = f"Prompts file {str(file)!r} (prompts.file in {path.name})"
    if not file.is_file():
        raise FileNotFoundError(f"{where} does not exist.")
    text = decode(file.read_bytes(), where)
    return [
        (f"prompts.file {file.name!r} line {n}", line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]


def check_builtin_prompts(prompts: list[tuple[str, str]], jobs: list[dict[str, Any]], path: Path) -> None:
    """The built-in model knows a small vocabulary. Its disrupt, segment and transport items
    also score each image against the exact scene its prompt describes, so with those jobs
    every prompt must follow the caption grammar too (else the first such item would fail
    mid-sweep)."""
    from ..builtin.scenes import UnknownWordError, check_words, parse_caption

    grammar = any(job["command"] != "find" for job in jobs)
    for where, prompt in prompts:
        try:
            parse_caption(prompt) if grammar else check_words(prompt)
        except ValueError as err:  # UnknownWordError or CaptionError; both quote the whole prompt
            why = (
                ""
                if isinstance(err, UnknownWordError)
                else " (disrupt, segment and transport score the built-in model's images against the scene "
                "the prompt describes)"
            )
            raise config_error(path, f"{where}: {str(err).replace(repr(prompt), show(prompt))}{why}") from None


def embeds_rows(path: Path) -> int:
    """The number of prompts an embeddings file holds (rows of every tensor in it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}
    except Exception as err:
        raise ValueError(f"Embeddings file {str(path)!r} is not a readable safetensors file ({err}).") from None
    if "prompt_embeds" not in shapes:
        raise ValueError(f"Embeddings file {str(path)!r} has no 'prompt_embeds' tensor; it holds: {', '.join(shapes)}.")
    rows = {key: s[0] for key, s in shapes.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"Embeddings file {str(path)!r}: tensors disagree on the number of rows (prompts): {rows}.")
    return rows["prompt_embeds"]
