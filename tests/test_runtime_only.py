"""A runtime-only install: bundles run, evaluate and bench with torch unimportable, and answer as they do with it.

`edgevlm[onnx-runtime]` / `edgevlm[llamacpp-runtime]` install no torch. These tests make torch (and
transformers) unimportable in child processes — a directory on PYTHONPATH whose `torch` package refuses to
import, so the bench's own worker processes inherit the block — and run the CLI there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgevlm.bundle.image import load_image
from edgevlm.data.shapes import write_shapes
from edgevlm.evaluation import evaluate
from edgevlm.export import ExportConfig, export
from edgevlm.models.factory import create
from edgevlm.runtimes import load_runtime

QUESTION = "What is in the top left?"
BLOCKED = ("torch", "transformers", "peft", "safetensors")


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """Tiny ONNX and GGUF bundles of the same random-weight model."""
    root, model = tmp_path_factory.mktemp("bundles"), create("mobilevlm-v2-tiny", seed=0)
    out = {}
    for fmt, quant in (("onnx", "fp32"), ("gguf", "f16")):
        out[fmt] = export(model, ExportConfig(fmt, quant, verify_limit=0), root / f"{fmt}-{quant}", progress=False).path
    return out


@pytest.fixture(scope="session")
def blocker(tmp_path_factory):
    """A PYTHONPATH entry under which `import torch` (and the rest of the training stack) fails."""
    root = tmp_path_factory.mktemp("no-torch")
    for name in BLOCKED:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name} is blocked: a runtime-only install', name='{name}')\n")
    return root


def run_blocked(blocker, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.getcwd()])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def cli_blocked(blocker, *argv: str) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom edgevlm.cli import main\nrc = main(sys.argv[1:])\n"
            f"assert not [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}], 'the training stack was imported'\n"
            "sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.getcwd()])}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=300)


def test_the_block_works(blocker):
    done = run_blocked(blocker, "import torch")
    assert done.returncode != 0 and "torch is blocked" in done.stderr


def test_runtimes_and_contract_import_without_torch(blocker):
    done = run_blocked(blocker, "import sys\n"
                       "import edgevlm.runtimes.onnxruntime, edgevlm.runtimes.llamacpp, edgevlm.bundle.manifest\n"
                       "import edgevlm.bench.worker, edgevlm.bench.runner, edgevlm.evaluation\n"
                       "print(sorted(m for m in sys.modules if m.startswith('edgevlm')))")
    assert done.returncode == 0, done.stderr
    assert "edgevlm.runtimes.onnxruntime" in done.stdout and "edgevlm.runtimes.llamacpp" in done.stdout


@pytest.mark.parametrize("fmt", ["onnx", "gguf"])
def test_run_without_torch_answers_as_with_it(bundles, blocker, shapes_eval, fmt):
    image = next((shapes_eval / "images").iterdir())
    expected = load_runtime(bundles[fmt]).answer(load_image(image), QUESTION)
    done = cli_blocked(blocker, "run", "--bundle", str(bundles[fmt]), "--image", str(image), "--prompt", QUESTION)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
    assert done.stderr == ""  # the user sees the answer, nothing else


def test_eval_and_bench_without_torch(bundles, blocker, tmp_path):
    data = write_shapes(tmp_path / "eval", 2, seed=5, split="eval", progress=False)
    for fmt in ("onnx", "gguf"):
        done = cli_blocked(blocker, "eval", "--bundle", str(bundles[fmt]), "--data", str(data),
                           "--json", str(tmp_path / f"{fmt}.json"))
        assert done.returncode == 0, done.stderr
        blocked = json.loads((tmp_path / f"{fmt}.json").read_text())["predictions"]
        normal = evaluate(load_runtime(bundles[fmt]), data, progress=False).predictions
        assert [p["prediction"] for p in blocked] == [p["prediction"] for p in normal] and len(normal) > 5
    report = tmp_path / "bench.json"
    done = cli_blocked(blocker, "bench", str(bundles["onnx"]), str(bundles["gguf"]), "--runs", "1", "--rounds", "1",
                       "--new-tokens", "4", "--threads", "1", "--json", str(report))
    assert done.returncode == 0, done.stderr
    results = json.loads(report.read_text())["results"]
    assert [r["format"] for r in results] == ["onnx", "gguf"]
    assert all(r["decode_tok_s"]["median"] > 0 and r["peak_rss_bytes"] > 0 for r in results)


def test_training_without_torch_is_one_line(blocker, tmp_path):
    done = cli_blocked(blocker, "create", "--preset", "mobilevlm-v2-tiny", "--out", str(tmp_path / "m"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("edgevlm create: error: this command needs torch")
