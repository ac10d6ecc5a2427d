"""Import direction (docs/architecture.md): a lower layer never imports a higher one, not even lazily inside a
function, which is where such imports used to hide."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgevlm"

# layer: the modules none of its files may import (a name and everything under it)
FORBIDDEN = {
    "models": ("edgevlm.train", "edgevlm.convert", "edgevlm.export", "edgevlm.load", "edgevlm.runtimes",
               "edgevlm.bench", "edgevlm.evaluation", "edgevlm.quickstart", "edgevlm.cli"),
}


def imported(source: str, module: str) -> set[str]:
    """Every module an import statement anywhere in `source` names (relative ones resolved against `module`),
    with `from a import b` counted as both `a` and `a.b` (b may be a sub-module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def _violations(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", [p for layer in FORBIDDEN for p in sorted((PACKAGE / layer).rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layer_imports_nothing_above_it(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    module = ".".join(rel.parts)
    layer = path.relative_to(PACKAGE).parts[0]
    assert _violations(imported(path.read_text(), module), FORBIDDEN[layer]) == []


def test_the_check_sees_lazy_and_relative_imports():
    src = "def save():\n    from edgevlm.train import lora\n\ndef load():\n    from ..convert import load\n"
    names = imported(src, "edgevlm.models.vlm")
    assert _violations(names, FORBIDDEN["models"]) == ["edgevlm.convert", "edgevlm.convert.load",
                                                       "edgevlm.train", "edgevlm.train.lora"]
