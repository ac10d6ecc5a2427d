"""EdgeVLM: KV-cache generation, save/load, strict weight loading, packing, LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from edgevlm.errors import EdgeVLMError
from edgevlm.load import load_model
from edgevlm.models.vlm import EdgeVLM
from edgevlm.train import lora
from edgevlm.train.packing import build_batch, pack

QUESTIONS = [("What is in the top left?", "red circle"), ("Describe the image.", "top left: digit 2; top right: nothing"),
             ("How many circles are there?", "2")]


def _image(seed=0):
    return torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


def test_tiny_preset_geometry(tiny_model):
    assert tiny_model.num_image_tokens == 144
    assert tiny_model.encode_image(_image()).shape == (1, 144, tiny_model.cfg.llm.hidden_size)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_kv_cache_generation_equals_recomputation(tiny_model, temperature):
    emb = tiny_model.encode_image(_image())
    prompt = tiny_model.prompt_ids("What is in the top left?")
    runs = [tiny_model.generate(emb, prompt, max_new_tokens=12, temperature=temperature, use_cache=cache,
                                generator=torch.Generator().manual_seed(1)) for cache in (True, False)]
    assert len(runs[0]) == 12 and runs[0] == runs[1]


def test_save_load_round_trip_is_bit_exact(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    loaded = EdgeVLM.from_pretrained(tmp_path / "m")
    a, b = tiny_model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.cfg == tiny_model.cfg
    assert loaded.tokenizer.tok.to_str() == tiny_model.tokenizer.tok.to_str()


def test_strict_loading_lists_bad_tensors(tiny_model, tmp_path):
    d = tiny_model.save_pretrained(tmp_path / "m")
    tensors = load_file(d / "model.safetensors")
    tensors.pop("projector.peg.peg.0.bias")
    tensors["projector.extra"] = torch.zeros(1)
    tensors["projector.mlp.mlp.0.weight"] = torch.zeros(3, 3)
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(EdgeVLMError) as e:
        EdgeVLM.from_pretrained(d)
    msg = str(e.value)
    assert "missing tensors: projector.peg.peg.0.bias" in msg
    assert "unexpected tensors: projector.extra" in msg
    assert "mis-shaped tensors: projector.mlp.mlp.0.weight (expected (128, 96), got (3, 3))" in msg


@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # eager: the trainer's choice on CPU
def test_packed_loss_equals_single_turn_loss(tiny_model, attention):
    emb = tiny_model.encode_image(torch.cat([_image(0), _image(1)]))
    tiny_model.llm.set_attn_implementation(attention)
    prompts = [tiny_model.prompt_ids(q) for q, _ in QUESTIONS]
    answers = [tiny_model.answer_ids(a) for _, a in QUESTIONS]
    items = pack(0, prompts, answers) + pack(1, prompts[:1], answers[:1])
    batch = build_batch(items, emb[[0, 1]], tiny_model.embed)
    targets = batch.pop("targets")
    logits = tiny_model.llm(**batch).logits
    packed = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    single = 0.0
    for i, (p, a) in enumerate(zip(prompts + prompts[:1], answers + answers[:1])):
        x = tiny_model.splice(p + a, emb[0 if i < 3 else 1])[None]
        lg = tiny_model.llm(inputs_embeds=x).logits[0]
        single += F.cross_entropy(lg[-len(a) - 1 : -1], torch.tensor(a), reduction="sum")
    torch.testing.assert_close(packed, single, rtol=1e-5, atol=1e-4)


def _randomize_lora(llm):
    with torch.no_grad():
        for n, p in llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)


def test_lora_merged_equals_unmerged(tiny_model):
    emb = tiny_model.encode_image(_image())
    x = tiny_model.splice(tiny_model.prompt_ids("Describe the image."), emb[0])[None]
    tiny_model.llm = lora.add_lora(tiny_model.llm, r=4, alpha=8)
    _randomize_lora(tiny_model.llm)
    unmerged = tiny_model.llm(inputs_embeds=x).logits
    tiny_model.llm = lora.merge(tiny_model.llm)
    merged = tiny_model.llm(inputs_embeds=x).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
    assert not any("lora_" in n for n, _ in tiny_model.llm.named_parameters())


def test_lora_adapter_round_trip(tiny_model, tmp_path):
    emb = tiny_model.encode_image(_image())
    x = tiny_model.splice(tiny_model.prompt_ids("Describe the image."), emb[0])[None]
    tiny_model.llm = lora.add_lora(tiny_model.llm, r=4, alpha=8)
    _randomize_lora(tiny_model.llm)
    expected = tiny_model.llm(inputs_embeds=x).logits
    d = lora.save_pretrained(tiny_model, tmp_path / "m")
    assert (d / "adapter" / "adapter_model.safetensors").is_file()
    loaded = load_model(d)
    torch.testing.assert_close(loaded.llm(inputs_embeds=x).logits, expected, rtol=1e-5, atol=1e-5)


def test_answer_accepts_arrays(tiny_model):
    out = tiny_model.answer(np.full((336, 336, 3), 210, np.uint8), "What is in the top left?", max_new_tokens=3)
    assert isinstance(out, str)
