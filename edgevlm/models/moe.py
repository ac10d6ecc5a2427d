"""Mixture-of-experts FFN layers, MoE-LLaVA style (arXiv:2401.15947), in DeepSpeed-MoE's module tree.

MoE-LLaVA (PKU-YuanGroup/MoE-LLaVA) wraps the FFN of chosen LLM layers in `deepspeed.moe.layer.MoE`; we
mirror that module tree so that its checkpoints load by tensor name. For an MoE layer `i` the tensors are
```
model.layers.{i}.mlp.deepspeed_moe.gate.wg.weight                              (E, D)  router, no bias
model.layers.{i}.mlp.deepspeed_moe.experts.deepspeed_experts.{e}.<dense MLP>   e.g. gate_proj.weight (llama,
                                                                               stablelm, qwen2), fc1.* (phi)
```
(inside EdgeVLM everything has the `llm.` prefix).

Which layers: `moe_layers(num_layers, cfg)` = `range(0, num_layers, cfg.every)`, i.e. layers 0, 2, 4, … for
`every=2` — MoE-LLaVA's default `moe_mode="sparse"` (`list(range(num_layers))[::2]`). Every MoE layer has
`cfg.num_experts` experts.

Forward math, per token x (D,) — the MoE output replaces the dense FFN output, residuals are unchanged:
```
logits = float32(x) @ float32(Wg).T                   (E,)   router in fp32, as DeepSpeed's TopKGate
p      = softmax(logits)                              (E,)
idx    = the k largest p, in descending order         (k,)   ties: lower expert index first (argmax)
w      = p[idx] / sum(p[idx])  if k >= 2              (k,)   DeepSpeed top-2 renormalisation (sums to 1)
w      = p[idx]                if k == 1                     DeepSpeed top-1 keeps the raw probability
y      = sum_j w_j * expert_{idx_j}(x)                (D,)   w cast to x's dtype
```
Inference and training are **dropless**: every token reaches its k experts; there is no expert capacity, so
no token is ever dropped (DeepSpeed drops tokens beyond `capacity_factor`; exporters must not). There is no
routing noise either: DeepSpeed picks the second expert of top-2 with Gumbel noise added to the logits; we
take the plain second-largest, so routing is deterministic and equal in every runtime. `MoE.forward` runs
each expert on its tokens only; `MoE.forward_dense` gives the same result with static shapes (every expert
on every token, weight 0 off the top-k), the one form every exporter traces.

Load-balancing loss over the S tokens of a forward pass (GShard / DeepSpeed `top2gating`, which uses only
each token's first choice): `aux = E * sum_e mean_s(p[s, e]) * mean_s(idx[s, 0] == e)`; it is 1 for perfectly
balanced routing. It counts every token of the batch, padding included, as MoE-LLaVA's (which passes DeepSpeed
no token mask). Each `MoE` keeps `aux_loss` (with grad) and `expert_counts` (tokens per expert, all k
choices) from its last forward for the trainer, which adds `aux_loss_coef * sum(aux over MoE layers)` to the
LM loss as MoE-LLaVA does.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.config import MoEConfig
from edgevlm.errors import EdgeVLMError


def moe_layers(num_layers: int, cfg: MoEConfig) -> list[int]:
    """Indices of the LLM layers whose FFN is an MoE (empty for a dense model)."""
    return list(range(0, num_layers, cfg.every)) if cfg.num_experts else []


def route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Router logits (S, E) → (weights (S, k) fp32, expert ids (S, k), probabilities (S, E) fp32)."""
    probs = torch.softmax(logits.float(), dim=-1)  # (S, E)
    idx = _top_k(probs, k)  # (S, k), descending
    top_p = probs.gather(-1, idx)  # (S, k)
    if k > 1:
        top_p = top_p / top_p.sum(-1, keepdim=True).clamp(min=torch.finfo(top_p.dtype).eps)
    return top_p, idx, probs


def _top_k(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Repeated argmax: like torch.topk, but exact ties go to the lower expert index (torch.topk leaves the
    order of ties unspecified; argmax, DeepSpeed's top-2 and ONNX TopK take the first).

    A pick is struck out by a mask of equality with the expert ids, not by scattering a scalar: coremltools 9
    cannot convert a scalar scatter over a flexible token count ("Cannot add const (is0, 1)")."""
    experts = torch.arange(probs.shape[-1], device=probs.device)  # (E,)
    picks, rest = [], probs
    for _ in range(k):
        i = rest.argmax(-1)  # (S,)
        picks.append(i)
        rest = rest.masked_fill(experts == i[:, None], -1.0)  # (S, E); probabilities are >= 0
    return torch.stack(picks, -1)


def aux_loss(probs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """DeepSpeed's load-balancing loss: E * Σ_e (mean gate prob of e) * (fraction of first choices = e)."""
    num_experts = probs.shape[-1]
    first = F.one_hot(idx[:, 0], num_experts).float()  # (S, E)
    return num_experts * (probs.mean(0) * first.mean(0)).sum()


class TopKGate(nn.Module):
    """The router: one bias-free linear map to expert logits (DeepSpeed's `TopKGate.wg`)."""

    def __init__(self, hidden_size: int, num_experts: int, k: int):
        super().__init__()
        self.wg = nn.Linear(hidden_size, num_experts, bias=False)
        self.k = k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (S, D) → `route` of their logits, computed in fp32."""
        return route(F.linear(x.float(), self.wg.weight.float()), self.k)


class Experts(nn.Module):
    """`num_experts` independent copies of the dense FFN (DeepSpeed's `Experts.deepspeed_experts`)."""

    def __init__(self, expert: nn.Module, num_experts: int):
        super().__init__()
        self.deepspeed_experts = nn.ModuleList(copy.deepcopy(expert) for _ in range(num_experts))


class MoELayer(nn.Module):
    def __init__(self, gate: TopKGate, experts: Experts):
        super().__init__()
        self.gate = gate
        self.experts = experts


class MoE(nn.Module):
    """Drop-in replacement for a decoder layer's `mlp`: same input and output, routed over experts."""

    def __init__(self, hidden_size: int, expert: nn.Module, num_experts: int, k: int):
        super().__init__()
        if not 1 <= k <= num_experts:
            raise EdgeVLMError(f"invalid config: moe.top_k must be in [1, {num_experts}], got {k}")
        self.num_experts = num_experts
        self.deepspeed_moe = MoELayer(TopKGate(hidden_size, num_experts, k), Experts(expert, num_experts))
        self.aux_loss: torch.Tensor | None = None
        self.expert_counts: torch.Tensor | None = None

    def __getstate__(self):
        # the last forward's statistics are not state, and a non-leaf aux_loss would make deepcopy fail
        return {**self.__dict__, "aux_loss": None, "expert_counts": None}

    @property
    def experts(self) -> nn.ModuleList:
        return self.deepspeed_moe.experts.deepspeed_experts

    def _route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights, idx, probs = self.deepspeed_moe.gate(tokens)
        self.aux_loss = aux_loss(probs, idx)
        self.expert_counts = torch.bincount(idx.flatten(), minlength=self.num_experts).detach()
        return weights.to(tokens.dtype), idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) → (..., D): each token through its top-k experts only (dropless gather/scatter)."""
        tokens = x.reshape(-1, x.shape[-1])  # (S, D)
        weights, idx = self._route(tokens)  # (S, k), (S, k)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(idx == e, as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(tokens[rows]) * weights[rows, slot, None])
        return out.reshape(x.shape)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """The same result with static shapes: every expert on every token, weighted by a gate zero off the top-k.

        The export form (every exporter's decoder runs it; no data-dependent shapes, no routing statistics
        kept); E/k times the FFN compute of `forward`. x (B, T, D) → (B, T, D). The router logits are
        TopKGate's (fp32 input, fp32 weights), taken on the 3-D input so that every projection stays a batched
        MatMul (a 2-D one becomes an ONNX Gemm, which onnxruntime's int4 quantizer mishandles) and through the
        `wg` module, so that exporters can find the router by its module path and keep it unquantized.
        """
        gate = self.deepspeed_moe.gate
        logits = gate.wg(x.float())  # (B, T, E)
        weights, idx, _ = route(logits.reshape(-1, self.num_experts), gate.k)  # (S, k) fp32, (S, k)
        chosen = idx[..., None] == torch.arange(self.num_experts)  # (S, k, E)
        combine = (chosen.to(weights.dtype) * weights[..., None]).sum(1).reshape(logits.shape)  # (B, T, E)
        outs = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (B, T, E, D)
        return (combine.to(x.dtype)[..., None] * outs).sum(-2)


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """A transformers causal LM's decoder layers (`model.layers`)."""
    layers = getattr(getattr(llm, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise EdgeVLMError(f"cannot find the decoder layers (model.layers) of {type(llm).__name__}")
    return layers


def upcycle(llm: nn.Module, cfg: MoEConfig) -> list[int]:
    """Replace the FFN of `moe_layers(...)` with an `MoE` whose experts are copies of it (sparse upcycling).

    The router is freshly initialised (nn.Linear's default, from torch's global RNG). Before any training the
    upcycled model computes what the dense one did for top_k >= 2 (renormalised weights of identical experts
    sum to one). Returns the indices of the upcycled layers.
    """
    layers = decoder_layers(llm)
    idx = moe_layers(len(layers), cfg)
    hidden = llm.config.hidden_size
    for i in idx:
        dense = layers[i].mlp
        if isinstance(dense, MoE):
            raise EdgeVLMError(f"layer {i} is already a mixture of experts")
        layers[i].mlp = MoE(hidden, dense, cfg.num_experts, cfg.top_k).to(
            device=next(dense.parameters()).device)
    return idx


def moe_modules(model: nn.Module) -> list[MoE]:
    """Every MoE layer of a model, in layer order."""
    return [m for m in model.modules() if isinstance(m, MoE)]


def routing_stats(model: nn.Module) -> dict[str, float]:
    """Summed aux loss and the fraction of routed tokens per expert over all MoE layers' last forward."""
    mods = [m for m in moe_modules(model) if m.expert_counts is not None]
    if not mods:
        return {}
    counts = torch.stack([m.expert_counts for m in mods]).sum(0).float()
    frac = counts / counts.sum().clamp(min=1)
    stats = {"aux": float(sum(float(m.aux_loss.detach()) for m in mods))}
    stats.update({f"e{e}": float(f) for e, f in enumerate(frac)})
    return stats
