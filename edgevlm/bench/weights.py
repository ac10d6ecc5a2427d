"""Bytes one decoded token reads, per bundle: the LLM's weights, read from the files (GGUF tensors, ONNX
initializers, the ExecuTorch program's constants), and the KV cache, counted from the cache's layout in the same
files. Each figure says where it came from, so a roofline figure is never more precise than it is; a format
with no reader here falls back to an estimate from the manifest's parameter count.

The token embedding table is left out (a token reads one row of it) unless it is also the output head (tied).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgevlm.bundle.manifest import Bundle
from edgevlm.quant.schemes import scheme

MEASURERS: dict[str, Callable[[Bundle], int]] = {}
KV_LAYOUTS: dict[str, Callable[[Bundle], "KVLayout"]] = {}
WEIGHT_SOURCES = {"gguf": "file", "onnx": "file", "executorch": "program"}


def measurer(fmt: str, table: dict = MEASURERS):
    def add(fn):
        table[fmt] = fn
        return fn

    return add


@dataclass
class KVLayout:
    """What one cached position costs to read: every layer's keys and values."""

    caches: int  # cached tensors: layers × 2 (keys, values)
    width: int  # elements per position per tensor: KV heads × head dim
    element_bytes: int

    @property
    def bytes_per_position(self) -> int:
        return self.caches * self.width * self.element_bytes

    def describe(self) -> str:
        return f"kv: {self.caches // 2} layers × 2 × {self.width} (kv heads × head dim) × {self.element_bytes} B"


def decode_bytes_per_token(bundle: Bundle) -> tuple[int, str]:
    """(bytes, "file" | "program" | "estimate")."""
    fn = MEASURERS.get(bundle.format)
    if fn is not None:
        return fn(bundle), WEIGHT_SOURCES[bundle.format]
    bits = scheme(bundle.format, bundle.manifest["quantization"]["name"]).bits
    return int(bundle.manifest["parameters"]["decoder_per_token"] * bits / 8), "estimate"


def kv_bytes_per_token(bundle: Bundle, prefill_tokens: int, decode_tokens: int) -> tuple[int | None, str]:
    """KV-cache bytes the attention reads per decoded token, averaged over the run: a token at position p reads
    p cached positions, and the decoded tokens sit at prefill_tokens + 0 … decode_tokens - 1 (mean: + n/2)."""
    fn = KV_LAYOUTS.get(bundle.format)
    if fn is None:
        return None, f"kv: no reader for {bundle.format}"
    layout = fn(bundle)
    return int(layout.bytes_per_position * (prefill_tokens + decode_tokens / 2)), layout.describe()


def _gguf_reader(bundle: Bundle):
    from gguf import GGUFReader

    files = [n for n in bundle.manifest["files"] if n.startswith("model-") and n.endswith(".gguf")]
    return GGUFReader(bundle.file(files[0]))


@measurer("gguf")
def _gguf(bundle: Bundle) -> int:
    tensors = {t.name: int(t.n_bytes) for t in _gguf_reader(bundle).tensors}
    table = tensors.pop("token_embd.weight", 0)
    return sum(tensors.values()) + (0 if "output.weight" in tensors else table)  # tied: the table is the head


@measurer("gguf", KV_LAYOUTS)
def _gguf_kv(bundle: Bundle) -> KVLayout:
    """From the GGUF's hyperparameters; the cache is F32 in both our llama.cpp runtimes (runtimes/llamacpp.py,
    native/src/gguf_backend.cpp), not llama.cpp's default F16."""
    reader = _gguf_reader(bundle)

    def field(key: str) -> int:
        f = reader.fields[key]
        return int(f.parts[f.data[0]][0])

    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    heads, kv_heads = field(f"{arch}.attention.head_count"), field(f"{arch}.attention.head_count_kv")
    head_dim = field(f"{arch}.embedding_length") // heads
    return KVLayout(2 * field(f"{arch}.block_count"), kv_heads * head_dim, 4)


@measurer("onnx")
def _onnx(bundle: Bundle) -> int:
    return sum(initializer_bytes(init) for init in _onnx_graph(bundle).initializer)


def initializer_bytes(init) -> int:
    """An ONNX initializer's bytes: its external data's recorded length, its raw bytes, or its typed values."""
    external = {e.key: e.value for e in init.external_data}
    return int(external["length"]) if "length" in external else len(init.raw_data) or _typed_bytes(init)


@measurer("onnx", KV_LAYOUTS)
def _onnx_kv(bundle: Bundle) -> KVLayout:
    """From the decoder's `past_key_values.*` inputs: [batch, kv heads, past, head dim] in their element type."""
    from onnx import helper

    past = [i for i in _onnx_graph(bundle).input if i.name.startswith("past_key_values.")]
    t = past[0].type.tensor_type
    dims = [d.dim_value for d in t.shape.dim]
    return KVLayout(len(past), dims[1] * dims[3], helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize)


def _onnx_graph(bundle: Bundle):
    import onnx

    return onnx.load(str(bundle.file("decoder.onnx")), load_external_data=False).graph


def _typed_bytes(init) -> int:
    import numpy as np
    from onnx import numpy_helper

    return int(np.asarray(numpy_helper.to_array(init)).nbytes)


@measurer("executorch")
def _executorch(bundle: Bundle) -> int:
    from edgevlm.bench.pte import decoder_constant_bytes

    return decoder_constant_bytes(bundle.file(bundle.manifest["runtime"]["program"]))


@measurer("executorch", KV_LAYOUTS)
def _executorch_kv(bundle: Bundle) -> KVLayout:
    from edgevlm.bench.pte import decoder_kv_caches

    caches, width, element_bytes = decoder_kv_caches(bundle.file(bundle.manifest["runtime"]["program"]))
    return KVLayout(caches, width, element_bytes)
