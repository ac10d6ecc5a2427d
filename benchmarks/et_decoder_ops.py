"""ExecuTorch decode: edgevlm's text decoder against one built on ExecuTorch's LLM custom ops, same weights.

edgevlm's `text_decoder` (edgevlm/export/executorch.py over decoder.StaticCacheDecoder) keeps the KV cache as
mutable buffers written by slice assignment and attends over all `max_context` positions with a mask. After
functionalization the slice assignment becomes a `slice_scatter` of the whole cache buffer, copied back into
the buffer, and the attention matmuls run on every cached position whether filled or not. ExecuTorch's own
Llama export instead uses `llama::update_cache` (writes T positions in place) and `llama::custom_sdpa` (attends
to positions < start + T only), from `executorch.extension.llm.custom_ops`
(examples/models/llama/source_transformation/sdpa.py in the executorch repository).

This script measures both on a real-width MobileLLaMA slice (width 2048, 16 heads, FFN 5632, 32000 vocab,
`--layers` layers, context 2048), 8da4w like the `int4` scheme, lowered to XNNPACK:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/et_decoder_ops.py --layers 4 --json out.json

It is a measurement for the exporter's maintainers, not an exporter: the custom-op decoder here is the
minimum that runs (Llama only, no MoE, no CoreML path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevlm.config import LLMConfig  # noqa: E402
from edgevlm.export.decoder import PlainDecoder  # noqa: E402
from edgevlm.export.executorch import TextDecoder, _quant_int4_linears, lower  # noqa: E402
from edgevlm.models.llm import build_llm  # noqa: E402


class CustomOpsDecoder(nn.Module):
    """`text_decoder(embeds (1, T, D), input_pos (1,)) → logits (1, V)` on llama::update_cache / custom_sdpa."""

    def __init__(self, llm: nn.Module, max_context: int):
        super().__init__()
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  registers torch.ops.llama

        self.core = PlainDecoder(llm, "llama")
        c = self.core
        self.max_context = max_context
        shape = (1, max_context, c.num_kv_heads, c.head_dim)  # (B, S, H_kv, hd): the ops' layout
        for i in range(c.num_layers):
            self.register_buffer(f"k{i}", torch.zeros(shape), persistent=False)
            self.register_buffer(f"v{i}", torch.zeros(shape), persistent=False)

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        c, x = self.core, embeds
        B, T = x.shape[:2]
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start < self.max_context)
        torch._check(start + T <= self.max_context)
        cos, sin = c.rope(start + torch.arange(T))
        for i, layer in enumerate(c.layers):
            attn = layer.self_attn
            q, k, v = c._qkv(attn, layer.input_layernorm(x))
            q = c._rotate(q.view(B, T, c.num_heads, c.head_dim).transpose(1, 2), cos, sin).transpose(1, 2)
            k = c._rotate(k.view(B, T, c.num_kv_heads, c.head_dim).transpose(1, 2), cos, sin).transpose(1, 2)
            v = v.view(B, T, c.num_kv_heads, c.head_dim)  # (B, T, H, hd) each
            kc, vc = getattr(self, f"k{i}"), getattr(self, f"v{i}")
            torch.ops.llama.update_cache(k, kc, start)
            torch.ops.llama.update_cache(v, vc, start)
            out = torch.ops.llama.custom_sdpa(q, kc, vc, start, None, 0, True)  # (B, T, H, hd)
            x = x + attn.o_proj(out.reshape(B, T, c.num_heads * c.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return c.lm_head(c.norm(x[:, -1]))  # (1, V): the head on the last position only


def build(variant: str, llm: nn.Module, max_context: int) -> nn.Module:
    if variant == "edgevlm":
        return TextDecoder(llm, "llama", max_context).eval()
    return CustomOpsDecoder(llm, max_context).eval()


def program(module: nn.Module, hidden: int, max_context: int) -> bytes:
    from torch.export import Dim, export

    seq = Dim("seq", min=1, max=max_context)
    args = (torch.zeros(1, 4, hidden), torch.tensor([0]))
    with torch.no_grad():
        ep = export(module, args, dynamic_shapes=({1: seq}, None), strict=True)
    return lower({"text_decoder": ep}, {})


def time_program(path: Path, hidden: int, prompt: int, steps: int, threads: int) -> dict:
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    _unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(path).load_method("text_decoder")
    torch.manual_seed(0)
    embeds = torch.randn(1, prompt, hidden)
    step = torch.randn(1, 1, hidden)
    out = {}
    for rep in range(2):  # the first pass is the warm-up
        t = time.perf_counter()
        method.execute([embeds, torch.tensor([0])])
        prefill = (time.perf_counter() - t) * 1e3
        per = []
        for pos in range(prompt, prompt + steps):
            t = time.perf_counter()
            logits = method.execute([step, torch.tensor([pos])])[0]
            per.append((time.perf_counter() - t) * 1e3)
        out = {"prefill_ms": prefill, "token_ms": statistics.median(per), "logits_shape": list(logits.shape)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--prompt", type=int, default=600)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    cfg = LLMConfig(arch="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_layers=a.layers,
                    num_heads=16, num_kv_heads=16, max_position_embeddings=a.context)
    results = {"config": {k: str(v) for k, v in vars(a).items()}, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("edgevlm", "custom_ops"):
            torch.manual_seed(0)  # the same weights for both
            llm = build_llm(cfg).eval()
            module = build(variant, llm, a.context)
            t = time.perf_counter()
            _quant_int4_linears(module)
            pte = Path(tmp) / f"{variant}.pte"
            pte.write_bytes(program(module, cfg.hidden_size, a.context))
            lower_s = time.perf_counter() - t
            r = time_program(pte, cfg.hidden_size, a.prompt, a.steps, a.threads)
            r["export_s"], r["pte_mb"] = lower_s, pte.stat().st_size / 1e6
            results["variants"][variant] = r
            print(variant, json.dumps(r), flush=True)
    e, c = results["variants"]["edgevlm"], results["variants"]["custom_ops"]
    print(f"{a.layers} layers, prompt {a.prompt}: decode {e['token_ms']:.1f} → {c['token_ms']:.1f} ms/token "
          f"({e['token_ms'] / c['token_ms']:.2f}×), prefill {e['prefill_ms']:.0f} → {c['prefill_ms']:.0f} ms")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
