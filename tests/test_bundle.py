"""Bundle manifests: every listed file is checked (present, size, sha256) before a runtime sees it."""

from __future__ import annotations

import pytest

from edgevlm.errors import EdgeVLMError
from edgevlm.export import ExportConfig
from edgevlm.bundle.manifest import open_bundle, write_manifest
from edgevlm.export.manifest import build_manifest
from edgevlm.quant.schemes import scheme


@pytest.fixture
def bundle(tmp_path, tiny_model):
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"\x01" * 1000)
    tiny_model.tokenizer.save(root / "tokenizer.json")
    write_manifest(root, build_manifest(tiny_model, "onnx", scheme("onnx", "fp32"), root, {"max_context": 256}))
    return root


def test_manifest_round_trip(bundle, tiny_model):
    b = open_bundle(bundle)
    assert b.max_context == 256 and b.image_tokens == 144
    assert b.manifest["files"]["weights.bin"]["bytes"] == 1000
    question = "<image>\nWhat is in the top left?"
    assert b.prompt_ids(question) == tiny_model.prompt_ids(question)
    assert b.preprocess == tiny_model.preprocess


@pytest.mark.parametrize("damage, needle", [
    (lambda f: f.write_bytes(b"\x01" * 999), "truncated or replaced"),
    (lambda f: f.write_bytes(b"\x02" * 1000), "sha256 differs"),
    (lambda f: f.unlink(), "missing"),
])
def test_damaged_file_is_named(bundle, damage, needle):
    damage(bundle / "weights.bin")
    with pytest.raises(EdgeVLMError, match=needle) as e:
        open_bundle(bundle)
    assert str(bundle / "weights.bin") in str(e.value)


def test_unknown_format_and_scheme_list_the_known_ones():
    with pytest.raises(EdgeVLMError, match="known: coreml, executorch, gguf, onnx"):
        ExportConfig("tflite", "int8")
    with pytest.raises(EdgeVLMError, match="known: f16, q4_0, q4_k, q8_0"):
        ExportConfig("gguf", "int4")
