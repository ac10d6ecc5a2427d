"""ONNX export: the runtime contract as three graphs, quantized by onnxruntime's own tools.

A bundle holds `vision.onnx` (tower + projector), `embedding.onnx` (token embedding) and `decoder.onnx`
(the LM on `inputs_embeds` with explicit `past_key_values.%d.key|value` in and `present.%d.key|value` out, the
layout onnxruntime-genai and optimum use; attention is onnxruntime's GroupQueryAttention, so the cache can be one
buffer written in place, and the LM head runs on the last position), all at opset 20 from
`torch.onnx.export(dynamo=True)`. Weights live in
one external data file, `weights.bin`, shared by every graph (identical tensors are stored once), so that no
graph hits protobuf's 2 GB limit and the onnxruntime-genai text graph (`onnx_genai.py`) adds no weight bytes.

Quantization uses onnxruntime.quantization (docs/architecture.md, Quantization): fp16 via
`onnxruntime.transformers.float16` with float32 inputs and outputs kept; int8 via `quantize_dynamic` (MatMul →
MatMulInteger, per-channel uint8 weights, dynamic uint8 activations); int4 as `MatMulNBitsQuantizer` does it,
one weight at a time (`nbits_pass`: block 32, symmetric, accuracy level 4: int8 activations on CPU) with the LM
head at int8; int2 the same at 2 bits, LM head included (lossy on purpose: what the accuracy guard,
export/guard.py, raises parts out of, to dynamic int8 by leaving their nodes out of MatMulNBits: `ONNXKeeper`).
The token embedding stays float. Every graph passes `onnx.checker.check_model(full_check=True)`.
Specs: https://onnx.ai/onnx/repo-docs/ExternalData.html,
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import re
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from edgevlm.export.base import Exporter, Keeper
from edgevlm.export.contract import contract_modules
from edgevlm.export.decoder import PlainDecoder, masked_attention
from edgevlm.models.checkpoint import ReleaseEvery, trim_heap
from edgevlm.quant.schemes import Part, Scheme
from edgevlm.registry import Registry

OPSET = 20
WEIGHTS = "weights.bin"
GRAPH_FILES = {"vision": "vision.onnx", "embedding": "embedding.onnx", "decoder": "decoder.onnx"}
GRAPHS = {"vision_encoder": "vision", "token_embedding": "embedding", "text_decoder": "decoder"}  # part → graph
Graph = onnx.ModelProto | Path  # in memory, or a file with its weights as external data beside it (trace_graphs)
PAST, PRESENT = "past_key_values.%d.%s", "present.%d.%s"
MSFT_DOMAIN = "com.microsoft"  # onnxruntime's contrib operators (GroupQueryAttention, MatMulNBits)
ROUTER = "deepspeed_moe.gate.wg"  # module path of an MoE router, in the exporter's node metadata
ROUTER_NODE = "router/"  # name prefix export_graphs gives the routers' nodes (the metadata is stripped after)
INLINE_BYTES, ALIGN = 1024, 64  # smaller tensors stay inside the graph; offsets in weights.bin 64-byte aligned


def graph_io(graph: onnx.ModelProto) -> dict:
    """Inputs and outputs as the manifest records them: name → [element type, shape with named axes]."""
    def spec(values):
        return {v.name: [onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                         [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]] for v in values}

    return {"inputs": spec(graph.graph.input), "outputs": spec(graph.graph.output)}


# ---- the graphs ---------------------------------------------------------------------------------------------------
class PastPresentDecoder(nn.Module):
    """(inputs_embeds, attention_mask, position_ids, *past) → (logits of the last position, *present).

    The signature onnxruntime-genai's decoder takes (attention_mask (B, P + T) of ones; P = the cached positions),
    with attention done by onnxruntime's `com.microsoft.GroupQueryAttention` (`group_query_attention`), as
    onnxruntime-genai's model builder writes it. That op works two ways on the same graph: `past` holds exactly the
    P cached positions and `present` = past ++ new (what a client that binds nothing does), or `past` is a fixed
    buffer of the whole context bound as its own `present`, written in place (edgevlm's runtime): no copy of the
    cache per token. The LM head runs on the last position only (prefill reads no other row).
    """

    def __init__(self, llm: nn.Module, arch: str):
        super().__init__()
        self.core = PlainDecoder(llm, arch)

    def forward(self, inputs_embeds, attention_mask, position_ids, past: list[torch.Tensor]):
        core, present = self.core, []
        B, T = inputs_embeds.shape[:2]

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            def bsd(x):  # (B, H, T, hd) → (B, T, H·hd), the op's layout
                return x.transpose(1, 2).reshape(B, T, -1)

            out, k, v = torch.ops.edgevlm.group_query_attention(
                bsd(q), bsd(k), bsd(v), past[2 * i], past[2 * i + 1], attention_mask, core.num_heads,
                core.num_kv_heads)
            present.extend([k, v])
            return out.view(B, T, core.num_heads, core.head_dim).transpose(1, 2)  # (B, H, T, hd)

        logits = core.run(inputs_embeds, position_ids, attend, last_only=True)  # (B, 1, V)
        return logits, *present


@torch.library.custom_op("edgevlm::group_query_attention", mutates_args=())
def group_query_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, past_key: torch.Tensor,
                          past_value: torch.Tensor, attention_mask: torch.Tensor, num_heads: int,
                          kv_num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """com.microsoft.GroupQueryAttention as the decoder graph calls it, with `past` holding the cached positions:
    query (B, T, H·hd), key / value (B, T, H_kv·hd), past (B, H_kv, P, hd), attention_mask (B, P + T) → output
    (B, T, H·hd), present = past ++ new (B, H_kv, P + T, hd). Row b attends causally to its first
    sum(attention_mask[b]) positions (the op's `seqlens_k` + 1): right padding only, as the op defines it.
    Export writes the op itself (`_group_query_attention_onnx`); this is its PyTorch meaning, for eager runs."""
    B, T, _ = query.shape
    hd = past_key.shape[-1]
    P = past_key.shape[2]

    def heads(x, n):
        return x.view(B, T, n, hd).transpose(1, 2)

    k = torch.cat([past_key, heads(key, kv_num_heads)], dim=2)  # (B, H_kv, S, hd)
    v = torch.cat([past_value, heads(value, kv_num_heads)], dim=2)
    S = P + T
    visible = (torch.arange(S)[None, :] <= (P + torch.arange(T))[:, None])[None] \
        & (torch.arange(S)[None, None, :] < attention_mask.sum(-1)[:, None, None])  # (B, T, S)
    bias = torch.zeros(visible.shape, dtype=query.dtype).masked_fill(~visible, float("-inf"))[:, None]
    out = masked_attention(heads(query, num_heads), k, v, bias)  # (B, H, T, hd)
    return out.transpose(1, 2).reshape(B, T, num_heads * hd), k, v


@group_query_attention.register_fake
def _(query, key, value, past_key, past_value, attention_mask, num_heads, kv_num_heads):
    B, T, _ = query.shape
    present = (B, past_key.shape[1], past_key.shape[2] + T, past_key.shape[3])
    return query.new_empty(query.shape), past_key.new_empty(present), past_value.new_empty(present)


def _register_gqa_schema() -> None:
    """Declare com.microsoft.GroupQueryAttention (the inputs edgevlm feeds it) to `onnx.defs`: the exporter builds
    nodes from registered schemas only, and onnxruntime's contrib schemas live in onnxruntime, not in `onnx`.
    Spec: https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.GroupQueryAttention
    """
    if onnx.defs.has("GroupQueryAttention", MSFT_DOMAIN):
        return
    io = onnx.defs.OpSchema.FormalParameter
    attr = onnx.defs.OpSchema.Attribute
    onnx.defs.register_schema(onnx.defs.OpSchema(
        "GroupQueryAttention", MSFT_DOMAIN, 1,
        inputs=[io(n, "T") for n in ("query", "key", "value", "past_key", "past_value")]
        + [io("seqlens_k", "M"), io("total_sequence_length", "M")],
        outputs=[io(n, "T") for n in ("output", "present_key", "present_value")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[attr("num_heads", onnx.defs.OpSchema.AttrType.INT, ""),
                    attr("kv_num_heads", onnx.defs.OpSchema.AttrType.INT, "")]))


def _group_query_attention_onnx(query, key, value, past_key, past_value, attention_mask, num_heads: int,
                                kv_num_heads: int):
    """The op's ONNX: seqlens_k = sum(attention_mask) − 1 per row, total_sequence_length = the mask's length,
    computed in the graph as onnxruntime-genai's builder does, so callers feed only the genai inputs."""
    from onnxscript import opset20 as op
    from onnxscript.values import Opset

    int32 = TensorProto.INT32
    seqlens = op.Cast(op.Sub(op.ReduceSum(attention_mask, op.Constant(value_ints=[1]), keepdims=0),
                             op.Constant(value_int=1)), to=int32)
    total = op.Cast(op.Squeeze(op.Shape(attention_mask, start=1, end=2)), to=int32)
    return Opset(MSFT_DOMAIN, 1).GroupQueryAttention(query, key, value, past_key, past_value, seqlens, total,
                                                     num_heads=num_heads, kv_num_heads=kv_num_heads)


def kv_names(layers: int, pattern: str) -> list[str]:
    return [pattern % (i, kv) for i in range(layers) for kv in ("key", "value")]


def export_graphs(model, mark_parts: bool = False) -> dict[str, onnx.ModelProto]:
    """The three fp32 graphs of an EdgeVLM, with named dynamic axes; with `mark_parts`, the decoder's nodes are
    named after the guard part they belong to (`part_nodes`)."""
    return dict(trace_graphs(model, mark_parts))


def trace_graphs(model, mark_parts: bool = False, into: Path | None = None) -> Iterator[tuple[str, Graph]]:
    """`export_graphs` one graph at a time (vision, embedding, decoder): a caller that quantizes each before
    the next is traced never holds two float32 graphs. With `into`, each graph is saved there (its weights as
    external data, streamed from the model) and its path yielded: no float32 graph is held in memory at all
    until a quantizer loads it."""
    batch, seq, past = torch.export.Dim("batch"), torch.export.Dim("sequence"), torch.export.Dim("past", min=0)
    parts = contract_modules(model.vision, model.projector, model.llm,
                             lambda llm: PastPresentDecoder(llm, model.cfg.llm.arch))
    dec = parts["text_decoder"]
    core = dec.core
    L, D = core.num_layers, model.cfg.llm.hidden_size
    size = model.cfg.vision.image_size
    empty = [torch.zeros(1, core.num_kv_heads, 3, core.head_dim) for _ in range(2 * L)]  # (1, H_kv, P, hd)
    specs = {
        "vision": (parts["vision_encoder"], (torch.zeros(1, 3, size, size),), ["pixel_values"], ["image_embeds"],
                   ({0: batch},)),
        "embedding": (parts["token_embedding"], (torch.zeros(1, 4, dtype=torch.long),), ["input_ids"],
                      ["inputs_embeds"], ({0: batch, 1: seq},)),
        "decoder": (dec, (torch.zeros(1, 4, D), torch.ones(1, 7, dtype=torch.long), torch.arange(3, 7)[None], empty),
                    ["inputs_embeds", "attention_mask", "position_ids", *kv_names(L, PAST)],
                    ["logits", *kv_names(L, PRESENT)],
                    ({0: batch, 1: seq}, {0: batch, 1: torch.export.Dim.DYNAMIC}, {0: batch, 1: seq},
                     [{0: batch, 2: past}] * (2 * L))),
    }
    _register_gqa_schema()
    table = {torch.ops.edgevlm.group_query_attention.default: _group_query_attention_onnx}
    for name, (module, args, inputs, outputs, dynamic) in specs.items():
        with torch.no_grad(), quiet():
            program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=inputs,
                                        output_names=outputs, dynamic_shapes=dynamic, verbose=False,
                                        custom_translation_table=table)
            if into is None:
                graph = serialize(program.model, model.page_out_weights)
            else:
                path = into / GRAPH_FILES[name]
                save_streamed(program.model, path, model.page_out_weights)
                graph = onnx.load(path, load_external_data=False)
        del program
        if name == "decoder":
            if mark_parts:
                _mark_parts(graph.graph, L)
            _name_total_axis(graph)
        _mark_routers(graph.graph)
        _strip_debug_info(graph.graph)
        if into is not None:
            onnx.save(graph, path)  # the marks, beside the external weights already written
        yield name, graph if into is None else path


def serialize(graph: ir.Model, release: Callable[[], None]) -> onnx.ModelProto:
    """The exported program's `model_proto`, handing back the model's mapped pages as its initializers are
    serialized (`ReleaseEvery`): the ModelProto holds its own copy of the weights; without this both sets were
    resident at the end."""
    releaser = ReleaseEvery(release)

    def reading(tensor):
        def read():
            releaser.count(tensor.nbytes)
            return tensor
        return read

    for value in graph.graph.initializers.values():
        t = value.const_value
        if t is not None:
            value.const_value = ir.LazyTensor(reading(t), dtype=t.dtype, shape=t.shape, name=t.name)
    proto = ir.serde.serialize_model(graph)
    release()
    return proto


def save_streamed(graph: ir.Model, path: Path, release: Callable[[], None]) -> None:
    """Save the exported program at `path`, its initializers as external data beside it written one at a time,
    handing back the model's mapped pages as they are written (`ReleaseEvery`)."""
    releaser = ReleaseEvery(release)
    ir.save(graph, path, external_data=path.with_suffix(".data").name, max_workers=1,
            callback=lambda tensor, info: releaser.count(tensor.nbytes), max_in_flight_bytes=releaser.every,
            size_threshold_bytes=INLINE_BYTES)  # what a bundle inlines stays inline
    release()


def load(graph: Graph) -> onnx.ModelProto:
    """A graph in memory: `graph` itself, or the file `graph` names with its external weights."""
    return graph if isinstance(graph, onnx.ModelProto) else onnx.load(graph)


def _mark_routers(graph: onnx.GraphProto) -> None:
    """Name the nodes the exporter traced inside an MoE router's module (see `router_nodes`)."""
    for node in graph.node:
        if any(m.key == "namespace" and f"{ROUTER}:" in m.value for m in node.metadata_props):
            node.name = ROUTER_NODE + node.name


def _decoder_part(namespace: str, layers: int) -> str | None:
    """The guard part (export.guard.PARTS) of a decoder node traced inside module path `namespace`."""
    if "core.lm_head:" in namespace:
        return "lm_head"
    layer = re.search(r"core\.layers\.(\d+)[.:]", namespace)
    if layer is None:
        return None
    i = int(layer.group(1))
    return "first_layer" if i == 0 else "last_layer" if i == layers - 1 else "middle_layers"


def _mark_parts(graph: onnx.GraphProto, layers: int) -> None:
    """Prefix the decoder's nodes with their guard part (`part/`), read from the exporter's module paths."""
    for node in graph.node:
        namespace = next((m.value for m in node.metadata_props if m.key == "namespace"), "")
        part = _decoder_part(namespace, layers)
        if part is not None:
            node.name = f"{part}/{node.name}"


def part_nodes(graph: onnx.ModelProto, part: str) -> list[str]:
    """Names of the MatMuls of guard part `part` in a graph traced with `mark_parts` (routers excluded)."""
    return [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.name.startswith(f"{part}/")]


def _strip_debug_info(graph: onnx.GraphProto) -> None:
    """Drop the exporter's stack traces and program signature: most of a graph file's bytes, no semantics."""
    del graph.metadata_props[:]
    for item in [*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del item.metadata_props[:]


def _name_total_axis(decoder: onnx.ModelProto) -> None:
    """The exporter names the mask's and presents' length axis after an internal symbol; give it one name."""
    for v in [*decoder.graph.input, *decoder.graph.output]:
        if v.name == "attention_mask" or v.name.startswith("present."):
            dims = v.type.tensor_type.shape.dim
            dims[1 if v.name == "attention_mask" else 2].dim_param = "total_sequence"


@contextlib.contextmanager
def quiet():
    """Silence the exporter's and quantizers' per-node logging and advice."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "onnxruntime")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


# ---- quantization mechanisms: Graph → ModelProto -------------------------------------------------------------------
def to_fp16(graph: Graph) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = OnnxModel(convert_float_to_float16(load(graph), keep_io_types=True))
    half.topological_sort()  # the converter appends the float32 → float16 casts of the inputs last
    return half.model


def router_nodes(graph: onnx.ModelProto) -> list[str]:
    """MatMuls of MoE routers (edgevlm.models.moe), which stay float: rounding a router flips expert choices."""
    return [n.name for n in graph.graph.node if n.name.startswith(ROUTER_NODE)]


def dynamic_int8(graph: Graph, nodes: list[str] | None = None) -> onnx.ModelProto:
    """MatMul → MatMulInteger with 8-bit weights per output channel (`nodes`, or all but routers).

    Per-tensor weights lost a point on `shapes` (quickstart model, 103-question slice: 0.427 vs PyTorch 0.437);
    per-channel lost none. The weights are uint8 with a zero point per channel (U8U8), not int8 (U8S8): on x86
    CPUs without VNNI, onnxruntime runs U8S8 with an instruction that saturates 16-bit pair sums, so the same
    bundle answered differently by host (tests' tiny model, AMD EPYC with AVX2 only: 76% of answers identical to
    PyTorch with int8 weights, 100% with uint8; 100% both ways on an AVX512-VNNI Xeon). U8U8 never saturates.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    near = None if isinstance(graph, onnx.ModelProto) else graph.parent  # a file's temporaries beside it
    with tempfile.TemporaryDirectory(dir=near) as tmp, quiet():
        out = Path(tmp) / "q.onnx"
        if isinstance(graph, onnx.ModelProto):
            # from a file: given a ModelProto, quantize_dynamic holds it, a deep copy and a reloaded copy at once.
            # Saving with external data moves the weights out of `graph` (consumed: callers use what is returned)
            routers, src = router_nodes(graph), Path(tmp) / "in.onnx"
            onnx.save_model(graph, src, save_as_external_data=True, location="in.weights")
        else:
            routers, src = router_nodes(onnx.load(graph, load_external_data=False)), graph
        quantize_dynamic(src, out, op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_quantize=nodes,
                         nodes_to_exclude=routers, weight_type=QuantType.QUInt8, use_external_data_format=True)
        return onnx.load(out)


@dataclass(frozen=True)
class NBits:
    """MatMul → MatMulNBits (`bits`, block `block`, symmetric, accuracy level 4: int8 activations on CPU); the
    LM head too unless `int8_head`, and the nodes in `keep` (what the accuracy guard raised) get dynamic int8.

    An int4 LM head cost two points on `shapes` (quickstart model, 103-question slice: 0.417 vs PyTorch 0.437);
    an int8 one costs none (0.437) and adds 1% to the tiny int4 bundle.
    """

    bits: int
    block: int
    int8_head: bool

    def __call__(self, graph: Graph, keep: tuple[str, ...] = ()) -> onnx.ModelProto:
        """From a file (`Graph` as a path), the graph is read without its weights and each float32 weight is read
        only while it is quantized (`nbits_pass`); the int4 graph goes to the int8 pass through a file."""
        model = graph if isinstance(graph, onnx.ModelProto) else onnx.load(graph, load_external_data=False)
        base = None if isinstance(graph, onnx.ModelProto) else graph.parent
        head = [n.name for n in model.graph.node if n.op_type == "MatMul" and "logits" in n.output]
        int8 = (head if self.int8_head else []) + list(keep)
        nbits_pass(model, base, self.bits, self.block, exclude={*int8, *router_nodes(model)})
        if base is None:
            return dynamic_int8(model, nodes=int8) if int8 else model
        if not int8:
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
            return model
        # beside the traced file, whose float32 weights (LM head, norms) it still names by relative location
        mid = graph.with_name(f"{graph.stem}.nbits.onnx")
        onnx.save_model(model, mid, save_as_external_data=True, location=mid.with_suffix(".data").name)
        del model
        try:
            return dynamic_int8(mid, nodes=int8)
        finally:
            mid.unlink()
            mid.with_suffix(".data").unlink()


def nbits_pass(model: onnx.ModelProto, base: Path | None, bits: int, block: int, exclude: set[str]) -> None:
    """Rewrite `model` in place as onnxruntime's `MatMulNBitsQuantizer` does (default algorithm, QOperator format:
    the same kernel, node and initializer names, so the same bytes), one weight at a time: a float32 weight
    stored as external data (relative to `base`) is read only while it is quantized. The whole-graph quantizer
    loads every float32 weight first, which was the ONNX export's peak (4.5 bytes per parameter at 1.7 B)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 DefaultWeightOnlyQuantizer)

    kernel = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True,
                                                                     accuracy_level=4, bits=bits))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" and node.name not in exclude else None
        if w is None or len(w.dims) != 2:
            nodes.append(node)
            continue
        packed, scales, _ = kernel.qbits_block_quant(_read_initializer(w, base))
        quantized = [ir.serde.serialize_tensor(ir.Tensor(packed, name=f"{w.name}_Q{bits}")),
                     ir.serde.serialize_tensor(ir.Tensor(scales, name=f"{w.name}_scales"))]
        graph.initializer.extend(quantized)
        K, N = w.dims
        nodes.append(onnx.helper.make_node("MatMulNBits", [node.input[0], *(t.name for t in quantized)],
                                           node.output, name=f"{node.name}_Q{bits}" if node.name else "",
                                           domain=MSFT_DOMAIN, K=K, N=N, bits=bits, block_size=block,
                                           accuracy_level=4))
    graph.ClearField("node")
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    if not any(o.domain == MSFT_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MSFT_DOMAIN, 1))


def _read_initializer(t: TensorProto, base: Path | None) -> np.ndarray:
    """An initializer's values, from its external data file under `base` if it has one (leaving `t` as it is)."""
    if not onnx.external_data_helper.uses_external_data(t):
        return numpy_helper.to_array(t)
    detached = TensorProto()
    detached.CopyFrom(t)
    onnx.external_data_helper.load_external_data_for_tensor(detached, str(base))
    return numpy_helper.to_array(detached)


# the format's quantizers (ModelProto → ModelProto), by the names the `onnx` rows of quant/schemes.py give
MECHANISMS: Registry[Callable[[Graph], onnx.ModelProto]] = Registry("onnx quantization mechanism")
MECHANISMS.register("fp16")(to_fp16)
MECHANISMS.register("dynamic_int8")(dynamic_int8)
MECHANISMS.register("int4_block32")(NBits(4, 32, int8_head=True))
MECHANISMS.register("int2_block32")(NBits(2, 32, int8_head=False))


# ---- files --------------------------------------------------------------------------------------------------------
def externalize(graphs: list[onnx.ModelProto], path: Path) -> None:
    """Move the large initializers of `graphs` into the one data file `path`, identical tensors once.

    Done before any graph is composed or saved, so that no step holds a > 2 GB protobuf.
    """
    stored: dict[tuple, tuple[int, int]] = {}  # (dtype, sha256) → (offset, length)
    with open(path, "wb") as data:
        for t in (t for graph in graphs for t in graph.graph.initializer):
            raw = t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()
            if len(raw) < INLINE_BYTES:
                continue
            key = (t.data_type, hashlib.sha256(raw).digest())
            if key not in stored:
                data.write(b"\0" * (-data.tell() % ALIGN))
                stored[key] = (data.tell(), len(raw))
                data.write(raw)
            _make_external(t, *stored[key])


def _make_external(t: TensorProto, offset: int, length: int) -> None:
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "raw_data"):
        t.ClearField(field)
    del t.external_data[:]
    for key, value in (("location", WEIGHTS), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    t.data_location = TensorProto.EXTERNAL


def op_counts(graph: onnx.ModelProto, ops=("MatMul", "MatMulInteger", "MatMulNBits", "Conv", "Gather")) -> dict:
    counts = Counter(n.op_type for n in graph.graph.node)
    return {op: counts[op] for op in ops if counts[op]}


def write(model, scheme: Scheme, out_dir: Path, graphs: dict[str, onnx.ModelProto] | None = None,
          keep: frozenset[str] = frozenset()) -> dict:
    """Export, quantize, save and check the three graphs (+ the onnxruntime-genai text graph); manifest fields.
    `graphs`: already traced (the guard's `Keeper`, with `mark_parts`); `keep`: guard parts kept at `KEPT`."""
    from edgevlm.export import onnx_genai

    mechanisms = {GRAPHS[part]: (part, name) for part, name in scheme.mechanisms().items()}  # others stay fp32
    with tempfile.TemporaryDirectory(dir=out_dir) as traced_dir:
        traced = trace_graphs(model, into=Path(traced_dir)) if graphs is None else graphs.items()
        graphs = {}
        for graph_name, graph in traced:  # each quantized before the next is traced
            graphs[graph_name] = (_quantize(graph, *mechanisms[graph_name], keep) if graph_name in mechanisms
                                  else load(graph))
            trim_heap()  # what the quantizer freed (at 1.7 B: 2.9 GiB resident after the vision graph's)
    fields = {"graphs": {name: {"file": GRAPH_FILES[name], **graph_io(g), "ops": op_counts(g)}
                         for name, g in graphs.items()}}
    externalize(list(graphs.values()), out_dir / WEIGHTS)
    files = {GRAPH_FILES[name]: g for name, g in graphs.items()}
    files[onnx_genai.TEXT_GRAPH] = onnx_genai.text_graph(graphs["embedding"], graphs["decoder"])
    for file, graph in files.items():
        onnx.save(graph, out_dir / file)
        onnx.checker.check_model(str(out_dir / file), full_check=True)
    inputs = fields["graphs"]["decoder"]["inputs"]
    _, kv_heads, _, head_dim = inputs[PAST % (0, "key")][1]  # (batch, H_kv, past, hd)
    fields.update({
        "opset": OPSET,
        "weights": WEIGHTS,
        "execution_provider": "CPUExecutionProvider",
        "io_dtype": "float32",  # fp16 keeps float32 inputs / outputs (logits, embeddings, KV cache)
        "kv_cache": {"layers": sum(name.startswith("past_key_values.") for name in inputs) // 2, "kv_heads": kv_heads,
                     "head_dim": head_dim, "past": PAST, "present": PRESENT,
                     "shared_buffer": True},  # GroupQueryAttention: a past may be bound as its own present
        "genai": onnx_genai.write_config(model, out_dir, head_dim),
    })
    return fields


# ---- the accuracy guard (export.guard): parts raised out of an NBits mechanism to dynamic int8 ------------------
KEPT, KEPT_GETS = "dynamic_int8", "dynamic int8 per-channel"
DECODER_PARTS = ("lm_head", "first_layer", "middle_layers", "last_layer")


def _quantize(graph: Graph, part: str, name: str, keep: frozenset[str]) -> onnx.ModelProto:
    """`part`'s graph through its scheme mechanism `name`, the guard parts in `keep` through `KEPT` instead."""
    mechanism = MECHANISMS[name]
    if not isinstance(mechanism, NBits):
        return mechanism(graph)  # nothing lower than int8 to raise (keepable_parts offers none)
    if part == "vision_encoder":
        return MECHANISMS[KEPT](graph) if part in keep else mechanism(graph)
    return mechanism(graph, keep=tuple(n for p in DECODER_PARTS if p in keep for n in part_nodes(graph, p)))


def keepable_parts(scheme: Scheme, decoder: onnx.ModelProto) -> dict[str, str]:
    """Guard parts below int8 in `scheme` → what they get kept; `decoder` traced with `mark_parts`."""
    def lowered(p: Part) -> NBits | None:
        mechanism = None if p.mechanism is None else MECHANISMS[p.mechanism]
        return mechanism if isinstance(mechanism, NBits) else None

    parts = ["vision_encoder"] if lowered(scheme.vision_encoder) else []
    text = lowered(scheme.text_decoder)
    if text is not None:
        parts += [p for p in DECODER_PARTS if part_nodes(decoder, p) and not (p == "lm_head" and text.int8_head)]
    return {p: KEPT_GETS for p in parts}


class ONNXKeeper(Keeper):
    """Traces the model once (`mark_parts`); each write quantizes a copy of that trace."""

    def __init__(self, model, scheme: Scheme):
        self.model, self.scheme = model, scheme
        self.traced = export_graphs(model, mark_parts=True)
        self.parts = keepable_parts(scheme, self.traced["decoder"])

    def write(self, out_dir: Path, keep: frozenset[str]) -> dict:
        return write(self.model, self.scheme, out_dir, copy.deepcopy(self.traced), keep)


class ONNX(Exporter):
    mechanisms = MECHANISMS
    guard_parts = ("vision_encoder", *DECODER_PARTS)

    def write(self, model, scheme: Scheme, out_dir: Path) -> dict:
        return write(model, scheme, out_dir)

    def keeper(self, model, scheme: Scheme) -> Keeper:
        return ONNXKeeper(model, scheme)


EXPORTER = ONNX()
