"""The export-friendly decoder equals the transformers LM it wraps, for every LLM architecture edgevlm builds
(and with MoE-LLaVA's routed layers): prefill, cached decode, torch.export(strict=True), and a batch axis."""

from __future__ import annotations

import pytest
import torch

from edgevlm.config import LLMConfig, MoEConfig
from edgevlm.errors import EdgeVLMError
from edgevlm.export.decoder import PlainDecoder, StaticCacheDecoder
from edgevlm.export.onnx import PastPresentDecoder, group_query_attention
from edgevlm.models.llm import build_llm
from edgevlm.models.moe import upcycle

# arch → the transformers config keys that make the tiny LM exercise what the arch does differently
ARCH_EXTRA = {
    "llama": {},
    "qwen2": {},  # q/k/v biases
    "phi3": {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},  # fused qkv_proj / gate_up_proj
    "phi": {"partial_rotary_factor": 0.4},  # Phi-2: parallel residual, LayerNorm, gelu_new, biases
    "stablelm": {"use_qkv_bias": True},  # StableLM-2: LayerNorm, partial rotary 0.25, SwiGLU
}
CASES = [*ARCH_EXTRA, "stablelm+moe", "phi+moe", "llama+moe"]
EXPORT_CASES = [*ARCH_EXTRA, "stablelm+moe"]  # torch.export takes seconds per case: one MoE case is enough


def tiny_llm(case: str, seed: int = 0):
    """A 2-layer, GQA (4 heads, 2 KV heads) LM with every weight perturbed away from its init (zero biases, unit
    norms would hide mistakes); `+moe` upcycles layer 0 into 4 experts, top-2, each expert perturbed apart."""
    arch, _, moe = case.partition("+")
    torch.manual_seed(seed)
    llm = build_llm(LLMConfig(arch=arch, vocab_size=64, hidden_size=64, intermediate_size=96, num_layers=2,
                              num_heads=4, num_kv_heads=2, max_position_embeddings=64, extra=ARCH_EXTRA[arch]))
    if moe:
        upcycle(llm, MoEConfig(num_experts=4, top_k=2))
    with torch.no_grad():
        for p in llm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return llm.eval()


def _reference_logits(llm, embeds):
    return llm(inputs_embeds=embeds, use_cache=False).logits  # (B, T, V)


def test_every_llm_arch_is_tested_here():
    from edgevlm.models.archs import ARCHS

    assert list(ARCHS) == sorted(ARCH_EXTRA)


@pytest.mark.parametrize("case", CASES)
def test_static_cache_decoder_equals_reference(case):
    llm = tiny_llm(case)
    arch = case.split("+")[0]
    torch.manual_seed(1)
    embeds = torch.randn(1, 12, llm.config.hidden_size)
    with torch.no_grad():
        ref = _reference_logits(llm, embeds)
        dec = StaticCacheDecoder(llm, arch, max_context=32).eval()
        prefill = dec(embeds[:, :9], torch.tensor([0]))
        steps = [dec(embeds[:, t : t + 1], torch.tensor([t])) for t in range(9, 12)]
    torch.testing.assert_close(prefill, ref[:, :9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, dim=1), ref[:, 9:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_static_cache_decoder_under_torch_export(case):
    llm = tiny_llm(case)
    arch = case.split("+")[0]
    torch.manual_seed(2)
    embeds = torch.randn(1, 10, llm.config.hidden_size)
    dec = StaticCacheDecoder(llm, arch, max_context=32).eval()
    seq = torch.export.Dim("seq", min=1, max=31)
    with torch.no_grad():
        ref = _reference_logits(llm, embeds)
        ep = torch.export.export(dec, (embeds[:, :4], torch.tensor([0])), dynamic_shapes=({1: seq}, None),
                                 strict=True)
        program = ep.module()
        prefill = program(embeds[:, :7], torch.tensor([0]))
        steps = [program(embeds[:, t : t + 1], torch.tensor([t])) for t in range(7, 10)]
    torch.testing.assert_close(prefill, ref[:, :7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, dim=1), ref[:, 7:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["phi+moe", "phi3", "llama"])
def test_past_present_decoder_with_a_batch(case):
    """ONNX's past/present decoder on a batch of 2: prefill, then two cached steps; each row's last-position
    logits equal the reference's, and the presents grow by the new positions."""
    llm = tiny_llm(case)
    dec = PastPresentDecoder(llm, case.split("+")[0]).eval()
    torch.manual_seed(3)
    embeds = torch.randn(2, 8, llm.config.hidden_size)
    past = [torch.zeros(2, dec.core.num_kv_heads, 0, dec.core.head_dim) for _ in range(2 * dec.core.num_layers)]
    with torch.no_grad():
        ref = _reference_logits(llm, embeds)  # (2, 8, V)
        logits, *past = dec(embeds[:, :6], torch.ones(2, 6, dtype=torch.long), torch.arange(6).expand(2, 6), past)
        steps = [logits]
        for t in (6, 7):
            logits, *past = dec(embeds[:, t : t + 1], torch.ones(2, t + 1, dtype=torch.long),
                                torch.full((2, 1), t), past)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), ref[:, 5:8], atol=1e-5, rtol=1e-5)
    assert past[0].shape[2] == 8


def test_group_query_attention_right_padding():
    """GroupQueryAttention's meaning (seqlens_k = sum(mask) − 1): a row right-padded by 2 gives, at its real
    positions, what the same row without the padding gives, and its padding queries see the real keys only;
    grouped heads share their KV head."""
    torch.manual_seed(4)
    q, k, v = torch.randn(2, 6, 4 * 8), torch.randn(2, 6, 2 * 8), torch.randn(2, 6, 2 * 8)
    empty = torch.zeros(2, 2, 0, 8)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    out, present_k, _ = group_query_attention(q, k, v, empty, empty, mask, 4, 2)
    alone, _, _ = group_query_attention(q[1:, :4], k[1:, :4], v[1:, :4], empty[1:], empty[1:],
                                        torch.ones(1, 4, dtype=torch.long), 4, 2)
    torch.testing.assert_close(out[1:, :4], alone)
    keys, values = k[1, :4, :8], v[1, :4, :8]  # KV head 0, the real positions
    for t in (4, 5):  # query head 0 of a padding position
        weights = torch.softmax(keys @ q[1, t, :8] / 8**0.5, dim=0)
        torch.testing.assert_close(out[1, t, :8], weights @ values)
    assert present_k.shape == (2, 2, 6, 8)
    # position 0 sees one key: each query head returns its group's value (heads 0, 1 → KV head 0; 2, 3 → 1)
    torch.testing.assert_close(out[0, 0].view(4, 8), v[0, 0].view(2, 8).repeat_interleave(2, 0))


def test_unsupported_settings_are_refused():
    llm = tiny_llm("phi")
    llm.config.qk_layernorm = True
    with pytest.raises(EdgeVLMError, match="does not implement phi with qk_layernorm"):
        PlainDecoder(llm, "phi")
    with pytest.raises(EdgeVLMError, match="unknown LLM architecture 'gpt2'; known: llama, phi"):
        PlainDecoder(llm, "gpt2")
