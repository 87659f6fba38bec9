"""Small self-contained HTML and Markdown reports (images referenced by relative path)."""

from __future__ import annotations

import html
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..io.outputs import write_atomic


def commit() -> str:
    """The checkout's commit (`+dirty` with uncommitted changes to tracked files);
    DITLENS_COMMIT overrides it where the tree's .git is a stale copy (the GPU machine's)."""
    if os.environ.get("DITLENS_COMMIT"):
        return os.environ["DITLENS_COMMIT"]
    here = Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=here
        )
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


@dataclass
class Section:
    title: str
    text: str = ""  # a paragraph; plain text
    images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, caption)
    table: list[list[str]] | None = None  # first row = header


def _table_html(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(path: str | Path, title: str, intro: str, sections: list[Section]) -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd;margin:4px}"
        "figure{display:inline-block;margin:0 8px 8px 0;vertical-align:top}figcaption{font-size:.85em;color:#555}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:.9em;text-align:right}"
        "th{background:#f4f4f4}code{background:#f4f4f4;padding:1px 4px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
    ]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        for src, caption in s.images:
            parts.append(
                f"<figure><img src='{html.escape(src)}' "
                f"alt='{html.escape(caption)}'><figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        if s.table:
            parts.append(_table_html(s.table))
    parts.append("</body></html>")
    return write_atomic(path, "\n".join(parts))


def write_markdown(path: str | Path, title: str, intro: str, sections: list[Section]) -> Path:
    lines = [f"# {title}", "", intro, ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        for src, caption in s.images:
            lines += [f"![{caption}]({src})", ""]
        if s.table:
            lines.append("| " + " | ".join(s.table[0]) + " |")
            lines.append("|" + "---|" * len(s.table[0]))
            lines += ["| " + " | ".join(row) + " |" for row in s.table[1:]]
            lines.append("")
    return write_atomic(path, "\n".join(lines))
