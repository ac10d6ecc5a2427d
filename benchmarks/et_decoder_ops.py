"""ExecuTorch decode: the exporter's `text_decoder` on ExecuTorch's LLM custom ops against the slice-assigned
static cache it replaced, same weights.

The earlier decoder (decoder.StaticCacheDecoder) kept the KV cache as mutable buffers written by slice
assignment and attended over all `max_context` positions with a mask. After functionalization the slice
assignment becomes a `slice_scatter` of the whole cache buffer, copied back into the buffer, and the attention
matmuls run on every cached position whether filled or not, in portable kernels. The exporter's TextDecoder
(edgevlm/export/executorch.py) uses what ExecuTorch's own Llama export uses: `llama::update_cache` (writes T
positions in place) and `llama::custom_sdpa` (attends to positions < start + T only).

This script measures both on a real-width MobileLLaMA slice (width 2048, 16 heads, FFN 5632, 32000 vocab,
`--layers` layers, context 2048), 8da4w like the `int4` scheme, lowered to XNNPACK:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/et_decoder_ops.py --layers 4 --json out.json
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
from edgevlm.export.decoder import StaticCacheDecoder  # noqa: E402
from edgevlm.export.executorch import TextDecoder, _quant_int4_linears, lower  # noqa: E402
from edgevlm.models.llm import build_llm  # noqa: E402


class SliceCacheDecoder(nn.Module):
    """The earlier `text_decoder`: decoder.StaticCacheDecoder (slice-assigned cache, masked attention over all
    positions) with the LM head on every position, then the last row."""

    def __init__(self, llm: nn.Module, max_context: int):
        super().__init__()
        self.decoder = StaticCacheDecoder(llm, "llama", max_context)

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.decoder(embeds, input_pos)[:, -1]  # (1, V)


VARIANTS = {"slice_cache": lambda llm, n: SliceCacheDecoder(llm, n).eval(),
            "custom_ops": lambda llm, n: TextDecoder(llm, "llama", n).eval()}


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
        for variant, build in VARIANTS.items():
            torch.manual_seed(0)  # the same weights for both
            llm = build_llm(cfg).eval()
            module = build(llm, a.context)
            t = time.perf_counter()
            _quant_int4_linears(module)
            pte = Path(tmp) / f"{variant}.pte"
            pte.write_bytes(program(module, cfg.hidden_size, a.context))
            lower_s = time.perf_counter() - t
            r = time_program(pte, cfg.hidden_size, a.prompt, a.steps, a.threads)
            r["export_s"], r["pte_mb"] = lower_s, pte.stat().st_size / 1e6
            results["variants"][variant] = r
            print(variant, json.dumps(r), flush=True)
    e, c = results["variants"]["slice_cache"], results["variants"]["custom_ops"]
    print(f"{a.layers} layers, prompt {a.prompt}: decode {e['token_ms']:.1f} → {c['token_ms']:.1f} ms/token "
          f"({e['token_ms'] / c['token_ms']:.2f}×), prefill {e['prefill_ms']:.0f} → {c['prefill_ms']:.0f} ms")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
