"""The export-friendly decoder equals the transformers LM it wraps: prefill, cached decode, torch.export."""

from __future__ import annotations

import torch

from edgevlm.export.decoder import StaticCacheDecoder


def _reference_logits(llm, embeds):
    return llm(inputs_embeds=embeds, use_cache=False).logits  # (1, T, V)


def test_static_cache_decoder_equals_reference(tiny_model):
    llm = tiny_model.llm
    torch.manual_seed(1)
    embeds = torch.randn(1, 12, llm.config.hidden_size)
    ref = _reference_logits(llm, embeds)
    dec = StaticCacheDecoder(llm, "llama", max_context=32).eval()
    with torch.no_grad():
        prefill = dec(embeds[:, :9], torch.tensor([0]))
        steps = [dec(embeds[:, t : t + 1], torch.tensor([t])) for t in range(9, 12)]
    torch.testing.assert_close(prefill, ref[:, :9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, dim=1), ref[:, 9:], atol=1e-5, rtol=1e-5)


def test_static_cache_decoder_under_torch_export(tiny_model):
    llm = tiny_model.llm
    torch.manual_seed(2)
    embeds = torch.randn(1, 10, llm.config.hidden_size)
    ref = _reference_logits(llm, embeds)
    dec = StaticCacheDecoder(llm, "llama", max_context=32).eval()
    seq = torch.export.Dim("seq", min=1, max=31)
    with torch.no_grad():
        ep = torch.export.export(dec, (embeds[:, :4], torch.tensor([0])), dynamic_shapes=({1: seq}, None),
                                 strict=True)
        program = ep.module()
        prefill = program(embeds[:, :7], torch.tensor([0]))
        steps = [program(embeds[:, t : t + 1], torch.tensor([t])) for t in range(7, 10)]
    torch.testing.assert_close(prefill, ref[:, :7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, dim=1), ref[:, 7:], atol=1e-5, rtol=1e-5)
