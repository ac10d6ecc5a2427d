"""Real-size vocabularies (padded tokenizer), the smoke verification mode, and the bench's time split.

A tiny LLM with MobileLLaMA's 32000-token vocabulary stands in for a real-size model: the vocabulary is what
the padding is about, and the widths keep the export to seconds.
"""

from __future__ import annotations

import json

import gguf
import pytest

from edgevlm.bench.runner import BenchConfig, bench
from edgevlm.bundle.tokenizer import TextTokenizer
from edgevlm.data.tokenizer import SHAPES_VOCAB, train_shapes_tokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.export import ExportConfig, export
from edgevlm.models.factory import create_from_config, vocabulary
from edgevlm.models.presets import get_preset, tiny_vlm

REAL_VOCAB = 32000


def test_tiny_presets_keep_the_shapes_vocabulary():
    size, tok = vocabulary(SHAPES_VOCAB)
    assert size == len(tok) == SHAPES_VOCAB
    ref = train_shapes_tokenizer()
    assert tok.encode("What is in the top left? red circle") == ref.encode("What is in the top left? red circle")


def test_real_size_vocabulary_is_padded_with_placeholders(tmp_path):
    size, tok = vocabulary(get_preset("mobilevlm-v2-1.7b").llm.vocab_size)
    assert size == len(tok) == REAL_VOCAB
    text = "What is in the top left? The answer: 3 blue squares."
    ids = tok.encode(text)
    assert max(ids) < SHAPES_VOCAB  # ordinary text never lands on a placeholder
    assert tok.decode(ids + [SHAPES_VOCAB, REAL_VOCAB - 1]) == tok.decode(ids)  # placeholders decode to nothing
    tok.save(tmp_path / "tokenizer.json")
    loaded = TextTokenizer.load(tmp_path / "tokenizer.json")
    assert len(loaded) == REAL_VOCAB and loaded.encode(text) == ids
    with pytest.raises(EdgeVLMError, match="cannot pad"):
        tok.pad_to(100)


@pytest.fixture(scope="module")
def big_vocab_bundle(tmp_path_factory):
    cfg = tiny_vlm("mobilevlm", "ldpv2")
    cfg.llm.vocab_size = REAL_VOCAB
    model = create_from_config(cfg, seed=0)
    out = tmp_path_factory.mktemp("bench") / "gguf-q8_0"
    result = export(model, ExportConfig("gguf", "q8_0", verify="smoke", threads=1), out, progress=False)
    return model, result


def test_gguf_token_list_has_one_entry_per_embedding_row(big_vocab_bundle):
    model, result = big_vocab_bundle
    assert model.cfg.llm.vocab_size == len(model.tokenizer) == REAL_VOCAB
    reader = gguf.GGUFReader(str(result.path / result.manifest["runtime"]["text_model"]))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    rows = next(t for t in reader.tensors if t.name == "token_embd.weight").shape[-1]
    assert len(tokens.data) == rows == REAL_VOCAB
    loaded = TextTokenizer.load(result.path / "tokenizer.json")
    assert len(loaded) == REAL_VOCAB


def test_smoke_verification_records_what_it_checked(big_vocab_bundle):
    _, result = big_vocab_bundle
    v = json.loads((result.path / "manifest.json").read_text())["verification"]
    assert v["mode"] == "smoke"
    assert 0 < len(v["generated_ids"]) <= 4 and all(0 <= i < REAL_VOCAB for i in v["generated_ids"])
    with pytest.raises(ValueError):
        ExportConfig("gguf", "q8_0", verify="quick")


def test_bench_splits_each_phase_into_engine_and_outside(big_vocab_bundle):
    _, result = big_vocab_bundle
    report = bench([result.path], BenchConfig(new_tokens=4, runs=1, threads=1), progress=False)
    r = report["results"][0]
    assert r["image_tokens"] == 144 and r["projector"] == "ldpv2"
    s = r["split"]
    for phase in ("image", "prefill", "decode"):
        total = r[f"{phase}_ms"]["median"]
        assert 0 < s[f"{phase}_engine_ms"] <= total
        assert s[f"{phase}_outside_ms"] == pytest.approx(total - s[f"{phase}_engine_ms"], abs=1e-6)
    assert s["token_engine_ms"] * r["decode_tokens"] == pytest.approx(s["decode_engine_ms"])
