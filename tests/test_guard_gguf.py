"""The accuracy guard's GGUF mechanism (edgevlm/export/gguf.py, `GGUFKeeper`) on a scheme that really loses
accuracy: GGUF q4_0 (llama.cpp's own Q4_0 mix) on the tiny trained model, verified in llama.cpp against PyTorch
on the parity slice (103 questions).

Measured (2-core x86, 2026-12-02): q4_0 answers 0.204 vs PyTorch 0.223 (drop 0.019, 2 questions; 95 % of answers
identical); the guard, at D = 0, measured each part kept alone (vision tower F16: 0.019, token embedding Q8_0:
0.010, first layer: 0.019, middle layers: 0.010, last layer: 0.019; the LM head is Q8_0 already), then kept the
token embedding and the middle layers: 0.223, drop 0. The kept parts are Q8_0 (text, llama.cpp's tensor-type
overrides) or F16 (mmproj) in the files read back, and the bundle passes its hash checks and runs in llama.cpp
(the guard's own verification). The before / after lines print with `pytest -s` or `-rP`.

Cost: ~16 s (1 + 5 + 1 exports and verifications and the keeper's unverified probe for the guard, one for
--strict), besides the shared `trained_model_dir` fixture.
"""

from __future__ import annotations

import re

import gguf
import pytest

from edgevlm.bundle.manifest import open_bundle
from edgevlm.errors import EdgeVLMError
from edgevlm.export import ExportConfig, export
from edgevlm.export import gguf as gguf_export
from edgevlm.export.guard import PARTS
from edgevlm.models.vlm import EdgeVLM


@pytest.fixture(scope="module")
def trained(trained_model_dir):
    return EdgeVLM.from_pretrained(trained_model_dir)


def q4_0(parity_eval, **guard) -> ExportConfig:
    return ExportConfig("gguf", "q4_0", verify_data=parity_eval, verify_limit=200, threads=1, **guard)


def types(path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


def test_guard_keeps_parts_at_q8_0_until_within_drop(trained, parity_eval, tmp_path):
    r = export(trained, q4_0(parity_eval, max_drop=0.0), tmp_path / "b", progress=False)
    v, rt = r.manifest["verification"], r.manifest["runtime"]
    g = v["guard"]
    print(f"\ngguf q4_0, before: accuracy {g['before']['accuracy']} (PyTorch {g['before']['reference_accuracy']}, "
          f"drop {g['before']['drop']}); sensitivity (drop with the part alone kept): "
          f"{ {p: s['drop'] for p, s in g['sensitivity'].items()} }; kept {g['kept']}; "
          f"after: accuracy {g['after']['accuracy']} (drop {g['after']['drop']})")
    assert g["before"]["drop"] > 0, "q4_0 no longer loses accuracy on the test model: pick a lossier scheme"
    assert g["after"]["drop"] <= 0 and g["after"]["accuracy"] == v["accuracy"]  # the record of the bundle on disk
    # llama.cpp already gives the 128-wide LM head Q8_0 (no k-quant fits its rows): not offered
    assert list(g["sensitivity"]) == ["vision_encoder", "token_embedding", "first_layer", "middle_layers",
                                      "last_layer"]
    assert g["kept"] and set(g["kept"]) <= set(g["sensitivity"]) and g["tries"] <= 2 * len(g["sensitivity"]) - 1
    open_bundle(r.path)  # schema, file hashes after the re-writes
    # the kept parts really have the higher type in the files, the others still the scheme's
    text, mmproj = types(r.path / rt["text_model"]), types(r.path / rt["mmproj"])
    assert rt["tensor_types"] == {rt["text_model"]: text, rt["mmproj"]: mmproj}
    patterns = gguf_export.part_patterns(trained.cfg.llm.num_layers)
    for part, pattern in patterns.items():
        matrices = {t for name, t in text.items() if re.search(pattern, name) and not name.endswith("norm.weight")}
        want = {"Q8_0"} if part in g["kept"] or part == "lm_head" else {"Q4_0"}
        assert matrices == want, (part, matrices)
    matrices = {t for name, t in mmproj.items() if t not in ("F32", "F16")}  # convolutions are F16 in any case
    assert (matrices == set()) == ("vision_encoder" in g["kept"]) and matrices <= {"Q8_0"}


def test_strict_fails_over_drop(trained, parity_eval, tmp_path):
    with pytest.raises(EdgeVLMError, match=r"accuracy drop 0\.\d+ against PyTorch exceeds --max-drop 0\.0"):
        export(trained, q4_0(parity_eval, max_drop=0.0, strict=True), tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()


def test_part_patterns_and_keepable_parts(tiny_model):
    assert set(gguf_export.EXPORTER.guard_parts) == set(PARTS)
    assert gguf_export.part_patterns(1) == {"token_embedding": r"^token_embd\.weight$",
                                           "lm_head": r"^output\.weight$", "first_layer": r"^blk\.0\."}
    four = gguf_export.part_patterns(4)
    assert [n for n in ("blk.0.ffn_up.weight", "blk.1.attn_q.weight", "blk.2.ffn_down.weight", "blk.3.attn_k.weight",
                        "blk.10.ffn_up.weight") if re.search(four["middle_layers"], n)] == \
        ["blk.1.attn_q.weight", "blk.2.ffn_down.weight"]
    # what the unguarded file holds decides: Q6_K / Q4_0 matrices are raised, Q8_0 ones and F32 norms are not
    from edgevlm.quant.schemes import scheme

    held = {"token_embd.weight": "Q4_0", "output.weight": "Q6_K", "blk.0.attn_norm.weight": "F32",
            "blk.0.attn_q.weight": "Q8_0", "blk.3.ffn_up.weight": "Q4_0"}
    assert gguf_export.keepable_parts(tiny_model, scheme("gguf", "q4_0"), held) == {
        "vision_encoder": "F16 (mmproj weight matrices)", "token_embedding": "Q8_0", "lm_head": "Q8_0",
        "last_layer": "Q8_0"}
    assert gguf_export.keepable_parts(tiny_model, scheme("gguf", "f16"), {"blk.0.attn_q.weight": "F16"}) == {}
