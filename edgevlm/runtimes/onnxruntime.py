"""Run an ONNX bundle with onnxruntime (CPU execution provider): the runtime contract over three sessions.

`vision.onnx`, `embedding.onnx` and `decoder.onnx` (edgevlm/export/onnx.py) each get one InferenceSession.
Every graph is checked on opening against what the manifest says (opset, input and output names, element
types, ranks), so a swapped or hand-edited graph is a one-line error, not an onnxruntime traceback later.
The decoder takes `past_key_values.%d.key|value` and returns `present.%d.key|value`: prefill with an empty past,
then one token per step, the presents kept as OrtValues and bound as the next step's pasts through IO binding
(no numpy round trip of the growing cache; only the logits are copied out).
Docs: https://onnxruntime.ai/docs/api/python/api_summary.html#iobinding
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from edgevlm.errors import EdgeVLMError
from edgevlm.bundle.manifest import MANIFEST, Bundle
from edgevlm.runtimes.base import ContractRuntime

PROVIDERS = ["CPUExecutionProvider"]


def graph_io(graph: onnx.ModelProto) -> dict:
    """Inputs and outputs as the manifest records them: name → [element type, shape with named axes]."""
    def spec(values):
        return {v.name: [onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                         [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]] for v in values}

    return {"inputs": spec(graph.graph.input), "outputs": spec(graph.graph.output)}


def check_graph(graph: onnx.ModelProto, want: dict, opset: int) -> str | None:
    """What differs between a graph and its manifest entry (opset, inputs, outputs), or None."""
    got_opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)
    if got_opset != opset:
        return f"opset {got_opset}, but manifest.json says {opset}"
    got = graph_io(graph)
    for kind in ("inputs", "outputs"):
        missing = sorted(set(want[kind]) - set(got[kind]))
        if missing:
            return f"graph lacks {kind[:-1]} {missing[0]!r} that manifest.json lists (it has {sorted(got[kind])})"
        extra = sorted(set(got[kind]) - set(want[kind]))
        if extra:
            return f"graph has {kind[:-1]} {extra[0]!r} that manifest.json does not list"
        for name, spec in want[kind].items():
            if got[kind][name] != spec:
                return f"{kind[:-1]} {name!r} is {got[kind][name]}, manifest.json says {spec}"
    return None


def open_session(bundle: Bundle, entry: dict, opset: int, options: ort.SessionOptions) -> ort.InferenceSession:
    path = bundle.file(entry["file"])
    try:
        graph = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise EdgeVLMError(f"not a valid ONNX model ({str(e).splitlines()[0]})", path) from None
    problem = check_graph(graph, {k: entry[k] for k in ("inputs", "outputs")}, opset)
    if problem:
        raise EdgeVLMError(problem, path)
    try:
        return ort.InferenceSession(str(path), options, providers=PROVIDERS)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        raise EdgeVLMError(f"onnxruntime cannot load the graph ({str(e).splitlines()[0]})", path) from None


class OnnxRuntime(ContractRuntime):
    """The runtime contract over onnxruntime sessions; `threads` sets intra_op_num_threads."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int | None = None):
        super().__init__(bundle, threads)
        fields = bundle.runtime_fields
        for key in ("graphs", "opset", "kv_cache"):
            if key not in fields:
                raise EdgeVLMError(f"manifest runtime section lacks {key!r}", bundle.path / MANIFEST)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {name: open_session(bundle, entry, fields["opset"], options)
                         for name, entry in fields["graphs"].items()}
        kv, inputs = fields["kv_cache"], fields["graphs"]["decoder"]["inputs"]
        self.past_names = [kv["past"] % (i, p) for i in range(kv["layers"]) for p in ("key", "value")]
        self.present_names = [kv["present"] % (i, p) for i in range(kv["layers"]) for p in ("key", "value")]
        self.empty = np.zeros((1, kv["kv_heads"], 0, kv["head_dim"]), dtype=inputs[self.past_names[0]][0])
        self.reset()

    def vision_encoder(self, pixel_values: np.ndarray) -> np.ndarray:
        pixels = pixel_values.astype(np.float32)
        with self.in_engine():
            out = self.sessions["vision"].run(["image_embeds"], {"pixel_values": pixels})
        return out[0][0]  # (N_img, D)

    def token_embedding(self, ids: np.ndarray) -> np.ndarray:
        with self.in_engine():
            out = self.sessions["embedding"].run(["inputs_embeds"], {"input_ids": ids[None]})
        return out[0][0]  # (T, D)

    def reset(self) -> None:
        self.past = [ort.OrtValue.ortvalue_from_numpy(self.empty) for _ in self.past_names]

    def text_decoder(self, embeds: np.ndarray, start_pos: int) -> np.ndarray:
        T, cached = len(embeds), self.past[0].shape()[2]
        if start_pos != cached:
            raise ValueError(f"start_pos {start_pos} differs from the {cached} cached positions")
        session = self.sessions["decoder"]
        io = session.io_binding()
        io.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds[None], dtype=np.float32))  # (1, T, D)
        io.bind_cpu_input("attention_mask", np.ones((1, cached + T), dtype=np.int64))
        io.bind_cpu_input("position_ids", np.arange(cached, cached + T, dtype=np.int64)[None])  # (1, T)
        for name, value in zip(self.past_names, self.past):
            io.bind_ortvalue_input(name, value)
        for name in ["logits", *self.present_names]:
            io.bind_output(name, "cpu")
        with self.in_engine():
            session.run_with_iobinding(io)
        logits, *self.past = io.get_outputs()
        return logits.numpy()[0, -1]  # (V,)


RUNTIME = OnnxRuntime
