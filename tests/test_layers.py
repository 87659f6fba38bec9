"""The layout is the architecture: each layer imports only the layers below it, and only
`ditlens/adapters/` names model families and their block lists (README, "Layout").

Read from the source with `ast`, so a lazy import inside a function counts as much as one at
the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ditlens"

#: layer -> the ditlens modules (first name under ditlens) that it may import
ALLOWED = {
    "adapters": {"adapters"},
    "choices": set(),
    "config": {"choices", "adapters", "core"},  # core only inside validate(): the checks run with the capability
    "core": {"core", "adapters", "choices", "config", "io"},  # io: files written whole (write_atomic)
    "io": {"io"},
}
#: imports that break the rule today, each with its reason; the test fails on any other, and on
#: one of these once it is gone (so the list cannot outlive the exception)
KNOWN: set[tuple[str, str]] = set()
#: the front-ends: nothing below may import them
FRONT_ENDS = {"cli", "app", "demo", "bench", "sweep"}
#: diffusers classes and block-list attributes of the families (adapters/ reads them)
FAMILY_NAMES = {
    "FluxTransformer2DModel",
    "Flux2Transformer2DModel",
    "QwenImageTransformer2DModel",
    "SanaTransformer2DModel",
    "SD3Transformer2DModel",
    "transformer_blocks",
    "single_transformer_blocks",
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imported(path: Path, here: tuple[str, ...] | None = None) -> set[str]:
    """The first-level ditlens modules `path` imports (relative or absolute), at any depth;
    `here`: its module path under ditlens (default: read from where it lies)."""
    tree = ast.parse(path.read_text())
    here = here or path.relative_to(PACKAGE).with_suffix("").parts
    package = here[:-1]  # what a relative import starts from (a package's __init__ is its own)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package)[: len(package) - (node.level - 1)] if node.level > 1 else list(package)
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # `from .. import x`: x is a first-level module (or the package's own name)
                    parts = [alias.name for alias in node.names]
                found.update(parts[:1])
            elif node.module and node.module.startswith("ditlens."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ditlens."):
                    found.add(alias.name.split(".")[1])
    return found - {"__version__"}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path: Path) -> None:
    layer = _layer(path)
    name = str(path.relative_to(PACKAGE))
    known = {module for where, module in KNOWN if where == name}
    imported = _imported(path) - {layer}
    assert known <= imported, f"{name} no longer imports {sorted(known - imported)}: drop it from KNOWN"
    imported -= known
    if layer in ALLOWED:
        assert imported <= ALLOWED[layer], f"{path.name} ({layer}) imports {sorted(imported - ALLOWED[layer])}"
    if layer not in FRONT_ENDS:
        assert not imported & FRONT_ENDS, f"{path.name} ({layer}) imports the front-end {sorted(imported & FRONT_ENDS)}"


def test_only_adapters_name_model_families() -> None:
    """Code (names, attributes, imports; not prose) outside adapters/ never names a family's
    class or block list: it asks the adapter (the built-in model reads its class from its
    model_index.json)."""
    named = []
    for path in _modules():
        if _layer(path) == "adapters":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.alias):
                name = node.name.split(".")[-1]
            if name in FAMILY_NAMES:
                named.append(f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')} {name}")
    assert not named, "model families named outside ditlens/adapters/:\n" + "\n".join(named)


def test_the_check_finds_a_violation(tmp_path: Path) -> None:
    """The import reader sees lazy and relative imports (else the layer test could not fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from ..cli import main\n    from ditlens.sweep import run_sweep\n    from . import rows\n"
    )
    assert _imported(probe, ("core", "probe")) == {"cli", "sweep", "core"}
