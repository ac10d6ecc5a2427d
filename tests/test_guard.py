"""The accuracy guard (`edgevlm export --max-drop D [--strict]`, edgevlm/export/guard.py) on a scheme that really
loses accuracy: ONNX int2 (MatMulNBits 2-bit, block 32, LM head and vision tower included) on the tiny trained
model, verified in onnxruntime against PyTorch on the parity slice (103 questions).

Measured (2-core x86, 2026-12-02): int2 answers 0.204 vs PyTorch 0.223 (drop 0.019, 2 questions; 39 % of answers
identical); the guard, at D = 0, measured each part kept alone at int8, then kept the LM head and the last
layer: 0.223, drop 0. The before / after lines print with `pytest -s` or `-rP`.

Cost: ~70 s (one trace, shared by every export here as tests/test_onnx.py shares it; 1 + 5 + 1 exports and
verifications for the guard, one for --strict), besides the shared `trained_model_dir` fixture.
"""

from __future__ import annotations

import copy

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cli_errors import fails  # noqa: E402
from edgevlm.bundle.manifest import open_bundle  # noqa: E402
from edgevlm.errors import EdgeVLMError  # noqa: E402
from edgevlm.export import ExportConfig, export  # noqa: E402
from edgevlm.export import onnx as onnx_export  # noqa: E402
from edgevlm.export.guard import PARTS, Guard, default_max_drop, enforce  # noqa: E402
from edgevlm.models.vlm import EdgeVLM  # noqa: E402


@pytest.fixture(scope="module")
def trained(trained_model_dir):
    return EdgeVLM.from_pretrained(trained_model_dir)


@pytest.fixture(scope="module")
def traced(trained):
    """One trace with the guard's part names, for every export of this module (the exporter is deterministic:
    node names are all that `mark_parts` changes)."""
    graphs = onnx_export.export_graphs(trained, mark_parts=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_export, "export_graphs", lambda model, mark_parts=False: copy.deepcopy(graphs))
        yield graphs


def int2(parity_eval, **guard) -> ExportConfig:
    return ExportConfig("onnx", "int2", verify_data=parity_eval, verify_limit=200, threads=1, **guard)


def test_guard_keeps_sensitive_parts_until_within_drop(trained, traced, parity_eval, tmp_path):
    r = export(trained, int2(parity_eval, max_drop=0.0), tmp_path / "b", progress=False)
    v = r.manifest["verification"]
    g = v["guard"]
    print(f"\nonnx int2, before: accuracy {g['before']['accuracy']} (PyTorch {g['before']['reference_accuracy']}, "
          f"drop {g['before']['drop']}); sensitivity (drop with the part alone at int8): "
          f"{ {p: s['drop'] for p, s in g['sensitivity'].items()} }; kept {list(g['kept'])}; "
          f"after: accuracy {g['after']['accuracy']} (drop {g['after']['drop']})")
    assert g["before"]["drop"] > 0, "int2 no longer loses accuracy on the test model: pick a lossier scheme"
    assert g["after"]["drop"] <= 0 and g["after"]["accuracy"] == v["accuracy"]  # the record of the bundle on disk
    assert list(g["sensitivity"]) == ["vision_encoder", "lm_head", "first_layer", "middle_layers", "last_layer"]
    assert g["kept"] and set(g["kept"]) <= set(g["sensitivity"])
    assert g["tries"] <= 2 * len(g["sensitivity"]) - 1
    open_bundle(r.path)  # the record is where spec 1.0 readers accept it (schema, file hashes after the re-writes)
    # the kept parts really are int8 in the bundle, the others still 2-bit

    graphs = {name: onnx.load(r.path / file, load_external_data=False) for name, file in
              onnx_export.GRAPH_FILES.items()}
    ops = {n.name: n.op_type for n in graphs["decoder"].graph.node}
    for part in onnx_export.DECODER_PARTS:
        mine = {op for name, op in ops.items() if name.startswith(f"{part}/") and op.startswith("MatMul")
                and op != "MatMul"}  # the weight MatMuls (the attention MatMuls stay float)
        assert mine == ({"MatMulInteger"} if part in g["kept"] else {"MatMulNBits"}), (part, mine)
    vision = {n.op_type for n in graphs["vision"].graph.node}
    assert ("MatMulInteger" in vision) == ("vision_encoder" in g["kept"]) != ("MatMulNBits" in vision)


def test_strict_fails_over_drop_and_writes_nothing(trained, traced, parity_eval, tmp_path):
    with pytest.raises(EdgeVLMError, match=r"accuracy drop 0\.\d+ against PyTorch exceeds --max-drop 0\.0"):
        export(trained, int2(parity_eval, max_drop=0.0, strict=True), tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()


def test_guard_within_drop_rewrites_nothing():
    """Within D the bundle is the unguarded export: no try is made; over D, greedy by sensitivity."""
    first = {"accuracy": 0.5, "reference_accuracy": 0.51}
    record, v = enforce(Guard(0.02), first, lambda: pytest.fail("parts asked"), lambda *a: pytest.fail("retried"))
    assert v is first and record["kept"] == {} and record["after"]["drop"] == 0.01
    # drop with exactly these parts kept (a table standing for the bundles' verification)
    drops = {frozenset(["lm_head"]): 0.03, frozenset(["first_layer"]): 0.01, frozenset(["last_layer"]): 0.05,
             frozenset(["first_layer", "lm_head"]): 0.0}
    tries = []

    def attempt(keep, verify):
        tries.append((keep, verify))
        return {"accuracy": 0.5 - drops[keep], "reference_accuracy": 0.5} if verify else None

    parts = {p: "int8" for p in ("lm_head", "first_layer", "last_layer")}
    record, v = enforce(Guard(0.0), {"accuracy": 0.4, "reference_accuracy": 0.5}, lambda: parts, attempt)
    assert record["kept"] == {"lm_head": "int8", "first_layer": "int8"} and v["accuracy"] == 0.5
    assert tries[-1] == (frozenset(["first_layer", "lm_head"]), True) and record["tries"] == 4


def test_defaults_and_refusals(tiny_model_dir, tmp_path, capsys):
    assert default_max_drop(8) == default_max_drop(16) == 0.01 and default_max_drop(4.5) == 0.02
    assert ExportConfig("onnx", "int8", max_drop="default").max_drop == 0.01
    assert ExportConfig("gguf", "q4_0", strict=True).max_drop == 0.02
    assert set(onnx_export.EXPORTER.guard_parts) <= set(PARTS)
    for argv, needle in [
        (["--format", "gguf", "--quant", "q4_0", "--max-drop"], "gguf export has no mechanism yet"),
        (["--format", "onnx", "--quant", "int2", "--max-drop", "0.02", "--verify-limit", "0"], "need the accuracy"),
        (["--format", "onnx", "--quant", "int2", "--max-drop", "2"], "must be an accuracy difference in [0, 1]"),
        (["--format", "onnx", "--quant", "int2", "--max-drop", "x"], "takes an accuracy difference"),
    ]:
        fails(["export", "--model", str(tiny_model_dir), "--out", str(tmp_path / "b"), *argv], capsys, needle)
        assert not (tmp_path / "b").exists()

