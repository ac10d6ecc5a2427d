"""Export-friendly text decoders: the same weights as the transformers LM, in a plain forward.

Exporters (torch.export, the ONNX dynamo exporter, coremltools) need a decoder whose KV cache is explicit:
a static cache inside the program (ExecuTorch, CoreML state) or past/present tensors (ONNX). transformers'
forward carries mask and cache machinery the converters trip over (shared/stack.md), so `PlainLlama` restates
the Llama math (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU) over the *same* modules, with no
weight copies; `tests/test_export_decoder.py` shows it equals the reference, eager and under torch.export.
Cache writes are slice assignments: an index write into a CoreML state is silently dropped (stack.md).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.errors import EdgeVLMError

SUPPORTED_ARCHS = ("llama",)

# (layer, k_new, v_new) → (k_all, v_all): how a wrapper stores and reads its cache, (1, H_kv, S, hd) each
KVUpdate = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class PlainLlama(nn.Module):
    """The transformers Llama LM's forward on input embeddings, with the cache handled by the caller."""

    def __init__(self, llm: nn.Module, arch: str):
        super().__init__()
        if arch not in SUPPORTED_ARCHS:
            raise EdgeVLMError(f"the export decoder supports {', '.join(SUPPORTED_ARCHS)}, not {arch!r}")
        cfg = llm.config
        self.layers, self.norm, self.lm_head = llm.model.layers, llm.model.norm, llm.lm_head
        self.num_heads, self.num_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.vocab_size, self.num_layers = cfg.vocab_size, cfg.num_hidden_layers
        theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta
        inv_freq = 1.0 / theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[:, None].float() * self.inv_freq[None]  # (T, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (T, hd)
        return emb.cos(), emb.sin()

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, kv: KVUpdate) -> torch.Tensor:
        """x (1, T, D) at `positions` (T,); mask (T, S) True where a query may attend → logits (1, T, V)."""
        cos, sin = self.rope(positions)
        bias = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, float("-inf"))  # (T, S)
        for i, layer in enumerate(self.layers):
            x = x + self._attention(i, layer.self_attn, layer.input_layernorm(x), cos, sin, bias, kv)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x))

    def _attention(self, i, attn, x, cos, sin, bias, kv: KVUpdate) -> torch.Tensor:
        T, hd = x.shape[1], self.head_dim
        q = attn.q_proj(x).view(1, T, self.num_heads, hd).transpose(1, 2)  # (1, H, T, hd)
        k = attn.k_proj(x).view(1, T, self.num_kv_heads, hd).transpose(1, 2)  # (1, H_kv, T, hd)
        v = attn.v_proj(x).view(1, T, self.num_kv_heads, hd).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        k, v = kv(i, k, v)  # (1, H_kv, S, hd)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = q @ k.transpose(-1, -2) * hd**-0.5 + bias  # (1, H, T, S)
        out = F.softmax(scores.float(), dim=-1).to(q.dtype) @ v  # (1, H, T, hd)
        return attn.o_proj(out.transpose(1, 2).reshape(1, T, self.num_heads * hd))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class StaticCacheDecoder(nn.Module):
    """`text_decoder(embeds (1, T, D), input_pos (1,) int64) → logits (1, T, V)` with the KV cache inside.

    The cache is two buffers of `max_context` positions; a call writes positions input_pos..input_pos+T-1 and
    attends to everything before them. This is the runtime contract's decoder for ExecuTorch (mutable buffers)
    and CoreML (state).
    """

    def __init__(self, llm: nn.Module, arch: str, max_context: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.core = PlainLlama(llm, arch)
        self.max_context = max_context
        shape = (self.core.num_layers, 1, self.core.num_kv_heads, max_context, self.core.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        T = embeds.shape[1]
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + T <= self.max_context)
        positions = start + torch.arange(T)  # (T,)
        mask = torch.arange(self.max_context)[None, :] <= positions[:, None]  # (T, S)

        def kv(i: int, k: torch.Tensor, v: torch.Tensor):
            self.k_cache[i, :, :, start : start + T] = k
            self.v_cache[i, :, :, start : start + T] = v
            return self.k_cache[i], self.v_cache[i]

        return self.core(embeds, positions, mask, kv)

    def reset(self) -> None:
        self.k_cache.zero_()
        self.v_cache.zero_()
