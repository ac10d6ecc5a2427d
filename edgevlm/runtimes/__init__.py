"""Runtimes: run a bundle from its files alone, through each ecosystem's own engine.

Each format's runtime lives in its own module, imported only when a bundle of that format is opened, so that
running an ONNX bundle does not import ExecuTorch (and a machine without one stack can use the others).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgevlm.errors import EdgeVLMError
from edgevlm.bundle.manifest import MANIFEST, Bundle, open_bundle
from edgevlm.runtimes.base import Runtime

# format (manifest "format") → module defining `RUNTIME`, a Runtime subclass
RUNTIME_MODULES = {
    "gguf": "edgevlm.runtimes.llamacpp",
    "executorch": "edgevlm.runtimes.executorch",
    "onnx": "edgevlm.runtimes.onnxruntime",
    "coreml": "edgevlm.runtimes.coreml",
}


def runtime_class(bundle: Bundle) -> type[Runtime]:
    """The Runtime subclass for the bundle's format (its module imported only now)."""
    module = RUNTIME_MODULES.get(bundle.format)
    if module is None:
        raise EdgeVLMError(f"unknown bundle format {bundle.format!r}; known: {', '.join(sorted(RUNTIME_MODULES))}",
                           bundle.path / MANIFEST)
    return importlib.import_module(module).RUNTIME


def load_runtime(path: str | Path, threads: int | None = None, self_timing: bool = False,
                 settings: dict[str, str] | None = None) -> Runtime:
    """Open the bundle at `path` (checking its files) in the runtime its manifest names; `self_timing` and
    `settings` (engine knobs): see `Runtime.__init__`."""
    bundle = open_bundle(path)
    return runtime_class(bundle)(bundle, threads=threads, self_timing=self_timing, settings=settings)
