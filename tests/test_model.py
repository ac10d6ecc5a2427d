"""EdgeVLM: KV-cache generation, save/load, strict weight loading, packing, LoRA."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from edgevlm.errors import EdgeVLMError
from edgevlm.load import load_model
from edgevlm.models.checkpoint import released_every
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


def test_loading_converts_stored_dtypes_and_refuses_damaged_files(tiny_model, tmp_path):
    d = tiny_model.save_pretrained(tmp_path / "m")
    tensors = load_file(d / "model.safetensors")
    save_file({k: v.bfloat16() if v.is_floating_point() else v for k, v in tensors.items()}, d / "model.safetensors")
    loaded = EdgeVLM.from_pretrained(d)  # a bf16 checkpoint into the float32 model: rounded once, as torch's copy_
    got = loaded.state_dict()
    assert all(torch.equal(got[k], v.bfloat16().to(v.dtype)) for k, v in tensors.items())
    data = (d / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")  # the header's length
    for damaged, problem in ((data[:-5], "do not hold"), (b"\xff" * 8 + data[8:], "header length"),
                             (data[:8] + b"x" + data[9:], "Expecting value"),
                             (data[:8] + b"[]".ljust(n) + data[8 + n:], "not a JSON object")):
        (d / "model.safetensors").write_bytes(damaged)
        with pytest.raises(EdgeVLMError, match=f"model.safetensors: not a valid safetensors file.*{problem}"):
            EdgeVLM.from_pretrained(d)


_SAVE = """
import sys, torch
from edgevlm.models.checkpoint import save_weights, unique_state
torch.manual_seed(0)
m = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(16)])  # 64M float32 parameters: 256 MiB
save_weights(unique_state(m), sys.argv[1])
print(sum(float(p.double().sum()) for p in m.parameters()))
"""
_LOAD = """
import resource, sys, torch
from edgevlm.models.checkpoint import map_weights_into, uninitialised
def mib(): return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
before = peak()
with uninitialised():
    m = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(16)])
weights = map_weights_into(m, sys.argv[1])
total = sum(float(p.double().sum()) for p in m.parameters())  # every weight read
grown, resident = peak() - before, mib()
weights.page_out()
print(total, grown, resident - mib())
"""


def test_loading_maps_the_weights_once_and_pages_them_out(tmp_path):
    """A load costs the weights' memory once (256 MiB here): before, a model built with random weights plus the
    file's tensors copied in cost it twice, which made a 1.7B model's export peak at twice its weights. After
    `page_out` the mapped weights are no longer resident; the values read are the values saved."""
    path = str(tmp_path / "w.safetensors")
    saved = float(subprocess.run([sys.executable, "-c", _SAVE, path], capture_output=True, text=True,
                                 check=True).stdout)
    total, grown, freed = map(float, subprocess.run([sys.executable, "-c", _LOAD, path], capture_output=True,
                                                    text=True, check=True).stdout.split())
    assert total == saved
    assert grown < 256 + 64, f"loading and reading 256 MiB of weights raised the peak RSS by {grown:.0f} MiB"
    assert freed > 200, f"page_out freed {freed:.0f} MiB of the 256 MiB mapped"


_FRAGMENT = """
import ctypes, torch
from edgevlm.models.checkpoint import trim_heap
def anon(): return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) / 2**10
ctypes.CDLL("libc.so.6").mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD where a long export's freed tensors take it
held = anon()
made = [torch.ones(2 << 20) for _ in range(128)]  # 8 MB tensors
del made[::2]  # every other one freed: the holes that quantizing weight by weight leaves behind
before = anon()
trim_heap()
print(before - held, anon() - held)
"""


def test_trim_heap_gives_back_the_holes_freed_tensors_leave():
    """Exporters call `trim_heap` between steps: freed tensors between live ones stay resident otherwise."""
    before, after = map(float, subprocess.run([sys.executable, "-c", _FRAGMENT], capture_output=True, text=True,
                                              check=True).stdout.split())
    assert before > 900, f"the pattern left only {before:.0f} MiB resident: it no longer fragments the heap"
    assert after < 600, f"{after:.0f} MiB resident after trim_heap, 512 MiB live"


def test_released_every_releases_while_inside_only():
    """`released_every` hands the weights back from a thread while a library step runs, and stops with it."""
    calls = []
    with released_every(0.02, lambda: calls.append(1)):
        time.sleep(0.5)
    inside = len(calls)
    time.sleep(0.1)
    assert inside >= 5 and len(calls) == inside


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
