"""Every ```python block in README.md and docs/*.md runs, on the built-in model.

Each snippet is one test case (id `docs/api.md:42`, the line of its opening fence), run with
`exec` in a fresh copy of a small prelude namespace, inside a temporary working directory
(snippets may write files). The prelude stands for what the prose around a snippet assumes:

    torch, ditlens   imported
    pipe             the built-in pipeline, loaded once per session
    prompts          two built-in captions

A snippet that starts the web app (`serve(...)`) gets a stand-in `ditlens.app.serve` that
checks its arguments against the real signature and returns instead of serving forever.

Skip rule: a snippet is skipped, with the reason in the message, when it loads a model other
than the built-in one (`load_pipeline("owner/name")`, `from_pretrained("./FLUX.1-dev")`: a hub
id, offline here, or a folder that does not exist) or uses a diffusers pipeline class other
than the built-in one (it needs that model's weights). Anything else must run.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

import ditlens
from ditlens.models import load_pipeline

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROMPTS = [
    "a large red square on the left on a gray background",
    "a small blue circle in the center on a white background",
]

LOADED_MODEL = re.compile(r"""(?:load_pipeline|from_pretrained)\(\s*["']([^"']+)["']""")
REAL_PIPELINE = re.compile(r"\b(?!Builtin)(\w+Pipeline)\b")


def _snippets() -> list[tuple[str, str]]:
    """(id, code) for every ```python block, in file order; the code is padded with blank
    lines so that a traceback's line number is the Markdown file's."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        start = None
        for number, line in enumerate(lines, start=1):
            if start is None and line.strip() == "```python":
                start = number
            elif start is not None and line.strip() == "```":
                found.append(
                    (f"{doc.relative_to(ROOT)}:{start}", "\n" * start + "\n".join(lines[start : number - 1]) + "\n")
                )
                start = None
    return found


SNIPPETS = _snippets()


def _skip_reason(code: str) -> str | None:
    if match := REAL_PIPELINE.search(code):
        return f"uses {match.group(1)}, which needs that model's weights; the built-in model is a BuiltinPipeline"
    for match in LOADED_MODEL.finditer(code):
        model = match.group(1)
        if model != "builtin" and not Path(model).exists():
            return f"loads {model!r}, a hub id or folder that is not on this offline machine"
    return None


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="session")
def builtin_pipe():
    return load_pipeline()


def _serve_stand_in(*args, **kwargs) -> None:
    """`ditlens.app.serve` without the server: wrong arguments still fail as they would."""
    from ditlens import app

    inspect.signature(app.serve).bind(*args, **kwargs)


def test_the_docs_have_snippets():
    assert len(SNIPPETS) >= 5, SNIPPETS  # the extraction found the blocks, not nothing


@pytest.mark.parametrize(("name", "code"), SNIPPETS, ids=[name for name, _ in SNIPPETS])
def test_snippet_runs(name, code, builtin_pipe, tmp_path, monkeypatch):
    if reason := _skip_reason(code):
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    if "serve(" in code:
        from ditlens import app

        monkeypatch.setattr(app, "serve", _serve_stand_in)
    namespace = {
        "__name__": "__doc_snippet__",
        "torch": torch,
        "ditlens": ditlens,
        "pipe": builtin_pipe,
        "prompts": list(PROMPTS),
    }
    exec(compile(code, str(ROOT / name.rsplit(":", 1)[0]), "exec"), namespace)
