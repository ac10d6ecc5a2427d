"""The quickstart pipeline end to end on a tiny recipe: data → create → train → eval → export → bench."""

from __future__ import annotations

import json

import pytest

from edgevlm.quickstart import Recipe, quickstart
from edgevlm.train.config import TrainConfig


@pytest.mark.timeout(900)
def test_quickstart_pipeline(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("executorch")
    pytest.importorskip("onnxruntime")
    recipe = Recipe(
        train_images=8, eval_images=2, verify_questions=5, bench_runs=1,
        stages={"finetune": TrainConfig(stage="finetune", max_steps=3, batch_size=4)},
    )
    summary = quickstart(tmp_path / "qs", recipe, progress=False)
    out = capsys.readouterr().out
    assert (tmp_path / "qs" / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "qs" / "quickstart.json").read_text())["eval"]["n"] == summary["eval"]["n"] > 0
    assert [b["bundle"] for b in summary["bundles"]] == ["gguf-q4_k", "executorch-int4", "onnx-int4"]
    for b in summary["bundles"]:
        assert (tmp_path / "qs" / "bundles" / b["bundle"] / "manifest.json").is_file()
        assert b["n"] >= 5 and b["decode_tok_s"] > 0
    assert "| gguf-q4_k |" in out and "| **overall** |" in out
