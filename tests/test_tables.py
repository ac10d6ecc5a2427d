"""The tables tie together: every row of one is understood by the others that read it.

Architectures (models/archs.py) ↔ the LMs transformers builds, the export decoder, llama.cpp's names; families
(models/families.py) ↔ presets, converters, templates, projectors; quantization schemes (quant/schemes.py) ↔
each format's exporter and its mechanisms.
"""

from __future__ import annotations

import gguf
import pytest
import torch

from edgevlm.bundle.template import TEMPLATES
from edgevlm.config import LLMConfig
from edgevlm.convert import SOURCES
from edgevlm.export import EXPORTER_MODULES, Exporter, exporter
from edgevlm.models.archs import ARCHS
from edgevlm.models.families import FAMILIES
from edgevlm.models.llm import build_llm
from edgevlm.models.presets import PRESETS
from edgevlm.models.projectors import PROJECTORS
from edgevlm.quant.schemes import FORMATS, PARTS

ENGINES = {"gguf": "gguf", "executorch": "executorch", "onnx": "onnxruntime", "coreml": "coremltools"}


# ---- architectures ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(ARCHS))
def test_arch_row_matches_the_lm_it_builds(arch):
    row = ARCHS[arch]
    torch.manual_seed(0)
    llm = build_llm(LLMConfig(arch=arch, vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                              num_heads=2, num_kv_heads=2, max_position_embeddings=16, rms_norm_eps=1e-3,
                              extra={"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}))  # ids in the vocab
    assert isinstance(llm.config, row.hf_config)
    assert getattr(llm.config, row.norm.value) == 1e-3  # the epsilon lands under the row's key
    layer = llm.model.layers[0]
    assert hasattr(llm.model, row.decoder.final_norm) and hasattr(layer.self_attn, row.decoder.out_proj)
    assert hasattr(layer.self_attn, "qkv_proj") == row.decoder.fused_qkv
    defaults = row.hf_config().to_dict()
    known = set(defaults) | set(defaults.get("rope_parameters") or {})
    assert set(row.extra_keys) <= known, set(row.extra_keys) - known
    assert set(row.decoder.unsupported) <= known


@pytest.mark.parametrize("arch", [a for a in ARCHS if ARCHS[a].gguf is not None])  # rows llama.cpp runs
def test_arch_row_names_a_llama_cpp_architecture(arch):
    spec = ARCHS[arch].gguf
    assert spec.arch in gguf.MODEL_ARCH_NAMES.values()
    assert spec.activations and (spec.moe is None or spec.moe.arch in gguf.MODEL_ARCH_NAMES.values())


# ---- families ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_has_presets_and_a_converter(family):
    row = FAMILIES[family]
    assert row.template in TEMPLATES and row.projector in PROJECTORS
    assert any(p.endswith("-tiny") for p in row.presets), "every family has a tiny preset for tests"
    for name in row.presets:
        cfg = PRESETS[name]()
        assert cfg.family == family and cfg.llm.arch in ARCHS
        assert cfg.template == (TEMPLATES["edgevlm"].name if name.endswith("-tiny") else row.template)
    assert SOURCES[family].__module__ == f"edgevlm.convert.{row.converter}"


def test_every_preset_and_converter_belongs_to_a_family():
    listed = [p for f in FAMILIES for p in FAMILIES[f].presets]
    assert sorted(listed) == sorted(PRESETS)  # each preset listed once
    assert list(SOURCES) == list(FAMILIES)


# ---- quantization schemes ↔ exporters ---------------------------------------------------------------------------
def test_every_format_has_an_exporter():
    assert sorted(FORMATS) == sorted(EXPORTER_MODULES)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_scheme_has_its_mechanisms_in_its_format(fmt):
    pytest.importorskip(ENGINES[fmt])
    writer = exporter(fmt)
    assert isinstance(writer, Exporter)
    for name in FORMATS[fmt]:
        s = FORMATS[fmt][name]
        assert list(s.parts()) == list(PARTS)
        assert list(s.to_dict()) == ["name", *PARTS, "bits"]  # the manifest's `quantization` section
        for part, mechanism in s.mechanisms().items():
            assert writer.mechanism(part, mechanism) is not None, (name, part, mechanism)
        if fmt == "gguf":  # the embedding and the decoder share the text model's file: one llama.cpp file type
            assert s.token_embedding.mechanism == s.text_decoder.mechanism, name
