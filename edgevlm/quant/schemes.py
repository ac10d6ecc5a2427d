"""The table of quantization schemes: one name per `--quant` value, mapped to each format's own mechanism.

Formats bring their quantizers (llama.cpp's, torchao + XNNPACK, onnxruntime.quantization,
coremltools.optimize); this table only names what every part of the model gets, so that the manifest can say
it and the support table can be read off it (docs/architecture.md, Quantization).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgevlm.registry import Registry


@dataclass(frozen=True)
class Scheme:
    name: str  # the `--quant` value
    llm: str  # what the LLM's linear weights get
    vision: str  # what the vision tower + projector get
    embedding: str  # what the token embedding table gets
    bits: float  # effective bits per LLM weight, scales included: the roofline's estimate when a file can't say

    def to_dict(self) -> dict:
        return asdict(self)


FORMATS: Registry[Registry[Scheme]] = Registry("export format")


def _table(fmt: str, *schemes: Scheme) -> None:
    table: Registry[Scheme] = Registry(f"{fmt} quantization")
    for s in schemes:
        table.register(s.name)(s)
    FORMATS.register(fmt)(table)


_table(
    "gguf",
    Scheme("f16", llm="F16", vision="F16 (norms, biases, position embeddings F32)", embedding="F16", bits=16),
    Scheme("q8_0", llm="Q8_0", vision="Q8_0, F16 where rows do not fit", embedding="Q8_0", bits=8.5),
    Scheme("q4_0", llm="Q4_0 (llama.cpp's mix: output Q6_K, Q8_0 where rows are not a multiple of 256)",
           vision="Q8_0, F16 where rows do not fit", embedding="Q4_0", bits=4.5),
    Scheme("q4_k", llm="Q4_K_M (llama.cpp's mix; Q5_0 / Q8_0 per tensor where rows are not a multiple of 256)",
           vision="Q8_0, F16 where rows do not fit", embedding="Q4_K / fallback", bits=4.5),
)
_table(
    "executorch",
    Scheme("fp32", llm="fp32", vision="fp32", embedding="fp32", bits=32),
    Scheme("int8", llm="8da8w (int8 dynamic activations, int8 per-channel weights)",
           vision="8da8w linears (convolutions fp32)", embedding="int8 per row (quantized embedding_byte)", bits=8),
    Scheme("int4", llm="8da4w, group 128 (32 where 128 does not divide the width; 8da8w where neither does), "
           "lm_head included", vision="8da8w linears (convolutions fp32)",
           embedding="int8 per row (quantized embedding_byte)", bits=4.5),
)
_table(
    "onnx",
    Scheme("fp32", llm="fp32", vision="fp32", embedding="fp32", bits=32),
    Scheme("fp16", llm="fp16 (float32 inputs and outputs)", vision="fp16", embedding="fp16", bits=16),
    Scheme("int8", llm="dynamic int8 (quantize_dynamic, per-channel int8 weights)", vision="dynamic int8 per-channel",
           embedding="fp32", bits=8),
    Scheme("int4", llm="MatMulNBits int4, block 32, accuracy level 4 (LM head: dynamic int8 per-channel)",
           vision="dynamic int8 per-channel", embedding="fp32", bits=4.5),
)
_table(
    "coreml",
    Scheme("fp16", llm="fp16", vision="fp16", embedding="fp16", bits=16),
    Scheme("int8", llm="int8 per-channel linear", vision="int8 per-channel linear", embedding="int8 per-channel", bits=8),
    Scheme("int4", llm="int4 per-block (32) linear", vision="int8 per-channel linear", embedding="int8 per-channel", bits=4.5),
)


def scheme(fmt: str, name: str) -> Scheme:
    """The scheme `name` of format `fmt`; unknown names raise listing the known ones."""
    return FORMATS[fmt][name]
