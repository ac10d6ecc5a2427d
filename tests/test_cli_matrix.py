"""A user's path for every tiny preset and every format that runs on Linux, through the CLI as typed:
`edgevlm create --preset P --out M`, `edgevlm export --model M --format F --quant Q --out B` (every other flag
left at its default, the accuracy verification against PyTorch included), `edgevlm run --bundle B ...`.

tests/test_export_matrix.py checks each (family, format) cell's logits in depth on a two-block cut of the
preset; this file checks the presets themselves as `create` writes them, in fresh processes, so a preset
that cannot hold its own verification prompts (the 512-position context that SigLIP-384's 729 image tokens
overflowed), a CLI default that breaks a family, or an error that escapes as a traceback fails here.

Core ML converts on Linux but predicts only on macOS (`edgevlm run` refuses elsewhere), so it is not in this
matrix; tests/test_export_matrix.py and tests/test_coreml.py cover its export per family on Linux.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgevlm.models.presets import PRESETS

TINY = sorted(name for name in PRESETS if name.endswith("-tiny"))
# format → the scheme a user exports to an edge device (README's benchmark bundles); `--quant` has no default
QUANT = {"gguf": "q4_k", "onnx": "int4", "executorch": "int4"}
# cells the exporter refuses today: (preset, format) → words of the one-line refusal. Deleting an entry turns
# its cell into a create → export → run success case.
REFUSED = {
    ("tinyllava-tiny", "gguf"): "drops the first token",
}
# Each cell costs what a user's export costs, its 103-question verification included: 20-50 s (gguf, onnx),
# 75-105 s (executorch, most of it the exporter's lowering) on this 2-core machine, so the whole matrix (730 s)
# runs only with EDGEVLM_CLI_MATRIX=all. By default (~135 s): one cell for each kind of twin whose 512-position
# context overflowed (SigLIP 729 tokens + Phi, CLIP 576 tokens + MoE StableLM; TinyLLaVA's 728 is Bunny's geometry
# minus one token, and tests/test_presets.py checks every preset's context in 2 s), and the GGUF cells refused
# before or now (MoE-LLaVA as llama.cpp's phimoe graph; TinyLLaVA stays in the default run when REFUSED loses it).
DEFAULT_CELLS = {("bunny-tiny", "gguf"), ("moe-llava-tiny", "onnx"), ("tinyllava-tiny", "gguf"),
                 ("moe-llava-tiny", "gguf")}
ALL = os.environ.get("EDGEVLM_CLI_MATRIX") == "all"
CELLS = [pytest.param(p, f, marks=[] if ALL or (p, f) in DEFAULT_CELLS else
                      [pytest.mark.skip(reason="whole CLI matrix: EDGEVLM_CLI_MATRIX=all")])
         for p in TINY for f in QUANT]
IMAGE = Path(__file__).parent / "goldens" / "images" / "exact-336x336.png"
PROMPT = "What is in the top left?"


def edgevlm(*argv) -> subprocess.CompletedProcess:
    """`edgevlm ARGV...` in a fresh process: this interpreter's console script, as a user runs it. PyTorch on
    one thread, as in every test (conftest.one_torch_thread): its pool spinning beside the runtime's during the
    verification multiplies the PyTorch reference's time (measured 12x under load, see the report)."""
    script = Path(sys.executable).parent / "edgevlm"
    exe = [str(script)] if script.is_file() else [sys.executable, "-m", "edgevlm.cli"]
    return subprocess.run([*exe, *map(str, argv)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"{r.args}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def created(tmp_path_factory):
    """`edgevlm create` once per preset, shared by its formats."""
    done: dict[str, Path] = {}

    def get(preset: str) -> Path:
        if preset not in done:
            out = tmp_path_factory.mktemp("models") / preset
            assert f"created {preset}" in ok(edgevlm("create", "--preset", preset, "--out", out))
            done[preset] = out
        return done[preset]

    return get


def test_matrix_lists_every_tiny_preset():
    assert TINY == ["bunny-tiny", "mobilevlm-tiny", "mobilevlm-v2-tiny", "moe-llava-tiny", "tinyllava-tiny"]
    assert set(REFUSED) | DEFAULT_CELLS <= {(p, f) for p in TINY for f in QUANT}  # a renamed preset or format fails


@pytest.mark.parametrize("preset, fmt", CELLS)
def test_create_export_run(preset, fmt, created, tmp_path):
    model, bundle = created(preset), tmp_path / "bundle"
    r = edgevlm("export", "--model", model, "--format", fmt, "--quant", QUANT[fmt], "--out", bundle)
    if (preset, fmt) in REFUSED:
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgevlm export: error: "), r.stderr
        assert REFUSED[preset, fmt] in lines[0], r.stderr
        assert not bundle.exists()
        return
    ok(r)
    verification = json.loads((bundle / "manifest.json").read_text())["verification"]
    assert verification["n"] >= 100 and "shapes eval split" in verification["data"]  # the default check ran
    answer = ok(edgevlm("run", "--bundle", bundle, "--image", IMAGE, "--prompt", PROMPT))
    assert answer.strip(), answer  # random weights: any non-empty answer
