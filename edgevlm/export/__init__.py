"""Export: a model dir → a bundle dir for one runtime at one quantization, verified in that runtime.

Each format has one module with one entry point, `write(model, scheme, out_dir) -> dict` (the format's
manifest fields); `export` wraps it the same way for every format: writes go to a temporary directory, the
tokenizer and manifest are added, the bundle is run in its runtime against PyTorch, and only then is it
renamed into place. An interrupted or failed export leaves the previous bundle intact.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from edgevlm.export.bundle import MANIFEST, TOKENIZER, build_manifest, write_manifest
from edgevlm.io import atomic_dir
from edgevlm.quant.schemes import FORMATS, scheme

# format → module defining `write(model, scheme, out_dir) -> dict`
EXPORTER_MODULES = {
    "gguf": "edgevlm.export.gguf",
    "executorch": "edgevlm.export.executorch",
    "onnx": "edgevlm.export.onnx",
    "coreml": "edgevlm.export.coreml",
}


@dataclass
class ExportConfig:
    format: str
    quant: str
    verify_data: Path | None = None  # LLaVA-format data dir; None: a generated `shapes` eval slice
    verify_limit: int = 100  # questions run in the runtime and in PyTorch; 0 skips verification
    threads: int | None = None

    def __post_init__(self):
        scheme(self.format, self.quant)  # unknown format or quant raises, listing the known ones


@dataclass
class ExportResult:
    path: Path
    manifest: dict

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest["files"].values())


def export(model, cfg: ExportConfig, out: str | Path, progress: bool = True) -> ExportResult:
    """Export the EdgeVLM `model` to a bundle at `out`, verified against `model` before it appears there."""
    s = scheme(cfg.format, cfg.quant)
    writer = importlib.import_module(EXPORTER_MODULES[cfg.format])
    with atomic_dir(out) as tmp:
        fields = writer.write(model, s, tmp)
        model.tokenizer.save(tmp / TOKENIZER)
        manifest = build_manifest(model, cfg.format, s, tmp, fields)
        write_manifest(tmp, manifest)
        if cfg.verify_limit > 0:
            manifest["verification"] = _verify(writer, model, s, tmp, cfg, progress)
            write_manifest(tmp, manifest)
    return ExportResult(Path(out), manifest)


def _verify(writer, model, s, tmp: Path, cfg: ExportConfig, progress: bool) -> dict:
    """Run the bundle in its runtime against PyTorch; where the runtime cannot run on this system (CoreML off
    macOS), the format's module checks what it can (`offline_verification`) and says what it skipped."""
    if not getattr(writer, "verify_here", lambda: True)():
        return writer.offline_verification(model, s, tmp, cfg.verify_data, cfg.verify_limit, progress=progress,
                                           threads=cfg.threads)
    from edgevlm.export.verify import verify
    from edgevlm.runtimes import load_runtime

    runtime = load_runtime(tmp, threads=cfg.threads)
    try:
        return verify(runtime, model, cfg.verify_data, cfg.verify_limit, progress=progress)
    finally:
        del runtime  # release file handles before the rename


__all__ = ["EXPORTER_MODULES", "FORMATS", "MANIFEST", "ExportConfig", "ExportResult", "export"]
