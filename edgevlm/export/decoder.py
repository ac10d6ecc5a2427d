"""Export-friendly text decoders: the same weights as the transformers LM, in a plain forward.

Exporters (torch.export, the ONNX dynamo exporter, coremltools) need a decoder whose KV cache is explicit:
a static cache inside the program (ExecuTorch, CoreML state) or past/present tensors (ONNX). transformers'
forward carries mask and cache machinery the converters trip over (docs/dependencies.md), so `PlainDecoder`
restates the attention (rotary embeddings, partial rotary, grouped-query attention, fused or separate q/k/v)
and the residual wiring of each LLM architecture edgevlm builds, over the *same* modules, with no weight
copies: norms and FFNs run as the layer's own `input_layernorm` / `mlp` modules, which export as they are.
What differs between architectures is the `decoder` spec of each row of the architecture table
(edgevlm.models.archs.ARCHS), not branches in the forward.
`tests/test_export_decoder.py` shows the decoder equals the reference for every architecture, eager and under
`torch.export(strict=True)`. Cache writes are slice assignments: an index write into a CoreML state is silently
dropped (docs/dependencies.md).

MoE layers (edgevlm.models.moe, MoE-LLaVA) run *densely* (`MoE.forward_dense`): every expert on every token,
weighted by a gate that is zero off the router's top-k. That equals the reference's dropless gather/scatter
routing but has static shapes, so it exports to every format; it costs E/k times the FFN compute of the MoE
layers, which is what the tiny models need (a sparse kernel per runtime is the way to real-size speed).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.errors import EdgeVLMError
from edgevlm.models.archs import ARCHS, DecoderSpec
from edgevlm.models.moe import MoE

# (layer, k_new, v_new) → (k_all, v_all): how a wrapper stores and reads its cache, (B, H_kv, S, hd) each
KVUpdate = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (layer, q (B, H, T, hd), k, v (B, H_kv, T, hd), rotated) → attention output (B, H, T, hd): a runtime's own op
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rotary_dims(cfg) -> int:
    """How many of a head's dims get rotary embeddings (Phi-2: 0.4 of them, StableLM-2: 0.25)."""
    factor = (getattr(cfg, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
    return int(head_dim(cfg) * factor)


def head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def arch_spec(cfg, arch: str) -> DecoderSpec:
    """The decoder spec of `arch`, after checking that `cfg` uses nothing the decoder does not restate."""
    spec = ARCHS[arch].decoder
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    flags = [f for f in spec.unsupported if getattr(cfg, f, None)] + ([f"rope_type={rope}"] if rope != "default"
                                                                      else [])
    if flags:
        raise EdgeVLMError(f"the export decoder does not implement {arch} with {', '.join(flags)}")
    return spec


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """q (B, H, T, hd), k/v (B, H_kv, S, hd), bias (…, T, S) additive → (B, H, T, hd); each group of H / H_kv
    query heads shares one KV head, and the softmax runs in float32 (as the transformers models do)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias  # (B, H, T, S)
    return F.softmax(scores.float(), dim=-1).to(q.dtype) @ v


class PlainDecoder(nn.Module):
    """The transformers causal LM's forward on input embeddings, with the cache handled by the caller."""

    def __init__(self, llm: nn.Module, arch: str):
        super().__init__()
        cfg = llm.config
        self.spec = arch_spec(cfg, arch)
        self.parallel = self.spec.parallel(cfg)
        self.layers, self.lm_head = llm.model.layers, llm.lm_head
        self.norm = getattr(llm.model, self.spec.final_norm)
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, \
            head_dim(cfg)
        self.vocab_size, self.num_layers = cfg.vocab_size, cfg.num_hidden_layers
        self.rotary_dims = rotary_dims(cfg)
        theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta
        dims = torch.arange(0, self.rotary_dims, 2, dtype=torch.float32)
        self.register_buffer("inv_freq", 1.0 / theta ** (dims / self.rotary_dims), persistent=False)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) or (B, T) → cos, sin broadcastable to (B, H, T, rotary_dims)."""
        freqs = positions[..., None].float() * self.inv_freq  # (…, T, rd/2)
        emb = torch.cat([freqs, freqs], dim=-1)[..., None, :, :]  # (…, 1, T, rd)
        return emb.cos(), emb.sin()

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, kv: KVUpdate) -> torch.Tensor:
        """x (B, T, D) at `positions` (T,) or (B, T); mask (T, S) or (B, 1, T, S), True where a query may attend
        → logits (B, T, V), attending under `mask` to the keys and values `kv` returns."""
        bias = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, float("-inf"))  # mask's shape

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return masked_attention(q, *kv(i, k, v), bias)

        return self.run(x, positions, attend)

    def run(self, x: torch.Tensor, positions: torch.Tensor, attend: Attend, last_only: bool = False) -> torch.Tensor:
        """The layers with attention done by `attend` → logits (B, T, V), or (B, 1, V) of the last position."""
        cos, sin = self.rope(positions)
        for i, layer in enumerate(self.layers):
            h = layer.input_layernorm(x)
            attn = self._attention(i, layer.self_attn, h, cos, sin, attend)
            if self.parallel:
                x = x + attn + self._ffn(layer.mlp, h)
            else:
                x = x + attn
                x = x + self._ffn(layer.mlp, layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x[:, -1:] if last_only else x))

    def _qkv(self, attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.spec.fused_qkv:
            return attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return attn.qkv_proj(x).split([q_dim, kv_dim, kv_dim], dim=-1)

    def _attention(self, i, attn, x, cos, sin, attend: Attend) -> torch.Tensor:
        B, T, hd = x.shape[0], x.shape[1], self.head_dim
        q, k, v = self._qkv(attn, x)
        q = q.view(B, T, self.num_heads, hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.num_kv_heads, hd).transpose(1, 2)  # (B, H_kv, T, hd)
        v = v.view(B, T, self.num_kv_heads, hd).transpose(1, 2)
        out = attend(i, self._rotate(q, cos, sin), self._rotate(k, cos, sin), v)  # (B, H, T, hd)
        return getattr(attn, self.spec.out_proj)(out.transpose(1, 2).reshape(B, T, self.num_heads * hd))

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate-half rotary embedding on the first `rotary_dims` of each head; the rest pass through."""
        rd = self.rotary_dims
        rot = x if rd == self.head_dim else x[..., :rd]
        half = rd // 2
        rot = rot * cos + torch.cat([-rot[..., half:], rot[..., :half]], dim=-1) * sin
        return rot if rd == self.head_dim else torch.cat([rot, x[..., rd:]], dim=-1)

    @staticmethod
    def _ffn(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return mlp.forward_dense(x) if isinstance(mlp, MoE) else mlp(x)


class StaticCacheDecoder(nn.Module):
    """`text_decoder(embeds (1, T, D), input_pos (1,) int64) → logits (1, T, V)` with the KV cache inside.

    The cache is two buffers of `max_context` positions; a call writes positions input_pos..input_pos+T-1 and
    attends to everything before them. This is the runtime contract's decoder for ExecuTorch (mutable buffers)
    and CoreML (state).
    """

    def __init__(self, llm: nn.Module, arch: str, max_context: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.core = PlainDecoder(llm, arch)
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
