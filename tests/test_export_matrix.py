"""Every family through every exporter: the tiny presets x {gguf, executorch, onnx, coreml}, each bundle run in
its own runtime (CoreML off macOS: the converted torch program holding the package's weights) against PyTorch.

How a cell is checked. The models have random weights, so their next-token distributions are flat and greedy
answers are near-ties everywhere: a 4-bit scheme flips many of them without anything being wrong, and greedy
agreement alone would need a tolerance so loose that it could not tell a broken export from a quantized one.
So each cell compares **logits**: for three questions about one image, the runtime's logits of the first answer
token against PyTorch's, by relative L2 error (`|ours - ref| / |ref|`): a wrong architecture detail (rotary
layout, norm, residual wiring, routing) gives an error near 1, a 4-bit scheme about 0.1-0.15. The
full-precision GGUF f16 path is also run and held tight (top-1 equal on every question); the lowest-precision
scheme of every format is held to `MAX_ERROR` (about 2x the measured error) and its verification record must
exist. Where llama.cpp cannot express a family, the cell asserts the one-line refusal instead (and that nothing
was written).

Cost: each model is a two-block cut of its preset (same architecture, projector, image geometry, MoE on the
first of its two layers, dense second); one export per cell. The MobileVLM row repeats what
tests/test_{gguf,onnx,executorch,coreml}.py check in depth on a trained twin, so only its cheap cells run here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevlm.bundle.image import load_image
from edgevlm.data.llava import read_llava
from edgevlm.errors import EdgeVLMError
from edgevlm.export import ExportConfig, export
from edgevlm.models.factory import create_from_config
from edgevlm.models.presets import get_preset
from edgevlm.quant.schemes import scheme
from edgevlm.runtimes import load_runtime

FAMILIES = ("mobilevlm-v2-tiny", "tinyllava-tiny", "bunny-tiny", "moe-llava-tiny")
QUESTIONS = ("What is in the top left?", "How many circles are there?", "Is there a red square?")
VERIFY_LIMIT = 4  # questions of the eval slice in the exporter's verification record (whole first image)

# (format, scheme) → most relative L2 logit error allowed; measured maxima over the families (2-core x86, 2026-11-23)
MAX_ERROR = {
    ("gguf", "f16"): 5e-3,  # 7.1e-4 (bunny), 5.5e-4 (mobilevlm)
    ("gguf", "q4_0"): 0.3,  # 0.149 (bunny), 0.121 (mobilevlm)
    ("onnx", "int4"): 0.3,  # 0.154 (tinyllava, bunny), 0.115 (moe-llava; 0.127 on an AVX2-only EPYC, 0.361 there
    # before dynamic int8 weights became uint8: edgevlm/export/onnx.py, dynamic_int8)
    ("executorch", "int4"): 0.3,
    ("coreml", "int4"): 0.3,  # 0.169 (tinyllava, bunny), 0.149 (moe-llava)
}
# the full-precision path: top-1 equal on every question, and the record's whole greedy answers identical on at
# least 70 % of its questions (measured 4/4 for mobilevlm and bunny, 2026-12-02; moe-llava 5/7, its two others
# parting after 15 identical tokens where PyTorch's own top-2 logits are 1.7e-4-4.4e-4 apart, under f16's
# rounding: f16 weights move a random model's near-tied continuation). Quantized cells of these random-weight
# models are near-ties throughout (bunny q4_0: 0/4 identical, top-1 0/3), so their answers are reported, not held.
FULL_PRECISION = {("gguf", "f16")}
MIN_IDENTICAL_FULL = 0.7
# cells llama.cpp cannot express: (family, format) → the refusal's words
REFUSED = {
    ("tinyllava-tiny", "gguf"): "drops the first token",
}
# MobileVLM's ExecuTorch / CoreML int4 cells: tests/test_executorch.py and tests/test_coreml.py (trained twin)
COVERED_ELSEWHERE = {("mobilevlm-v2-tiny", "executorch"), ("mobilevlm-v2-tiny", "coreml")}
# cells that fail today, each for a reason found and not yet fixed (strict: a fix turns them into failures to remove)
KNOWN_GAPS: dict[tuple[str, str], str] = {}
CELLS = [pytest.param(family, fmt, quant, marks=[pytest.mark.xfail(reason=KNOWN_GAPS[family, fmt], strict=True)]
                      if (family, fmt) in KNOWN_GAPS else [])
         for family in FAMILIES for fmt, quant in MAX_ERROR if (family, fmt) not in COVERED_ELSEWHERE]


def matrix_config(family: str):
    """The preset cut to two LLM layers (MoE-LLaVA: one MoE, one dense) and two vision blocks."""
    cfg = get_preset(family)
    cfg.llm.num_layers, cfg.vision.num_layers = 2, 2
    # presets.tiny_llm's 512 positions cannot hold SigLIP-384's 729 image tokens plus a prompt (see the report)
    cfg.llm.max_position_embeddings = max(cfg.llm.max_position_embeddings, 1024)
    return cfg


@pytest.fixture(scope="module")
def models():
    done = {}

    def get(family: str):
        if family not in done:
            done[family] = create_from_config(matrix_config(family), seed=0)
        return done[family]

    return get


# ---- the runtimes' first-answer-token logits ----------------------------------------------------------------
def contract_logits(runtime, image, question: str) -> np.ndarray:
    runtime.reset()
    embeds = runtime.prefill_embeds(runtime.encode_image(image), question)  # (T, D)
    return np.asarray(runtime.text_decoder(embeds, 0), dtype=np.float32)  # (V,)


def llamacpp_logits(runtime, image, question: str) -> np.ndarray:
    with runtime._image_chunk(image) as (chunk, embd):
        runtime._prefill(chunk, embd, runtime.bundle.prompt_ids(question))
        return np.ctypeslib.as_array(runtime.ll.llama_get_logits_ith(runtime.ctx, -1), shape=(runtime.n_vocab,)).copy()


def coreml_runtime(model, result):
    """Core ML where it predicts (macOS); elsewhere the converted torch program with the package's weights."""
    from edgevlm.export import coreml, coreml_verify
    from edgevlm.bundle.manifest import open_bundle

    if coreml.EXPORTER.runs_here():
        return load_runtime(result.path, threads=1)
    bundle = open_bundle(result.path)
    s = scheme("coreml", result.manifest["quantization"]["name"])
    weights = coreml_verify.compare_weights(model, s, bundle)["dequantized"]
    return coreml_verify.torch_program_runtime(model, bundle, weights)


@torch.no_grad()
def reference_logits(model, image, question: str) -> np.ndarray:
    embeds = model.splice(model.prompt_ids(question), model.encode_image(model.pixel_values(image))[0])
    return model.llm(inputs_embeds=embeds[None], use_cache=False).logits[0, -1].numpy()  # (V,)


def _export(family, fmt, quant, models, shapes_eval, out):
    cfg = ExportConfig(fmt, quant, verify_data=shapes_eval, verify_limit=VERIFY_LIMIT, threads=1)
    return export(models(family), cfg, out, progress=False)


@pytest.mark.parametrize("family,fmt,quant", CELLS)
def test_family_through_exporter(family, fmt, quant, models, shapes_eval, tmp_path):
    model = models(family)
    out = tmp_path / f"{fmt}-{quant}"
    if (family, fmt) in REFUSED:
        with pytest.raises(EdgeVLMError, match=REFUSED[family, fmt]) as refusal:
            _export(family, fmt, quant, models, shapes_eval, out)
        assert "\n" not in str(refusal.value) and not out.exists()
        return
    result = _export(family, fmt, quant, models, shapes_eval, out)
    record = result.manifest["verification"]
    if fmt == "coreml" and "torch_program" in record:  # off macOS: the converted program's record
        record = record["torch_program"]
    assert record["n"] >= 1, record

    if fmt == "gguf":
        runtime, logits = load_runtime(result.path, threads=1), llamacpp_logits
    elif fmt == "coreml":
        runtime, logits = coreml_runtime(model, result), contract_logits
    else:
        runtime, logits = load_runtime(result.path, threads=1), contract_logits
    image = load_image(read_llava(shapes_eval)[0].image)
    errors, top1 = [], []
    with torch.no_grad():
        for q in QUESTIONS:
            ours, ref = logits(runtime, image, q), reference_logits(model, image, q)
            errors.append(float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)))
            top1.append(int(np.argmax(ours) == np.argmax(ref)))
    print(f"\n{family} {fmt} {quant}: {result.bytes / 1e6:.2f} MB, logit error {max(errors):.2e}, top-1 "
          f"{sum(top1)}/{len(top1)}, record identical {record['answers_identical']} tokens "
          f"{record['token_agreement']}")
    assert max(errors) <= MAX_ERROR[fmt, quant], errors
    if (fmt, quant) in FULL_PRECISION:
        assert sum(top1) == len(top1), (top1, record)
        assert record["answers_identical"] >= MIN_IDENTICAL_FULL, record


@pytest.mark.parametrize("family,arch", [("mobilevlm-v2-tiny", "llama"), ("moe-llava-tiny", "phimoe")])
def test_moe_through_gguf(family, arch, shapes_eval, tmp_path):
    """The MoE paths llama.cpp can express: a Llama body with MoE-LLaVA layers written as Mixtral is, a StableLM
    body as Phi-3.5-MoE is (RMSNorm over a zero-mean residual stream), each dense layer as identical experts
    behind a zero router, equal PyTorch at f16; experts perturbed apart so that routing decides the output."""
    import gguf

    from edgevlm.config import MoEConfig

    cfg = matrix_config(family)
    cfg.moe = MoEConfig(num_experts=4, top_k=2)
    model = create_from_config(cfg, seed=0)
    with torch.no_grad():
        for expert in model.llm.model.layers[0].mlp.experts:
            for p in expert.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    result = export(model, ExportConfig("gguf", "f16", verify_limit=0), tmp_path / "b", progress=False)
    reader = gguf.GGUFReader(str(result.path / result.manifest["runtime"]["text_model"]))
    assert reader.fields[f"{arch}.expert_count"].contents() == 4
    assert {f"blk.{i}.ffn_{t}_exps.weight" for i in (0, 1) for t in ("gate", "up", "down")} <= {
        t.name for t in reader.tensors}
    runtime, image = load_runtime(result.path, threads=1), load_image(read_llava(shapes_eval)[0].image)
    for q in QUESTIONS:
        ours, ref = llamacpp_logits(runtime, image, q), reference_logits(model, image, q)
        assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) <= MAX_ERROR["gguf", "f16"]
        assert np.argmax(ours) == np.argmax(ref)
