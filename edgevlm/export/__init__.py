"""Export: a model dir → a bundle dir for one runtime at one quantization, verified in that runtime.

Each format has one module whose `EXPORTER` implements `edgevlm.export.base.Exporter` (its entry point:
`write(model, scheme, out_dir) -> dict`, the format's manifest fields); `export` wraps it the same way for
every format: writes go to a temporary directory, the
tokenizer and manifest are added, the bundle is run in its runtime against PyTorch, and only then is it
renamed into place. An interrupted or failed export leaves the previous bundle intact.

Verification (`ExportConfig.verify`) is `accuracy` by default: answers on `shapes` questions compared with
PyTorch's. A model with random weights (a real-size architecture exported only to measure speed) answers
nothing meaningful and its PyTorch reference costs minutes per question, so `smoke` instead only checks that
the bundle loads in its runtime and generates a few in-vocabulary tokens for one image; the manifest records
which check was made. `verify_limit=0` skips both.

With `max_drop` (the accuracy guard, edgevlm/export/guard.py) a bundle that loses more accuracy than that
against PyTorch in its verification is re-written with its most sensitive parts at a higher precision, or with
`strict` refused; the verification record's `guard` says what was kept.
"""

from __future__ import annotations

import enum
import functools
import importlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgevlm.bundle.manifest import MANIFEST, TOKENIZER, write_manifest
from edgevlm.errors import EdgeVLMError
from edgevlm.export.base import Exporter
from edgevlm.export.guard import Guard, default_max_drop, enforce
from edgevlm.export.manifest import build_manifest
from edgevlm.io import atomic_dir
from edgevlm.quant.schemes import FORMATS, scheme

# format → the module whose `EXPORTER` writes it (imported on use: each pulls in its engine)
EXPORTER_MODULES = {
    "gguf": "edgevlm.export.gguf",
    "executorch": "edgevlm.export.executorch",
    "onnx": "edgevlm.export.onnx",
    "coreml": "edgevlm.export.coreml",
}


class VerifyMode(str, enum.Enum):
    ACCURACY = "accuracy"  # answers compared with PyTorch's on `verify_limit` questions
    SMOKE = "smoke"  # loads in its runtime and generates SMOKE_TOKENS tokens for one image; no comparison


SMOKE_TOKENS = 4
DEFAULT = "default"  # ExportConfig.max_drop: the guard's default D for the scheme's bits (guard.DEFAULT_MAX_DROP)


@dataclass
class ExportConfig:
    format: str
    quant: str
    verify_data: Path | None = None  # LLaVA-format data dir; None: a generated `shapes` eval slice
    verify_limit: int = 100  # questions run in the runtime and in PyTorch; 0 skips verification
    threads: int | None = None
    verify: VerifyMode = VerifyMode.ACCURACY
    max_drop: float | str | None = None  # the accuracy guard's D; "default": by the scheme's bits; None: no guard
    strict: bool = False  # guarded: fail over D instead of raising parts' precision (implies max_drop "default")

    def __post_init__(self):
        s = scheme(self.format, self.quant)  # unknown format or quant raises, listing the known ones
        self.verify = VerifyMode(self.verify)
        if self.strict and self.max_drop is None:
            self.max_drop = DEFAULT
        if self.max_drop == DEFAULT:
            self.max_drop = default_max_drop(s.bits)

    @property
    def guard(self) -> Guard | None:
        return None if self.max_drop is None else Guard(float(self.max_drop), self.strict)


@dataclass
class ExportResult:
    path: Path
    manifest: dict

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest["files"].values())


def exporter(fmt: str) -> Exporter:
    """The exporter of format `fmt` (its module imported now)."""
    FORMATS[fmt]  # an unknown format raises, listing the known ones
    return importlib.import_module(EXPORTER_MODULES[fmt]).EXPORTER


def export(model, cfg: ExportConfig, out: str | Path, progress: bool = True) -> ExportResult:
    """Export the EdgeVLM `model` to a bundle at `out`, verified against `model` before it appears there."""
    s = scheme(cfg.format, cfg.quant)
    writer = exporter(cfg.format)
    guard = cfg.guard
    if guard is not None:
        _check_guardable(writer, cfg, guard)
    reference: dict = {}  # PyTorch's answers, shared by the guard's re-exports
    with atomic_dir(out, "bundle") as tmp:
        manifest = _finish(model, cfg.format, s, tmp, writer.write(model, s, tmp))
        if cfg.verify_limit > 0:
            check = _smoke if cfg.verify == VerifyMode.SMOKE else functools.partial(_verify, reference=reference)
            manifest["verification"] = check(writer, model, s, tmp, cfg, progress)
            write_manifest(tmp, manifest)
        if guard is not None:
            manifest = _guard(writer, model, s, tmp, cfg, guard, manifest, progress, reference)
    return ExportResult(Path(out), manifest)


def _finish(model, fmt: str, s, tmp: Path, fields: dict) -> dict:
    """Add the tokenizer and the manifest to the format's files in `tmp`; the manifest."""
    model.tokenizer.save(tmp / TOKENIZER)
    manifest = build_manifest(model, fmt, s, tmp, fields)
    write_manifest(tmp, manifest)
    return manifest


def _check_guardable(writer: Exporter, cfg: ExportConfig, guard: Guard) -> None:
    """Refuse, before anything is written, a guard that could not act (no silent unguarded export)."""
    if cfg.verify_limit <= 0 or cfg.verify != VerifyMode.ACCURACY or not writer.runs_here():
        raise EdgeVLMError("--max-drop / --strict need the accuracy verification in the runtime "
                           "(--verify accuracy, --verify-limit > 0, a runtime that runs on this system)")
    if not guard.strict and not writer.guard_parts:
        raise EdgeVLMError(f"{cfg.format} export has no mechanism yet to keep parts at a higher precision: "
                           f"--max-drop needs --strict here (fail over the drop instead of re-exporting)")


def _guard(writer: Exporter, model, s, tmp: Path, cfg: ExportConfig, guard: Guard, manifest: dict,
           progress: bool, reference: dict) -> dict:
    """`guard.enforce` over this export: each try re-writes `tmp` with some parts kept; the final manifest."""
    keeper, state = None, {"manifest": manifest}

    def keeper_parts() -> dict[str, str]:
        nonlocal keeper
        keeper = writer.keeper(model, s)
        return keeper.parts

    def attempt(keep: frozenset[str], verify: bool) -> dict | None:
        for entry in tmp.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        state["manifest"] = _finish(model, cfg.format, s, tmp, keeper.write(tmp, keep))
        return _verify(writer, model, s, tmp, cfg, progress, reference) if verify else None

    record, verification = enforce(guard, manifest["verification"], keeper_parts, attempt)
    final = state["manifest"]
    final["verification"] = {**verification, "guard": record}  # free-form: readers of spec 1.0 accept it
    write_manifest(tmp, final)
    return final


def _verify(writer: Exporter, model, s, tmp: Path, cfg: ExportConfig, progress: bool,
            reference: dict | None = None) -> dict:
    """Run the bundle in its runtime against PyTorch; where the runtime cannot run on this system (CoreML off
    macOS), the format's exporter checks what it can (`offline_verification`) and says what it skipped."""
    if not writer.runs_here():
        return writer.offline_verification(model, s, tmp, cfg.verify_data, cfg.verify_limit, progress=progress,
                                           threads=cfg.threads)
    from edgevlm.export.verify import verify
    from edgevlm.runtimes import load_runtime

    runtime = load_runtime(tmp, threads=cfg.threads)
    try:
        return verify(runtime, model, cfg.verify_data, cfg.verify_limit, progress=progress, reference=reference)
    finally:
        del runtime  # release file handles before the rename


def _smoke(writer: Exporter, model, s, tmp: Path, cfg: ExportConfig, progress: bool) -> dict:
    """Load the bundle in its runtime and generate a few tokens for one `shapes` image: no PyTorch comparison."""
    if not writer.runs_here():
        return {"mode": VerifyMode.SMOKE.value, "skipped": "the runtime cannot run on this system"}
    import tempfile

    from edgevlm.bundle.image import load_image
    from edgevlm.data.shapes import write_shapes
    from edgevlm.runtimes import load_runtime

    with tempfile.TemporaryDirectory() as d:
        images = write_shapes(Path(d) / "eval", 1, seed=0, split="eval", progress=False) / "images"
        image = load_image(next(images.iterdir()))
    t = time.perf_counter()
    runtime = load_runtime(tmp, threads=cfg.threads)
    try:
        loaded = time.perf_counter()
        ids = runtime.generate_many(image, ["What is in the top left?"], SMOKE_TOKENS)[0]
        done = time.perf_counter()
    finally:
        del runtime  # release file handles before the rename
    vocab = model.cfg.llm.vocab_size
    if any(not 0 <= i < vocab for i in ids):
        raise EdgeVLMError(f"smoke check: the runtime generated ids outside the vocabulary of {vocab}: {ids}", tmp)
    return {"mode": VerifyMode.SMOKE.value, "data": "shapes eval split, seed 0, 1 image (generated)",
            "generated_ids": ids, "load_s": round(loaded - t, 2), "generate_s": round(done - loaded, 2)}


__all__ = ["DEFAULT", "EXPORTER_MODULES", "FORMATS", "MANIFEST", "ExportConfig", "ExportResult", "Exporter",
           "VerifyMode", "export", "exporter"]
