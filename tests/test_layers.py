"""Import direction (docs/architecture.md): a lower layer never imports a higher one, not even lazily inside a
function, which is where such imports used to hide."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgevlm"

ABOVE_MODELS = ("edgevlm.train", "edgevlm.convert", "edgevlm.export", "edgevlm.load", "edgevlm.runtimes",
                "edgevlm.bench", "edgevlm.evaluation", "edgevlm.quickstart", "edgevlm.goldens", "edgevlm.cli")
TRAINING_STACK = ("torch", "transformers", "peft", "safetensors", "sklearn")
# layer: the modules none of its files may import (a name and everything under it)
FORBIDDEN = {
    "models": ABOVE_MODELS,
    # the contract and the engines' shared glue: nothing of edgevlm above them, no torch
    "bundle": ("edgevlm.models", "edgevlm.data", "edgevlm.quant", "edgevlm.engines", *ABOVE_MODELS, *TRAINING_STACK),
    "engines": ("edgevlm.models", "edgevlm.data", "edgevlm.bundle", *ABOVE_MODELS, *TRAINING_STACK),
    # runtimes read bundles with their engine: no exporter, no model, no torch (ExecuTorch's bindings aside)
    "runtimes": ("edgevlm.models", "edgevlm.export", "edgevlm.train", "edgevlm.convert", "edgevlm.bench",
                 "edgevlm.quickstart", "edgevlm.cli", *TRAINING_STACK),
    # the bench measures bundles in runtime-only processes
    "bench": ("edgevlm.models", "edgevlm.export", "edgevlm.train", "edgevlm.convert", "edgevlm.quickstart",
              "edgevlm.cli", *TRAINING_STACK),
    # format writers borrow nothing from the runtimes; only the export pipeline's verification runs them
    "export": ("edgevlm.runtimes", "edgevlm.bench", "edgevlm.train", "edgevlm.quickstart", "edgevlm.cli"),
}
# files allowed what their layer forbids, and why
EXCEPTIONS = {
    "runtimes/executorch.py": ("torch",),  # ExecuTorch's Python bindings take torch tensors
    "export/__init__.py": ("edgevlm.runtimes",),  # verification: the new bundle run in its runtime
    "export/verify.py": ("edgevlm.runtimes",),
    "export/coreml_verify.py": ("edgevlm.runtimes",),  # the converted torch program run as a runtime
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
    layer, name = path.relative_to(PACKAGE).parts[0], path.relative_to(PACKAGE).as_posix()
    allowed = EXCEPTIONS.get(name, ())
    forbidden = tuple(f for f in FORBIDDEN[layer] if f not in allowed)
    assert _violations(imported(path.read_text(), module), forbidden) == []


def test_the_check_sees_lazy_and_relative_imports():
    src = "def save():\n    from edgevlm.train import lora\n\ndef load():\n    from ..convert import load\n"
    names = imported(src, "edgevlm.models.vlm")
    assert _violations(names, FORBIDDEN["models"]) == ["edgevlm.convert", "edgevlm.convert.load",
                                                       "edgevlm.train", "edgevlm.train.lora"]
