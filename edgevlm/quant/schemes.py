"""The table of quantization schemes: per format, one row per `--quant` value, each part's mechanism in it.

Formats bring their quantizers (llama.cpp's, torchao + XNNPACK, onnxruntime.quantization,
coremltools.optimize); a row names, for each part of the runtime contract (`PARTS`), what its weights get in
words (the manifest's `quantization` section) and which of the format's quantizers does it (`Part.mechanism`,
a name its exporter resolves: `edgevlm.export.base.Exporter.mechanism`), so that the manifest can say it and
the support table can be read off it (docs/architecture.md, Quantization). `tests/test_tables.py` checks that every
mechanism named here exists in its format. No torch here: the CLI and the benchmarks read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgevlm.registry import Registry

# The runtime contract's three functions (docs/bundle-spec.md, section 7), the one vocabulary for a model's parts.
PARTS = ("vision_encoder", "token_embedding", "text_decoder")


@dataclass(frozen=True)
class Part:
    gets: str  # what the part's weights get, in words
    mechanism: str | None = None  # the format's quantizer for it; None: the exported float weights as they are


@dataclass(frozen=True)
class Scheme:
    name: str  # the `--quant` value
    vision_encoder: Part  # the vision tower + projector
    token_embedding: Part  # the token embedding table
    text_decoder: Part  # the LLM's decoder layers and LM head
    bits: float  # effective bits per LLM weight, scales included: the roofline's estimate when a file can't say

    def parts(self) -> dict[str, Part]:
        return {"vision_encoder": self.vision_encoder, "token_embedding": self.token_embedding,
                "text_decoder": self.text_decoder}

    def mechanisms(self) -> dict[str, str]:
        """Part → the name of the format's quantizer, for the parts that get one."""
        return {name: p.mechanism for name, p in self.parts().items() if p.mechanism is not None}

    def to_dict(self) -> dict:
        return {"name": self.name, **{name: p.gets for name, p in self.parts().items()}, "bits": self.bits}


FORMATS: Registry[Registry[Scheme]] = Registry("export format")


def _table(fmt: str, *schemes: Scheme) -> None:
    table: Registry[Scheme] = Registry(f"{fmt} quantization")
    for s in schemes:
        table.register(s.name)(s)
    FORMATS.register(fmt)(table)


def _same(gets: str, mechanism: str | None = None) -> dict[str, Part]:
    """Every part gets the same."""
    return {name: Part(gets, mechanism) for name in PARTS}


# GGUF: the mmproj's tensor type (gguf.GGMLQuantizationType) for the vision encoder; the text model's llama.cpp
# file type (gguf.LlamaFileType) for the embedding and the decoder, which share its file.
_GGUF_VISION = Part("Q8_0, F16 where rows do not fit", "Q8_0")
_table(
    "gguf",
    Scheme("f16", vision_encoder=Part("F16 (norms, biases, position embeddings F32)", "F16"),
           token_embedding=Part("F16", "MOSTLY_F16"), text_decoder=Part("F16", "MOSTLY_F16"), bits=16),
    Scheme("q8_0", vision_encoder=_GGUF_VISION, token_embedding=Part("Q8_0", "MOSTLY_Q8_0"),
           text_decoder=Part("Q8_0", "MOSTLY_Q8_0"), bits=8.5),
    Scheme("q4_0", vision_encoder=_GGUF_VISION, token_embedding=Part("Q4_0", "MOSTLY_Q4_0"),
           text_decoder=Part("Q4_0 (llama.cpp's mix: output Q6_K, Q8_0 where rows are not a multiple of 256)",
                             "MOSTLY_Q4_0"), bits=4.5),
    Scheme("q4_k", vision_encoder=_GGUF_VISION, token_embedding=Part("Q4_K / fallback", "MOSTLY_Q4_K_M"),
           text_decoder=Part("Q4_K_M (llama.cpp's mix; Q5_0 / Q8_0 per tensor where rows are not a multiple of "
                             "256)", "MOSTLY_Q4_K_M"), bits=4.5),
)
_ET_VISION = Part("8da8w linears (convolutions fp32)", "8da8w")
_ET_EMBEDDING = Part("int8 per row (quantized embedding_byte)", "int8_rows")
_table(
    "executorch",
    Scheme("fp32", **_same("fp32"), bits=32),
    Scheme("int8", vision_encoder=_ET_VISION, token_embedding=_ET_EMBEDDING,
           text_decoder=Part("8da8w (int8 dynamic activations, int8 per-channel weights)", "8da8w"), bits=8),
    Scheme("int4", vision_encoder=_ET_VISION, token_embedding=_ET_EMBEDDING,
           text_decoder=Part("8da4w, group 128 (32 where 128 does not divide the width; 8da8w where neither "
                             "does), lm_head included", "8da4w"), bits=4.5),
)
_ONNX_VISION = Part("dynamic int8 per-channel", "dynamic_int8")
_table(
    "onnx",
    Scheme("fp32", **_same("fp32"), bits=32),
    Scheme("fp16", vision_encoder=Part("fp16", "fp16"), token_embedding=Part("fp16", "fp16"),
           text_decoder=Part("fp16 (float32 inputs and outputs)", "fp16"), bits=16),
    Scheme("int8", vision_encoder=_ONNX_VISION, token_embedding=Part("fp32"),
           text_decoder=Part("dynamic int8 (quantize_dynamic, per-channel uint8 weights)", "dynamic_int8"), bits=8),
    Scheme("int4", vision_encoder=_ONNX_VISION, token_embedding=Part("fp32"),
           text_decoder=Part("MatMulNBits int4, block 32, accuracy level 4 (LM head: dynamic int8 per-channel)",
                             "int4_block32"), bits=4.5),
    # lossy on purpose: what the accuracy guard (export.guard, `--max-drop`) raises parts out of, part by part
    Scheme("int2", vision_encoder=Part("MatMulNBits int2, block 32, accuracy level 4", "int2_block32"),
           token_embedding=Part("fp32"),
           text_decoder=Part("MatMulNBits int2, block 32, accuracy level 4, LM head included", "int2_block32"),
           bits=2.5),
)
_COREML_INT8 = Part("int8 per-channel linear", "int8_per_channel")
_table(
    "coreml",
    Scheme("fp16", **_same("fp16"), bits=16),
    Scheme("int8", vision_encoder=_COREML_INT8, token_embedding=Part("int8 per-channel", "int8_per_channel"),
           text_decoder=_COREML_INT8, bits=8),
    Scheme("int4", vision_encoder=_COREML_INT8, token_embedding=Part("int8 per-channel", "int8_per_channel"),
           text_decoder=Part("int4 per-block (32) linear", "int4_block32"), bits=4.5),
)


def scheme(fmt: str, name: str) -> Scheme:
    """The scheme `name` of format `fmt`; unknown names raise listing the known ones."""
    return FORMATS[fmt][name]
