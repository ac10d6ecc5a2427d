"""GGUF export and the llama.cpp runtime: round trips per projector, parity with PyTorch per quantization, the
text GGUF against llama.cpp's own converter, and bad bundles as one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

import gguf  # noqa: E402

from cli_errors import fails as _fails  # noqa: E402
from edgevlm.config import VisionKind  # noqa: E402
from edgevlm.bundle.image import load_image  # noqa: E402
from edgevlm.data.llava import read_llava  # noqa: E402
from edgevlm.errors import EdgeVLMError  # noqa: E402
from edgevlm.export import ExportConfig, export  # noqa: E402
from edgevlm.bundle.manifest import MANIFEST, file_entries, sha256_file  # noqa: E402
from edgevlm.export.gguf import check_exportable, write_text_model  # noqa: E402
from edgevlm.models.factory import create, create_from_config  # noqa: E402
from edgevlm.models.presets import tiny_vlm  # noqa: E402
from edgevlm.models.vlm import EdgeVLM  # noqa: E402
from edgevlm.runtimes import load_runtime  # noqa: E402


def _tiny(projector: str, tower: VisionKind = VisionKind.CLIP) -> EdgeVLM:
    cfg = tiny_vlm("mobilevlm", projector)
    cfg.vision.kind, cfg.vision.drop_first_token = tower, tower is VisionKind.CLIP  # each tower's own rule
    model = create("mobilevlm-v2-tiny", seed=0)
    torch.manual_seed(0)
    return EdgeVLM(cfg, model.tokenizer).eval()


# ---- round trips: every projector type llama.cpp runs ----------------------------------------------------------
@pytest.mark.parametrize("projector,tower", [("ldpv2", VisionKind.CLIP), ("ldp", VisionKind.CLIP),
                                             ("mlp2x_gelu", VisionKind.CLIP), ("pixel_shuffle", VisionKind.SIGLIP)])
def test_image_embeddings_match_pytorch(projector, tower, tmp_path, shapes_eval):
    model = _tiny(projector, tower)
    export(model, ExportConfig("gguf", "f16", verify_limit=0), tmp_path / "b", progress=False)
    runtime = load_runtime(tmp_path / "b", threads=2)
    image = load_image(read_llava(shapes_eval)[0].image)
    with runtime._image_chunk(image) as (_, embd):
        ours = embd.reshape(model.num_image_tokens, -1)  # (N_img, D_llm)
    with torch.no_grad():
        ref = model.encode_image(model.pixel_values(image))[0].numpy()
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err < 2e-2, f"{projector}: llama.cpp image embeddings differ from PyTorch by {err:.3g} (relative)"


def test_unsupported_projector_is_refused():
    model = _tiny("pixel_shuffle", VisionKind.CLIP)
    with pytest.raises(EdgeVLMError, match="after a siglip tower"):
        check_exportable(model)
    model.cfg.projector.kind = "resampler"
    with pytest.raises(EdgeVLMError, match="supports projectors ldp, ldpv2, mlp2x_gelu, pixel_shuffle"):
        check_exportable(model)


@pytest.mark.parametrize("arch,extra,reason", [
    ("phi", {}, "no MoE graph with a phi layer"),  # README: "GGUF: what llama.cpp cannot run"
    ("stablelm", {"use_parallel_residual": True}, "phimoe graph runs attention and FFN one after the other"),
    ("llama", {"mlp_bias": True}, "llama graph has bias-free experts")],
    ids=["phi", "stablelm-parallel", "llama-mlp-bias"])
def test_moe_body_without_a_llama_cpp_graph_is_refused(arch, extra, reason):
    from edgevlm.models.factory import create_from_config
    from edgevlm.models.presets import PHI2_EXTRA, STABLELM2_EXTRA, get_preset, tiny_llm

    cfg = get_preset("moe-llava-tiny")
    base = {"phi": PHI2_EXTRA, "stablelm": STABLELM2_EXTRA, "llama": {}}[arch]
    cfg.llm = tiny_llm(arch, 1e-5, **{**base, **extra})
    cfg.llm.num_layers, cfg.vision.num_layers = 2, 1
    with pytest.raises(EdgeVLMError, match=reason) as refusal:
        check_exportable(create_from_config(cfg, seed=0))
    assert "\n" not in str(refusal.value)


# ---- parity with PyTorch on the trained tiny MobileVLM V2 -------------------------------------------------------
@pytest.fixture(scope="module")
def trained(trained_model_dir):
    return EdgeVLM.from_pretrained(trained_model_dir)


@pytest.fixture(scope="module")
def f16_bundle(trained, parity_eval, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "f16"
    return export(trained, ExportConfig("gguf", "f16", verify_data=parity_eval, verify_limit=200, threads=2), out,
                  progress=False)


def test_f16_answers_identical_to_pytorch(f16_bundle):
    v = f16_bundle.manifest["verification"]
    assert v["n"] >= 100 and v["answers_identical"] == 1.0, v
    rt = f16_bundle.manifest["runtime"]
    assert rt["projector_type"] == "ldpv2" and rt["architecture"] == "llama" and rt["fallbacks"] == []
    assert set(rt["tensor_types"]["model-f16.gguf"].values()) == {"F16", "F32"}


# 4-bit scheme → (accuracy it may lose against PyTorch, least share of answers identical to PyTorch's) on 25
# questions. Measured 2026-12-02: q4_0 lost 0.0 with 1.0 identical, q4_k lost 0.0 with 0.92 identical; the bound
# allows two questions of 25 (0.08) to flip where the fixture model's answers are near-ties under 4-bit rounding.
QUANT_BOUND = {"q4_0": (0.08, 0.85), "q4_k": (0.08, 0.85)}


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "q4_k"])
def test_quantized_accuracy_recorded(quant, trained, parity_eval, tmp_path):
    limit = 200 if quant == "q8_0" else 24  # q8_0 is held to PyTorch's accuracy; 4-bit ones to QUANT_BOUND
    r = export(trained, ExportConfig("gguf", quant, verify_data=parity_eval, verify_limit=limit, threads=2),
               tmp_path / quant, progress=False)
    v, rt = r.manifest["verification"], r.manifest["runtime"]
    if quant == "q8_0":
        assert v["n"] >= 100 and abs(v["accuracy"] - v["reference_accuracy"]) <= 0.01, v
    assert v["n"] >= 24
    if quant in QUANT_BOUND:  # 4-bit: a real bound against PyTorch, not just a number in [0, 1]
        most_lost, least_identical = QUANT_BOUND[quant]
        assert v["reference_accuracy"] - v["accuracy"] <= most_lost and v["answers_identical"] >= least_identical, v
    written = {n: t.tensor_type.name for n, t in
               ((t.name, t) for t in gguf.GGUFReader(str(r.path / rt["text_model"])).tensors)}
    assert rt["tensor_types"][rt["text_model"]] == written
    for f in rt["fallbacks"]:  # each fallback is what the file holds, for a row width the wanted type cannot take
        assert rt["tensor_types"][f["file"]][f["tensor"]] == f["got"] != f["wanted"]
    if quant == "q4_k":  # 128-wide rows cannot take Q4_K's 256-blocks: llama.cpp falls back, and we say so
        assert any(f["wanted"] in ("Q4_K", "Q6_K") for f in rt["fallbacks"])


@pytest.fixture(scope="module")
def tiny_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    """An unverified f16 bundle of the untrained tiny model: cheap, for the tokenizer and bad-input tests."""
    out = tmp_path_factory.mktemp("gguf") / "tiny"
    return export(EdgeVLM.from_pretrained(tiny_model_dir), ExportConfig("gguf", "f16", verify_limit=0), out,
                  progress=False).path


def test_gguf_tokenizer_matches_tokenizer_json(tiny_bundle):
    import llama_cpp

    runtime = load_runtime(tiny_bundle)
    vocab = llama_cpp.llama_model_get_vocab(runtime.model)
    tok = runtime.bundle.tokenizer
    for text in ["USER: ", "\nWhat is in the top left? ASSISTANT:", " 3 red circles; top right: nothing"]:
        buf = (llama_cpp.llama_token * 256)()
        n = llama_cpp.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 256, False, False)
        assert list(buf[:n]) == tok.encode(text), text


# ---- the text GGUF against llama.cpp's own converter -----------------------------------------------------------
def _llama_cpp_source() -> Path:
    """llama.cpp's sources as vendored by llama-cpp-python (scripts/setup unpacks them; see `edgevlm info`).
    Missing sources are a setup failure, not a skip: the test fails and says so."""
    for root in (os.environ.get("EDGEVLM_LLAMA_CPP_SRC"), Path(sys.prefix) / "src" / "llama.cpp"):
        if root and (Path(root) / "convert_hf_to_gguf.py").is_file():
            return Path(root)
    pytest.fail("llama.cpp's convert_hf_to_gguf.py not found: run scripts/setup (or set EDGEVLM_LLAMA_CPP_SRC)")


# our tokenizer is not in the converter's table of known pre-tokenizer hashes; it is plain GPT-2 byte-level BPE
_CONVERT = """
import runpy, sys
src = sys.argv[1]
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv = [src + "/convert_hf_to_gguf.py", *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("attention_bias", [False, True])
def test_text_gguf_matches_convert_hf_to_gguf(attention_bias, tmp_path):
    src = _llama_cpp_source()
    from transformers import PreTrainedTokenizerFast

    if attention_bias:  # q/k biases take the weights' rotary permutation; random, so that a wrong one shows
        cfg = tiny_vlm("mobilevlm", "ldpv2")
        cfg.llm.extra["attention_bias"] = True
        model = create_from_config(cfg, seed=0)
        with torch.no_grad():
            for name, p in model.llm.named_parameters():
                if name.endswith("proj.bias"):
                    p.normal_()
    else:
        model = create("mobilevlm-v2-tiny", seed=0)
    model.llm.save_pretrained(tmp_path / "hf")
    PreTrainedTokenizerFast(tokenizer_object=model.tokenizer.tok, bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(tmp_path / "hf")
    subprocess.run([sys.executable, "-c", _CONVERT, str(src), str(tmp_path / "hf"), "--outtype", "f16",
                    "--outfile", str(tmp_path / "ref.gguf")], check=True, capture_output=True)
    write_text_model(model, tmp_path / "ours.gguf", f16=True)
    ref, ours = gguf.GGUFReader(str(tmp_path / "ref.gguf")), gguf.GGUFReader(str(tmp_path / "ours.gguf"))
    ref_t, our_t = {t.name: t for t in ref.tensors}, {t.name: t for t in ours.tensors}
    assert sorted(ref_t) == sorted(our_t)
    for name, t in ref_t.items():
        assert (our_t[name].tensor_type, list(our_t[name].shape)) == (t.tensor_type, list(t.shape)), name
        np.testing.assert_array_equal(our_t[name].data, t.data, err_msg=name)
    for key, field in ref.fields.items():
        if key.startswith("GGUF.") or key.startswith("general."):
            continue
        assert key in ours.fields and ours.fields[key].contents() == field.contents(), key


# ---- bad bundles: one line each --------------------------------------------------------------------------------
@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def _run(bundle: Path, image: Path) -> list[str]:
    return ["run", "--bundle", str(bundle), "--image", str(image), "--prompt", "What is in the top left?"]


def test_truncated_gguf_with_matching_manifest(bundle_copy, shapes_eval, capsys):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    for name in (manifest["runtime"]["text_model"], manifest["runtime"]["mmproj"]):
        f = bundle_copy / name
        good = f.read_bytes()
        f.write_bytes(good[: len(good) // 2])
        manifest["files"] = file_entries(bundle_copy)  # the manifest rewritten to match: only llama.cpp can tell
        (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
        _fails(_run(bundle_copy, shapes_eval / "images" / "000000.png"), capsys, f"{f}: llama.cpp cannot load")
        f.write_bytes(good)


def test_tampered_and_missing_files(bundle_copy, shapes_eval, capsys):
    image = shapes_eval / "images" / "000000.png"
    text = bundle_copy / "model-f16.gguf"
    data = bytearray(text.read_bytes())
    data[-1] ^= 0xFF
    text.write_bytes(bytes(data))
    assert sha256_file(text) != json.loads((bundle_copy / MANIFEST).read_text())["files"][text.name]["sha256"]
    _fails(_run(bundle_copy, image), capsys, f"{text}: sha256 differs from manifest.json")
    (bundle_copy / "mmproj-f16.gguf").unlink()
    mmproj = bundle_copy / "mmproj-f16.gguf"
    _fails(_run(bundle_copy, image), capsys, f"{mmproj}: file listed in manifest.json is missing")
