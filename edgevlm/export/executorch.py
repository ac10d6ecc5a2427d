"""ExecuTorch export: one `model.pte` carrying the runtime contract, lowered to XNNPACK.

The program follows ExecuTorch's own LLaVA export (examples/models/llava/export_llava.py in the executorch
repository): three methods, `vision_encoder`, `token_embedding` and `text_decoder` (the KV cache as mutable
buffers inside the program, a dynamic prefill length), plus the constant metadata methods ExecuTorch's LLM
runners read (`get_max_seq_len`, `get_eos_ids`, ...). The same file therefore runs in our runtime
(edgevlm/runtimes/executorch.py) and in `executorch.extension.llm.runner.MultimodalRunner`, the runner behind
ExecuTorch's Android and iOS demo apps, which calls

- `vision_encoder(image uint8 (1, 3, S, S)) -> (1, N_img, D)`: the runner passes the app's resized RGB bytes
  unchanged (its `Image` holds uint8 or float data, matched to the method's input dtype), so rescaling and
  normalization happen inside the program, as in ExecuTorch's LLaVA;
- `token_embedding(ids int64 (1, T)) -> (1, T, D)`;
- `text_decoder(embeds (1, T, D), input_pos int64 (1,)) -> logits (1, V)` of the last position (the runner
  samples from the last row; one row keeps a prefill's output small).

Quantization maps the scheme table (edgevlm/quant/schemes.py) onto torchao's `quantize_` configs that XNNPACK
runs: 8-bit dynamic activations with int8 (per channel) or int4 (per group) weights for linears, an int8
per-row embedding table run by ExecuTorch's quantized kernels. Weight-only linear configs are not used: they
lower to XNNPACK and silently return wrong numbers (docs/dependencies.md).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from executorch.backends.xnnpack._passes.remove_noop_expand_copy_pass import RemoveNoopExpandCopyPass
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
from torch import nn
from torch.export import Dim, export
from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
from torchao.quantization.granularity import PerAxis, PerGroup

from edgevlm.export.base import Exporter
from edgevlm.export.contract import contract_modules
from edgevlm.export.decoder import PlainDecoder
from edgevlm.models.checkpoint import ReleaseEvery, trim_heap
from edgevlm.quant.schemes import Scheme
from edgevlm.registry import Registry

PTE = "model.pte"
INT4_GROUPS = (128, 32)  # 8da4w group size: the first that divides a linear's input width
ROUTER = "deepspeed_moe.gate.wg"  # an MoE layer's router (edgevlm.models.moe): never quantized


class TextDecoder(nn.Module):
    """`text_decoder(embeds (1, T, D), input_pos (1,)) → logits (1, V)` on ExecuTorch's LLM custom ops.

    As ExecuTorch's own Llama export does (examples/models/llama/source_transformation/sdpa.py there), the
    cache is one (1, S, H_kv, hd) buffer per layer and kind, `llama::update_cache` writes the T new positions
    into it in place, and `llama::custom_sdpa` attends causally to positions < input_pos + T only. A cache
    written by slice assignment instead (decoder.StaticCacheDecoder) is functionalized into a copy of the whole
    cache per call and attended over all `max_context` positions by portable kernels: at 1.4 B parameters that
    is 0.8 GB copied per decoded token (docs/benchmarks.md). The LM head runs on the last position only.
    """

    def __init__(self, llm: nn.Module, arch: str, max_context: int):
        super().__init__()
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  registers torch.ops.llama

        self.core = PlainDecoder(llm, arch)
        self.max_context = max_context
        shape = (1, max_context, self.core.num_kv_heads, self.core.head_dim)  # the ops' (B, S, H_kv, hd)
        # left unwritten, so exporting does not make them resident (0.8 GB at 1.7 B): `custom_sdpa` reads only
        # positions that `update_cache` wrote, and the program keeps a mutated buffer's shape and dtype only
        for i in range(self.core.num_layers):
            self.register_buffer(f"k_cache_{i}", torch.empty(shape), persistent=False)
            self.register_buffer(f"v_cache_{i}", torch.empty(shape), persistent=False)

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        T = embeds.shape[1]
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start + T <= self.max_context)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k_cache, v_cache = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
            torch.ops.llama.update_cache(k.transpose(1, 2).contiguous(), k_cache, start)  # (1, T, H_kv, hd)
            torch.ops.llama.update_cache(v.transpose(1, 2).contiguous(), v_cache, start)
            out = torch.ops.llama.custom_sdpa(q.transpose(1, 2).contiguous(), k_cache, v_cache, start, None, 0, True)
            return out.transpose(1, 2)  # (1, H, T, hd)

        return self.core.run(embeds, start + torch.arange(T), attend, last_only=True)[:, -1]  # (1, V)


class MatmulMeanLayerNorm(nn.Module):
    """`nn.LayerNorm` over the last dimension with its two means written as matmuls with a 1/D column.

    ExecuTorch's XNNPACK partitioner takes no layer norm, and a mean only over dims (2, 3) of a 4-D tensor, so
    each `native_layer_norm` of a ViT ran in a single-threaded portable kernel and cut the tower into one XNNPACK
    partition per norm (47 in ViT-L's 23 used layers). As matmuls (fp32: the quantizers pick `nn.Linear`s only)
    the whole tower is one XNNPACK delegate (real-size image encode 0.92x on an AVX2 EPYC); same arithmetic up
    to the order of the sums (docs/benchmarks.md).
    """

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        width = norm.normalized_shape[-1]
        self.register_buffer("mean_column", torch.full((1, width), 1.0 / width), persistent=False)
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = x - F.linear(x, self.mean_column)
        y = centered * torch.rsqrt(F.linear(centered * centered, self.mean_column) + self.eps)
        if self.weight is not None:
            y = y * self.weight
        return y if self.bias is None else y + self.bias


def _layer_norms_as_matmuls(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.LayerNorm and len(child.normalized_shape) == 1:  # exactly: no subclass's layout
            setattr(module, name, MatmulMeanLayerNorm(child))
        else:
            _layer_norms_as_matmuls(child)


def contract(model, max_context: int) -> dict[str, nn.Module]:
    """The three methods over a copy of `model`'s modules that shares its tensors: quantizing replaces the copy's
    weights (torchao's `quantize_` assigns new parameters and never writes into the old ones), so `model` stays
    untouched and no float32 copy of the weights is made (a clone of every tensor was the export's peak)."""
    modules = nn.ModuleDict({"vision": model.vision, "projector": model.projector, "llm": model.llm})
    parts = copy.deepcopy(modules, {id(t): t for t in [*modules.parameters(), *modules.buffers()]})
    # the tower's attention as matmul + softmax, which XNNPACK runs: traced from sdpa it decomposes into a
    # "safe softmax" (eq / any / where over every head's N x N scores) that runs in portable kernels, half
    # of a real-size image encode (ViT-L/336, 2 threads: 1.91 s with sdpa, 0.97 s eager; docs/benchmarks.md)
    parts["vision"].tower.set_attn_implementation("eager")
    _layer_norms_as_matmuls(parts["vision"])  # the projectors have none (LDP's are channel LayerNorm2d)
    table = parts["llm"].get_input_embeddings()
    table.padding_idx = None  # a padding index blocks the quantized embedding kernel (docs/dependencies.md)
    return contract_modules(parts["vision"], parts["projector"], parts["llm"],
                            lambda llm: TextDecoder(llm, model.cfg.llm.arch, max_context), model.preprocess)


# ---- quantization: the mechanisms a scheme's parts name ------------------------------------------------------
def _is_linear(m: nn.Module, fqn: str = "") -> bool:
    """A linear to quantize: every one but MoE routers, which stay fp32 (a router's output is a discrete choice
    of experts that rounding flips, and it is E x D weights: nothing to save)."""
    return isinstance(m, nn.Linear) and not fqn.endswith(ROUTER)


def _linear_8da(bits: int, group: int | None) -> Int8DynamicActivationIntxWeightConfig:
    """8-bit dynamic activations, `bits`-bit weights per output channel (group None) or per `group` inputs."""
    return Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int8 if bits == 8 else torch.int4,
        weight_granularity=PerAxis(0) if group is None else PerGroup(group),
    )


def _counted(pick: Callable[[nn.Module, str], bool], done: ReleaseEvery) -> Callable[[nn.Module, str], bool]:
    """`pick` as a `quantize_` filter that counts the weight bytes it picks: `quantize_` replaces each picked
    module before it asks about the next, so `done` hands back the pages of weights already quantized."""
    def counted(m: nn.Module, fqn: str) -> bool:
        picked = pick(m, fqn)
        if picked:
            done.count(m.weight.nbytes)
        return picked
    return counted


def _quant_int8_linears(module: nn.Module, done: ReleaseEvery) -> None:
    quantize_(module, _linear_8da(8, None), filter_fn=_counted(_is_linear, done))


def _quant_int4_linears(module: nn.Module, done: ReleaseEvery) -> None:
    """8da4w with the first group in INT4_GROUPS that divides a linear's input width; 8da8w where none does."""
    groups = {fqn: next((g for g in INT4_GROUPS if m.in_features % g == 0), None)
              for fqn, m in module.named_modules() if _is_linear(m, fqn)}
    for group in (*INT4_GROUPS, None):
        config = _linear_8da(8, None) if group is None else _linear_8da(4, group)
        quantize_(module, config, filter_fn=_counted(lambda m, fqn, g=group: fqn in groups and groups[fqn] == g,
                                                     done))


def _quant_int8_embedding(module: nn.Module, done: ReleaseEvery) -> None:
    """int8 per-row table: a gather of dequantized rows that to_executorch fuses into one quantized kernel."""
    config = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    quantize_(module, config, filter_fn=_counted(lambda m, _: isinstance(m, nn.Embedding), done))


# the format's quantizers, by the names the `executorch` rows of quant/schemes.py give
MECHANISMS: Registry[Callable[[nn.Module, ReleaseEvery], None]] = Registry("executorch quantization mechanism")
MECHANISMS.register("8da8w")(_quant_int8_linears)
MECHANISMS.register("8da4w")(_quant_int4_linears)
MECHANISMS.register("int8_rows")(_quant_int8_embedding)


def quantize(methods: dict[str, nn.Module], scheme: Scheme, release: Callable[[], None] = lambda: None) -> None:
    """Each method's modules, in place, by its part's mechanism; parts without one stay fp32. `release` hands
    back the float32 weights' pages as they are quantized (`EdgeVLM.page_out_weights`, every 256 MB)."""
    done = ReleaseEvery(release)
    for part, name in scheme.mechanisms().items():
        MECHANISMS[name](methods[part], done)
    release()


# ---- torch.export → edge → XNNPACK → .pte -------------------------------------------------------------------
def export_programs(methods: dict[str, nn.Module], image_size: int, hidden: int, max_context: int) -> dict:
    seq = Dim("seq", min=1, max=max_context)
    image = torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8)
    ids, embeds, pos = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, hidden), torch.tensor([0])
    with torch.no_grad():
        return {
            "vision_encoder": export(methods["vision_encoder"], (image,), strict=False),
            "token_embedding": export(methods["token_embedding"], (ids,), dynamic_shapes=({1: seq},), strict=True),
            "text_decoder": export(methods["text_decoder"], (embeds, pos), dynamic_shapes=({1: seq}, None),
                                   strict=True),
        }


def runner_metadata(model, max_context: int) -> dict:
    """The constant methods ExecuTorch's LLM runners read (extension/llm/runner/constants.h)."""
    tok = model.tokenizer
    return {
        "get_max_seq_len": max_context,
        "get_max_context_len": max_context,
        "get_vocab_size": model.cfg.llm.vocab_size,
        "get_bos_id": tok.bos_id,
        "get_eos_ids": [tok.eos_id],
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": True,  # llama::custom_sdpa over the cache (TextDecoder)
        "enable_dynamic_shape": True,
    }


def to_edge(programs: dict, metadata: dict | None = None):
    """torch.export programs → edge programs, what XNNPACK takes delegated to it."""
    # batched matmuls (the tower's eager attention) trace with no-op `expand_copy`s that XNNPACK does not take:
    # removed, they no longer split the tower into one partition per matmul
    return to_edge_transform_and_lower(programs, transform_passes=[RemoveNoopExpandCopyPass()],
                                       partitioner=[XnnpackPartitioner()], constant_methods=metadata)


def lower(programs: dict, metadata: dict) -> bytes:
    edge = to_edge(programs, metadata)
    trim_heap()  # what lowering freed (at 1.7 B: 6.5 GiB resident after it, 4.3 GiB once trimmed)
    # quant fusion turns the int8 embedding's dequantize + gather into quantized_decomposed::embedding_byte
    return edge.to_executorch(ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)).buffer


def write(model, scheme: Scheme, out_dir: Path) -> dict:
    """Write `model.pte` for `scheme` into `out_dir`; return the manifest's runtime fields."""
    max_context = model.cfg.llm.max_position_embeddings
    methods = contract(model, max_context)
    quantize(methods, scheme, lambda: (model.page_out_weights(), trim_heap()))
    size = model.cfg.vision.image_size
    programs = export_programs(methods, size, model.cfg.llm.hidden_size, max_context)
    del methods
    trim_heap()  # what torch.export freed (at 1.7 B: 5.9 GiB resident after it, 2.9 GiB once trimmed)
    (out_dir / PTE).write_bytes(lower(programs, runner_metadata(model, max_context)))
    del programs
    trim_heap()  # before the bundle is loaded to verify it
    return {
        "program": PTE,
        "backend": "xnnpack",
        "methods": {
            "vision_encoder": {"inputs": [f"image uint8 [1,3,{size},{size}] RGB, resized as `image`, 0..255"],
                               "outputs": [f"image_embeds f32 [1,{model.num_image_tokens},D]"],
                               "normalizes": "rescale, mean, std of `image` applied inside the program"},
            "token_embedding": {"inputs": ["input_ids i64 [1,T]"], "outputs": ["embeds f32 [1,T,D]"]},
            "text_decoder": {"inputs": ["embeds f32 [1,T,D]", "input_pos i64 [1]"],
                             "outputs": ["logits f32 [1,V] of the last position"],
                             "kv_cache": "mutable buffers in the program (llama::update_cache, llama::custom_sdpa)"},
        },
        "metadata_methods": runner_metadata(model, max_context),
        "multimodal_runner": "executorch.extension.llm.runner.MultimodalRunner(model.pte, tokenizer.json): pass "
                             "BOS as a token input (the runner adds none for a tokenizer.json), the text before "
                             "<image>, the uint8 image, the text after",
        "max_context": max_context,
    }


class ExecuTorch(Exporter):
    mechanisms = MECHANISMS

    def write(self, model, scheme: Scheme, out_dir: Path) -> dict:
        return write(model, scheme, out_dir)


EXPORTER = ExecuTorch()
