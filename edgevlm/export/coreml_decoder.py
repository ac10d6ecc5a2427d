"""The CoreML-friendly text decoder: `PlainDecoder` with its KV cache as state buffers, written by slices.

CoreML's stateful models (iOS 18, `ct.StateType`) keep the cache in registered buffers that the traced
program mutates in place. The start position cannot come from a tensor value (`.item()` does not trace), so,
as in Apple's stateful Llama example (coremltools "Stateful Models" guide), it comes from input *shapes*:
`causal_mask` is (1, 1, T, E) with E the end position, so the call covers positions E-T .. E-1 and attends to
0 .. E-1 (`edgevlm.runtimes.coreml.causal_mask` builds it). Cache writes are slice assignments: an index write
into a CoreML state is silently dropped (docs/dependencies.md). `tests/test_coreml.py` shows this module equals
`StaticCacheDecoder` (and so the transformers LM), eager and under `torch.export`.
"""

from __future__ import annotations

import torch
from torch import nn

from edgevlm.export.decoder import PlainDecoder


class CoreMLTextDecoder(nn.Module):
    """`text_decoder(inputs_embeds (1, T, D), causal_mask (1, 1, T, E)) → logits (1, T, V)`, cache inside.

    Args:
        llm: the transformers causal LM (weights are shared, not copied).
        arch: its architecture name (see `PlainDecoder`).
        max_context: cache positions; E never exceeds it.
        cache_dtype: the state's dtype (CoreML states are fp16; fp32 for exact comparisons in PyTorch).
    """

    def __init__(self, llm: nn.Module, arch: str, max_context: int, cache_dtype: torch.dtype = torch.float16):
        super().__init__()
        self.core = PlainDecoder(llm, arch)
        self.max_context = max_context
        self.cache_shape = (self.core.num_layers, 1, self.core.num_kv_heads, max_context, self.core.head_dim)
        self.register_buffer("k_cache", torch.zeros(self.cache_shape, dtype=cache_dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(self.cache_shape, dtype=cache_dtype), persistent=False)

    def forward(self, inputs_embeds: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        T, end = inputs_embeds.shape[1], causal_mask.shape[-1]
        if not torch.jit.is_tracing():  # torch.export's bounds; under tracing the sizes are tensors
            torch._check(end >= T)
            torch._check(end <= self.max_context)
        start = end - T
        positions = start + torch.arange(T)  # (T,)
        allowed = causal_mask[0, 0] == 0  # (T, E)

        def kv(i: int, k: torch.Tensor, v: torch.Tensor):
            self.k_cache[i, :, :, start:end] = k.to(self.k_cache.dtype)  # (1, H_kv, T, hd)
            self.v_cache[i, :, :, start:end] = v.to(self.v_cache.dtype)
            return self.k_cache[i, :, :, :end].to(k.dtype), self.v_cache[i, :, :, :end].to(v.dtype)  # (1, H_kv, E, hd)

        return self.core(inputs_embeds, positions, allowed, kv)

    def reset(self) -> None:
        self.k_cache.zero_()
        self.v_cache.zero_()
