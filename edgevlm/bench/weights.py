"""Bytes of weights one decoded token reads, per bundle: read from the file where the format allows it
(GGUF tensors, ONNX initializers), otherwise estimated from the manifest's parameter count and the scheme's
effective bits per weight. The result says which, so a roofline figure is never more precise than it is.
"""

from __future__ import annotations

from typing import Callable

from edgevlm.bundle.manifest import Bundle
from edgevlm.quant.schemes import scheme

MEASURERS: dict[str, Callable[[Bundle], int]] = {}


def measurer(fmt: str):
    def add(fn):
        MEASURERS[fmt] = fn
        return fn

    return add


def decode_bytes_per_token(bundle: Bundle) -> tuple[int, str]:
    """(bytes, "file" | "estimate")."""
    fn = MEASURERS.get(bundle.format)
    if fn is not None:
        return fn(bundle), "file"
    bits = scheme(bundle.format, bundle.manifest["quantization"]["name"]).bits
    return int(bundle.manifest["parameters"]["decoder_per_token"] * bits / 8), "estimate"


@measurer("gguf")
def _gguf(bundle: Bundle) -> int:
    from gguf import GGUFReader

    files = [n for n in bundle.manifest["files"] if n.startswith("model-") and n.endswith(".gguf")]
    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(bundle.file(files[0])).tensors}
    table = tensors.pop("token_embd.weight", 0)
    return sum(tensors.values()) + (0 if "output.weight" in tensors else table)  # tied: the table is the head


@measurer("onnx")
def _onnx(bundle: Bundle) -> int:
    import onnx

    graph = onnx.load(str(bundle.file("decoder.onnx")), load_external_data=False).graph
    total = 0
    for init in graph.initializer:
        external = {e.key: e.value for e in init.external_data}
        total += int(external["length"]) if "length" in external else len(init.raw_data) or _typed_bytes(init)
    return total


def _typed_bytes(init) -> int:
    import numpy as np
    from onnx import numpy_helper

    return int(np.asarray(numpy_helper.to_array(init)).nbytes)
