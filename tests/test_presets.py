"""Presets: real-size architectures have the published parameter counts; tiny twins keep the real image geometry,
run, generate and round-trip through a model dir."""

from __future__ import annotations

import inspect

import pytest
import torch

from edgevlm.data.llava import read_llava
from edgevlm.data.shapes import write_shapes
from edgevlm.evaluation import first_images
from edgevlm.export import ExportConfig
from edgevlm.export import verify as export_verify
from edgevlm.models.factory import create, create_from_config
from edgevlm.models.presets import PRESETS, get_preset
from edgevlm.models.vlm import EdgeVLM

# Published sizes of each preset's LM (the cited checkpoints' parameter counts) and image tokens.
REAL = {
    # MobileLLaMA-2.7B: 32 x (4*2560^2 + 3*2560*6912 + 2*2560) + 2*32000*2560 + 2560
    "mobilevlm-v2-3b": (2_701_560_320, 144),
    "tinyllava-phi2-siglip-3.1b": (2_779_683_840, 728),  # phi-2
    "tinyllava-tinyllama-siglip-1.5b": (1_100_048_384, 729),  # TinyLlama-1.1B
    "bunny-v1.0-3b": (2_779_683_840, 729),  # phi-2
    "bunny-v1.0-4b": (3_821_079_552, 729),  # Phi-3-mini-4k
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_size_presets_have_the_published_lm(name):
    with torch.device("meta"):  # the real architecture, without allocating its weights
        model = create_from_config(get_preset(name))
    lm_params, tokens = REAL[name]
    assert sum(p.numel() for p in model.llm.parameters()) == lm_params
    assert model.num_image_tokens == tokens
    assert model.cfg.llm.vocab_size == get_preset(name).llm.vocab_size  # the real vocabulary is kept


@pytest.mark.parametrize("name,dense_lm", [("moe-llava-stablelm-1.6bx4", 1_644_515_328),
                                           ("moe-llava-phi2-2.7bx4", 2_779_683_840)])
def test_moe_llava_presets_upcycle_every_second_ffn(name, dense_lm):
    with torch.device("meta"):
        model = create_from_config(get_preset(name))
    layers, ffn = model.cfg.llm.num_layers, _dense_ffn_params(model.cfg.llm)
    router = model.cfg.llm.hidden_size * 4
    assert sum(p.numel() for p in model.llm.parameters()) == dense_lm + layers // 2 * (3 * ffn + router)


def _dense_ffn_params(llm) -> int:
    if llm.arch == "phi":  # fc1, fc2 with biases
        return 2 * llm.hidden_size * llm.intermediate_size + llm.intermediate_size + llm.hidden_size
    return 3 * llm.hidden_size * llm.intermediate_size  # gate, up, down


@pytest.mark.parametrize("name,kind,tokens,arch", [
    ("tinyllava-tiny", "siglip", 728, "phi"),
    ("bunny-tiny", "siglip", 729, "phi"),
    ("moe-llava-tiny", "clip", 576, "stablelm"),
])
def test_tiny_twins_run_generate_and_round_trip(name, kind, tokens, arch, tmp_path):
    model = create(name, seed=0)
    v = model.cfg.vision
    assert (v.kind.value, v.image_size, v.patch_size, model.num_image_tokens, model.cfg.llm.arch) == \
        (kind, 336 if kind == "clip" else 384, 14, tokens, arch)
    pixels = torch.randn(1, 3, v.image_size, v.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb = model.encode_image(pixels)
    assert emb.shape == (1, tokens, model.cfg.llm.hidden_size)
    prompt = model.prompt_ids("What is in the top left?")
    out = model.generate(emb, prompt, max_new_tokens=6)
    assert out == model.generate(emb, prompt, max_new_tokens=6, use_cache=False)
    model.save_pretrained(tmp_path / "m")
    loaded = EdgeVLM.from_pretrained(tmp_path / "m")
    assert loaded.cfg == model.cfg
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.generate(loaded.encode_image(pixels), prompt, max_new_tokens=6) == out


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n.endswith("-tiny")))
def test_tiny_context_holds_the_default_verification(name, tmp_path):
    """`edgevlm export`'s default verification asks the default `shapes` slice's questions and generates up to
    `max_new_tokens` each: every prompt, image tokens included, and its answer must fit the preset's context
    (512 positions could not hold SigLIP-384's 729 tokens: every export of bunny-tiny failed).
    tests/test_cli_matrix.py runs the exports themselves."""
    with torch.device("meta"):
        model = create_from_config(get_preset(name))
    data = write_shapes(tmp_path / "eval", export_verify.DEFAULT_IMAGES, export_verify.DEFAULT_SEED, "eval",
                        progress=False)
    questions = {r.question for r in first_images(read_llava(data), ExportConfig("onnx", "fp32").verify_limit)}
    longest = max(len(model.prompt_ids(q)) - 1 + model.num_image_tokens for q in questions)  # <image> → N tokens
    new_tokens = inspect.signature(export_verify.verify).parameters["max_new_tokens"].default
    assert longest + new_tokens <= model.cfg.llm.max_position_embeddings, (longest, new_tokens)
