"""A sweep config as text: reading the file (TOML, or YAML with PyYAML), the paths it names,
and the one-line messages for its mistakes, each naming the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

SHOWN = 60  # characters of a value quoted in a message; longer ones are cut
TOP_KEYS = ("out", "seeds", "model", "prompts", "generation", "jobs", "clip")


class SweepConfigError(ValueError):
    """The sweep config is malformed: names the file, the key and what is allowed."""


def config_error(path: Path, message: str) -> SweepConfigError:
    return SweepConfigError(f"Sweep config {str(path)!r}: {message}")


def show(value: Any) -> str:
    """repr(value) for a message, cut to SHOWN characters: a message quotes a value, not a file."""
    text = repr(value)
    if len(text) <= SHOWN:
        return text
    return f"{text[:SHOWN]}... ({len(value) if isinstance(value, str) else len(text)} characters)"


def relative(path: Path, value: str) -> Path:
    """Paths written in a config are relative to the config file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else path.parent / p


def decode(data: bytes, where: str) -> str:
    """UTF-8 text, without the byte-order mark some editors write first (Windows Notepad):
    TOML forbids it, but it is invisible in the editor, so a refusal would puzzle."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        utf16 = " (it starts with a UTF-16 byte-order mark)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise SweepConfigError(
            f"{where}: not UTF-8 text{utf16}: byte {data[err.start]:#04x} at offset {err.start} "
            "is not valid UTF-8. Save the file as UTF-8."
        ) from None


def read_tables(path: Path) -> dict[str, Any]:
    """The config file's top-level table, parsed but not yet checked."""
    if not path.is_file():
        raise FileNotFoundError(f"Sweep config {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise config_error(path, f"unknown file type {path.suffix or '(none)'!r}; allowed: .toml, .yaml, .yml.")
    text = decode(path.read_bytes(), f"Sweep config {str(path)!r}")
    raw = _parse_yaml(text, path) if suffix in (".yaml", ".yml") else _parse_toml(text, path)
    if not isinstance(raw, dict):
        raise config_error(
            path, f"the top level must be a table of keys ({', '.join(TOP_KEYS)}); got {type(raw).__name__}."
        )
    unknown = [key for key in raw if key not in TOP_KEYS]
    if unknown:
        raise config_error(path, f"unknown key {unknown[0]!r}; allowed at the top level: {', '.join(TOP_KEYS)}.")
    return raw


def _parse_toml(text: str, path: Path) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise config_error(path, f"not valid TOML ({err}).") from None


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise config_error(
            path, "YAML configs need PyYAML (pip install pyyaml); or write the config as TOML (.toml)."
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise config_error(path, f"not valid YAML ({' '.join(str(err).split())}).") from None


def table(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """raw[key] when it is a table (an empty one when left out)."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise config_error(path, f"{key!r} must be a table; got {value!r}.")
    return value
