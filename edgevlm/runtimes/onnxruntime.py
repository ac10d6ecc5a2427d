"""Run an ONNX bundle with onnxruntime (CPU execution provider): the runtime contract over three sessions.

`vision.onnx`, `embedding.onnx` and `decoder.onnx` (edgevlm/export/onnx.py) each get one InferenceSession.
Every graph is checked on opening against what the manifest says (opset, input and output names, element
types, shapes), so a swapped or hand-edited graph is a one-line error, not an onnxruntime traceback later. The
checks use onnxruntime's own view of the graph, not the `onnx` package (a second second of start-up).
The decoder takes `past_key_values.%d.key|value` and returns `present.%d.key|value`, kept as OrtValues through IO
binding (no numpy round trip; only the logits are copied out). A bundle whose `kv_cache.shared_buffer` is true
(spec 1.1: attention is onnxruntime's GroupQueryAttention) gets one buffer of its whole context per past, bound
as both the past input and the present output: the op writes the new positions in place and `attention_mask`'s
length says how many are filled, so no cache is copied or allocated per token. Older bundles (Concat graphs)
grow: each present, past ++ new, becomes the next past.
Docs: https://onnxruntime.ai/docs/api/python/api_summary.html#iobinding
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgevlm.bundle.manifest import MANIFEST, Bundle
from edgevlm.errors import EdgeVLMError
from edgevlm.log import native_quiet
from edgevlm.runtimes.base import ContractRuntime, Setting

PROVIDERS = ["CPUExecutionProvider"]
# onnxruntime's type names → the numpy names the manifest records (edgevlm/export/onnx.py `graph_io`)
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
             "tensor(bool)": "bool"}


def read_opset(path: Path) -> int | None:
    """The default-domain opset of an ONNX file, read from its top-level protobuf fields (ModelProto field 8,
    OperatorSetIdProto {1: domain, 2: version}) without importing `onnx`, whose import alone takes ~1 s."""
    data = path.read_bytes()

    def fields(buf: bytes):
        i = 0
        while i < len(buf):
            key, i = _varint(buf, i)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, i = _varint(buf, i)
            elif wire == 2:
                size, i = _varint(buf, i)
                value, i = buf[i:i + size], i + size
                if i > len(buf):
                    raise ValueError("truncated field")
            elif wire in (1, 5):
                value, i = None, i + (8 if wire == 1 else 4)
            else:
                raise ValueError(f"wire type {wire}")
            yield number, value

    for number, value in fields(data):
        if number == 8:
            entry = dict(fields(value))
            if entry.get(1, b"") in (b"", b"ai.onnx"):
                return entry.get(2, 1)
    return None


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return value, i


def session_io(session: ort.InferenceSession) -> dict:
    """A session's inputs and outputs as the manifest records them: name → [element type, dims]."""
    def spec(args):
        return {a.name: [ORT_TYPES.get(a.type, a.type), [0 if d is None else d for d in a.shape]] for a in args}

    return {"inputs": spec(session.get_inputs()), "outputs": spec(session.get_outputs())}


def check_graph(got: dict, want: dict) -> str | None:
    """What differs between a graph's inputs / outputs and its manifest entry, or None."""
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
        got_opset = read_opset(path)
    except ValueError as e:
        raise EdgeVLMError(f"not a valid ONNX model ({e})", path) from None
    if got_opset != opset:
        raise EdgeVLMError(f"opset {got_opset}, but manifest.json says {opset}", path)
    try:
        with native_quiet():
            session = ort.InferenceSession(str(path), options, providers=PROVIDERS)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        raise EdgeVLMError(f"onnxruntime cannot load the graph ({str(e).splitlines()[0]})", path) from None
    problem = check_graph(session_io(session), {k: entry[k] for k in ("inputs", "outputs")})
    if problem:
        raise EdgeVLMError(problem, path)
    return session


class OnnxRuntime(ContractRuntime):
    """The runtime contract over onnxruntime sessions; `threads` sets intra_op_num_threads."""

    name = "onnxruntime"
    # session profiling (SessionOptions.enable_profiling): onnxruntime's own `model_run` time of every run
    self_timed_phases = ("image", "prefill", "decode")
    settings = {
        "spinning": Setting(("on", "off"), "on", "the intra-op threads spin between ops (lower latency) or sleep "
                            "(no CPU burnt while Python works between runs)"),
        "prepacking": Setting(("on", "off"), "on", "weights repacked into the kernels' layout at load (faster "
                              "kernels) or used as stored (no second copy in memory)"),
        "arena": Setting(("on", "off"), "on", "activations from onnxruntime's growing CPU arena or from malloc"),
    }

    def __init__(self, bundle: Bundle, threads: int | None = None, self_timing: bool = False,
                 settings: dict[str, str] | None = None):
        super().__init__(bundle, threads, self_timing, settings)
        fields = bundle.runtime_fields
        for key in ("graphs", "opset", "kv_cache"):
            if key not in fields:
                raise EdgeVLMError(f"manifest runtime section lacks {key!r}", bundle.path / MANIFEST)
        self.sessions, self.runs = {}, {name: 0 for name in fields["graphs"]}  # runs: per session, so far
        # the profiles' JSON files: read and removed by `engine_elapsed_ms` (onnxruntime writes them only then, or
        # when a session is freed)
        self.profile_dir = tempfile.mkdtemp(prefix="edgevlm-ort-profile-") if self_timing else None
        for name, entry in fields["graphs"].items():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if threads:
                options.intra_op_num_threads = threads
            options.add_session_config_entry("session.intra_op.allow_spinning",
                                             "1" if self.setting("spinning") == "on" else "0")
            options.add_session_config_entry("session.disable_prepacking",
                                             "0" if self.setting("prepacking") == "on" else "1")
            options.enable_cpu_mem_arena = self.setting("arena") == "on"
            if self_timing:
                options.enable_profiling = True
                options.profile_file_prefix = str(Path(self.profile_dir) / name)
            self.sessions[name] = open_session(bundle, entry, fields["opset"], options)
        kv, inputs = fields["kv_cache"], fields["graphs"]["decoder"]["inputs"]
        self.past_names = [kv["past"] % (i, p) for i in range(kv["layers"]) for p in ("key", "value")]
        self.present_names = [kv["present"] % (i, p) for i in range(kv["layers"]) for p in ("key", "value")]
        self.shared = kv.get("shared_buffer", False)
        dtype = np.dtype(inputs[self.past_names[0]][0])
        shape = (1, kv["kv_heads"], bundle.max_context if self.shared else 0, kv["head_dim"])
        # shared: allocated by onnxruntime and never cleared (pages become resident as positions fill)
        self.buffers = [ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cpu") for _ in self.past_names]
        self.reset()

    def vision_encoder(self, pixel_values: np.ndarray) -> np.ndarray:
        pixels = pixel_values.astype(np.float32)
        with self.running("vision"):
            out = self.sessions["vision"].run(["image_embeds"], {"pixel_values": pixels})
        return out[0][0]  # (N_img, D)

    def token_embedding(self, ids: np.ndarray) -> np.ndarray:
        with self.running("embedding"):
            out = self.sessions["embedding"].run(["inputs_embeds"], {"input_ids": ids[None]})
        return out[0][0]  # (T, D)

    @contextlib.contextmanager
    def running(self, session: str):
        """One run of `session`: counted (the k-th run is the k-th `model_run` of its profile) and timed."""
        self.runs[session] += 1
        with self.in_engine():
            yield

    def engine_clock(self) -> dict[str, int]:
        return dict(self.runs)

    def engine_elapsed_ms(self, marks: list[dict[str, int]]) -> list[float]:
        """From each session's profile, ended here: the `model_run` durations of the runs between marks."""
        durations = {}
        try:
            for name, session in self.sessions.items():
                with open(session.end_profiling()) as f:
                    runs = [e["dur"] / 1e3 for e in json.load(f) if e.get("name") == "model_run"]
                if len(runs) != self.runs[name]:
                    raise EdgeVLMError(f"onnxruntime profiled {len(runs)} runs of {name}, edgevlm made "
                                       f"{self.runs[name]}", self.bundle.path)
                durations[name] = runs
        finally:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
        return [sum(sum(durations[n][a[n]:b[n]]) for n in durations) for a, b in zip(marks, marks[1:])]

    def reset(self) -> None:
        self.cached = 0  # positions of the cache in use; what lies beyond them in a shared buffer is never read
        self.past = list(self.buffers)

    def text_decoder(self, embeds: np.ndarray, start_pos: int) -> np.ndarray:
        T, cached = len(embeds), self.cached
        if start_pos != cached:
            raise ValueError(f"start_pos {start_pos} differs from the {cached} cached positions")
        if cached + T > self.bundle.max_context:
            raise EdgeVLMError(f"{cached + T} positions do not fit the bundle's context of {self.bundle.max_context}",
                               self.bundle.path)
        session = self.sessions["decoder"]
        io = session.io_binding()
        io.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds[None], dtype=np.float32))  # (1, T, D)
        io.bind_cpu_input("attention_mask", np.ones((1, cached + T), dtype=np.int64))
        io.bind_cpu_input("position_ids", np.arange(cached, cached + T, dtype=np.int64)[None])  # (1, T)
        io.bind_output("logits", "cpu")  # outputs come back in binding order
        for past, present, value in zip(self.past_names, self.present_names, self.past):
            io.bind_ortvalue_input(past, value)
            if self.shared:
                io.bind_ortvalue_output(present, value)
            else:
                io.bind_output(present, "cpu")
        with self.running("decoder"):
            session.run_with_iobinding(io)
        logits, *presents = io.get_outputs()
        self.cached += T
        if not self.shared:
            self.past = presents
        return logits.numpy()[0, -1]  # (V,): the last row of (1, 1, V), or of a spec-1.0 graph's (1, T, V)


RUNTIME = OnnxRuntime
