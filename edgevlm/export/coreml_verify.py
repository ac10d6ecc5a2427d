"""What can be verified of a CoreML bundle without Core ML (Linux): specs, weights, the converted torch program.

coremltools predicts only on macOS (docs/dependencies.md), so on Linux a bundle is checked in three ways instead:
1. `check_specs`: each saved package loads as a spec; it is an ML Program of specification version 9
   (iOS 18); every function's inputs, outputs and states have the manifest's names, shapes, ranges and types.
2. `compare_weights`: every weight constant in the saved MIL program (read back from `weight.bin`) equals what
   the scheme intends for the torch weight it came from: its fp16 cast (`fp16`, with the converter's underflow
   rule), or, for compressed ones, the int8 / int4 data and scales that coremltools' own quantizer
   (`compute_qparams_by_dtype`) gives with the intended blocks, and their dequantization.
3. `program_parity`: the traced programs handed to `ct.convert`, with the package's dequantized weights loaded
   in, run greedily in PyTorch over an eval slice (`verify.verify`) against the EdgeVLM.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from edgevlm.errors import EdgeVLMError
from edgevlm.export import coreml
from edgevlm.bundle.manifest import Bundle, open_bundle
from edgevlm.export.verify import verify
from edgevlm.runtimes.base import ContractRuntime
from edgevlm.runtimes.coreml import NO_PREDICTION, causal_mask
from edgevlm.config import MAX_NEW_TOKENS

DTYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "int32": "INT32"}  # manifest → spec ArrayDataType


def linux_verification(model, scheme, out_dir: Path, data_dir=None, limit: int = 100, progress: bool = True,
                       threads: int | None = None) -> dict:
    """The verification record for manifest["verification"] where Core ML cannot predict."""
    bundle = open_bundle(out_dir)
    programs = load_programs(bundle)
    weights = compare_weights(model, scheme, bundle, programs)
    return {
        "skipped": NO_PREDICTION,
        "spec": check_specs(bundle, programs),
        "weights": weights["summary"],
        "torch_program": program_parity(model, bundle, weights["dequantized"], data_dir, limit, progress,
                                        threads or 1),
    }


# ---- 1. specs ------------------------------------------------------------------------------------------------
def check_specs(bundle: Bundle, programs: dict | None = None) -> dict:
    """Raise EdgeVLMError unless every package and function matches the manifest; return what was checked.

    Output shapes are not in an ML Program's spec: they are read from its MIL program (`programs`)."""
    import coremltools as ct

    fields, programs = bundle.runtime_fields, programs or load_programs(bundle)
    checked = {}
    for name, f in fields["functions"].items():
        path = bundle.path / f["file"]
        spec = ct.utils.load_spec(str(path))
        if spec.WhichOneof("Type") != "mlProgram" or spec.specificationVersion < coreml.SPEC_VERSION:
            raise EdgeVLMError(f"not an ML Program of specification version >= {coreml.SPEC_VERSION}", path)
        desc = _function_description(spec, f["function"], path)
        for kind in ("inputs", "outputs", "states"):
            got = {"inputs": desc.input, "outputs": desc.output, "states": desc.state}[kind]
            if [x.name for x in got] != [t["name"] for t in f[kind]]:
                raise EdgeVLMError(f"{name} {kind} are {[x.name for x in got]}, the manifest says "
                                   f"{[t['name'] for t in f[kind]]}", path)
            for feature, t in zip(got, f[kind]):
                _check_feature(feature, t, fields["flexible_dims"], kind, f"{name}.{t['name']}", path)
        for var, t in zip(programs[f["file"]].functions[f["function"]].outputs, f["outputs"]):
            shape = [int(d) if isinstance(d, (int, np.integer)) else "?" for d in var.shape]
            want = [d if isinstance(d, int) else "?" for d in t["shape"]]  # flexible dims are symbols in MIL
            if shape != want:
                raise EdgeVLMError(f"output {name}.{t['name']}: shape {shape}, not {want}", path)
        checked[name] = {k: len(f[k]) for k in ("inputs", "outputs", "states")}
    return checked


def _function_description(spec, function: str, path: Path):
    if function == "main" and not spec.description.functions:
        return spec.description
    for f in spec.description.functions:
        if f.name == function:
            return f
    raise EdgeVLMError(f"package has no function {function!r}", path)


def _check_feature(feature, t: dict, dims: dict, kind: str, where: str, path: Path) -> None:
    array = feature.type.stateType.arrayType if kind == "states" else feature.type.multiArrayType
    problems = []
    if array.dataType != array.ArrayDataType.Value(DTYPES[t["dtype"]]):
        problems.append(f"type {array.ArrayDataType.Name(array.dataType)}, not {t['dtype']}")
    if kind != "outputs":  # ML Program outputs carry no shape in the spec
        ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges] or \
            [(d, d) for d in array.shape]
        want = [tuple(dims[d]) if isinstance(d, str) else (d, d) for d in t["shape"]]
        if ranges != want:
            problems.append(f"shape ranges {ranges}, not {want}")
    if problems:
        raise EdgeVLMError(f"{kind[:-1]} {where}: " + "; ".join(problems), path)


# ---- 2. weights ----------------------------------------------------------------------------------------------
def load_programs(bundle: Bundle) -> dict:
    """The saved packages' MIL programs (weights read from weight.bin), by file name."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    programs = {}
    for file in {f["file"] for f in bundle.runtime_fields["functions"].values()}:
        path = bundle.path / file
        spec = ct.utils.load_spec(str(path))
        programs[file] = load(spec, spec.specificationVersion, str(path / "Data" / "com.apple.CoreML" / "weights"))
    return programs


def package_constants(function) -> dict[str, dict]:
    """A MIL function's weight constants by source name: {"value"} for fp16, {"data", "scale", "offset"} else."""
    out = {}
    for op in function.operations:
        if op.op_type == "constexpr_blockwise_shift_scale":
            out[op.name.removesuffix("_quantized")] = {
                "data": op.data.val, "scale": op.scale.val, "offset": None if op.offset is None else op.offset.val}
        elif op.op_type == "const" and np.issubdtype(np.asarray(op.val.val).dtype, np.floating) and \
                not all(c.op_type.startswith("constexpr") for c in op.outputs[0].child_ops):
            out[op.name] = {"value": op.val.val}
    return {name.removesuffix("_to_fp16"): c for name, c in out.items()}


# coremltools' fp16 cast keeps, in a constant of fewer than this many elements, a nonzero value that rounds to
# zero as the smallest fp16 subnormal of its sign, so that an epsilon stays nonzero (passes/defs/quantization.py,
# `FP16ComputePrecision._check_underflow_to_zero`); SigLIP's N(0, 1e-6) FFN biases have such values
FP16_UNDERFLOW_KEPT_BELOW = 400


def fp16(weight: np.ndarray) -> np.ndarray:
    """A float32 weight as the converter's fp16 cast stores it: IEEE rounding, with coremltools' underflow rule."""
    half = weight.astype(np.float16)
    if weight.size < FP16_UNDERFLOW_KEPT_BELOW:
        tiny = np.nextafter(np.float16(0), np.float16(1))
        lost = (half == 0) & (np.abs(weight) > np.nextafter(np.float32(0), np.float32(1)))
        half = np.where(lost, np.copysign(tiny, weight).astype(np.float16), half)
    return half


def intended(weight: np.ndarray, quant) -> dict:
    """What the scheme means for one float32 weight: its fp16 cast, or coremltools' quantization of that with
    our blocks."""
    weight = fp16(weight)
    if quant is None or weight.size <= coreml.WEIGHT_THRESHOLD:
        return {"value": weight}
    from coremltools.converters.mil.mil import types
    from coremltools.optimize._utils import compute_qparams_by_dtype

    q = compute_qparams_by_dtype(weight, types.string_to_builtin(quant.dtype), "LINEAR_SYMMETRIC",
                                 quant.block_sizes(weight.shape))
    return {"value": weight} if q is None else {"data": q[0], "scale": q[1], "offset": q[2]}


def dequantize(c: dict) -> np.ndarray:
    if "value" in c:
        return np.asarray(c["value"], dtype=np.float32)
    scale = c["scale"].astype(np.float32)
    for axis, (n, m) in enumerate(zip(c["data"].shape, scale.shape)):
        scale = np.repeat(scale, n // m, axis=axis)  # one scale per block → per element
    offset = 0 if c["offset"] is None else c["offset"].astype(np.float32)
    return (c["data"].astype(np.float32) - offset) * scale


def compare_weights(model, scheme, bundle: Bundle, programs: dict | None = None) -> dict:
    """Compare every weight constant of every function with its torch weight; raise on any difference.

    Returns {"summary": counts per function, "dequantized": {function: {torch name: float32 array}}}.
    """
    programs, torch_modules = programs or load_programs(bundle), coreml.modules(model)
    parts = coreml.COMPRESSION[scheme.name]
    summary, dequantized = {}, {}
    for name, f in bundle.runtime_fields["functions"].items():
        consts = package_constants(programs[f["file"]].functions[f["function"]])
        params = {n: p.detach().numpy() for n, p in torch_modules[name][0].named_parameters()}
        pairs = _match(consts, params, bundle.path / f["file"], name)
        counts = {"tensors": len(pairs), "torch_weights_not_in_program": len(params) - len(pairs), "float16": 0}
        dequantized[name] = {}
        for const_name, param_name in pairs.items():
            want = intended(params[param_name].reshape(_shape(consts[const_name])), parts.get(f["part"]))
            _require_equal(consts[const_name], want, f"{name}: {param_name}", bundle.path / f["file"])
            kind = "float16" if "value" in want else parts[f["part"]].describe()
            counts[kind] = counts.get(kind, 0) + 1
            dequantized[name][param_name] = dequantize(consts[const_name]).reshape(params[param_name].shape)
        summary[name] = counts
    return {"summary": summary, "dequantized": dequantized}


def _shape(c: dict) -> tuple:
    return np.shape(c["value"] if "value" in c else c["data"])


def _match(consts: dict, params: dict, path: Path, function: str) -> dict[str, str]:
    """Package constant → torch parameter: by name ("a.b.weight" is "a_b_weight"), else by a unique size
    (constants the converter folded, e.g. CLIP's position embedding). Every large constant must match one;
    torch weights without a constant are ones the program does not use (the tower's blocks past the feature
    layer) or small ones folded into others."""
    by_flat = {n.replace(".", "_"): n for n in params}
    pairs = {c: by_flat[c] for c in consts if c in by_flat}
    left = [n for n in params if n not in pairs.values()]
    for c in (c for c in consts if c not in pairs and np.prod(_shape(consts[c])) > coreml.WEIGHT_THRESHOLD):
        same = [n for n in left if params[n].size == np.prod(_shape(consts[c]))]
        if len(same) != 1:
            raise EdgeVLMError(f"{function}: weight constant {c!r} matches no single torch weight ({same})", path)
        pairs[c] = same[0]
        left.remove(same[0])
    return pairs


def _require_equal(got: dict, want: dict, what: str, path: Path) -> None:
    if set(got) != set(want):
        raise EdgeVLMError(f"{what} is stored as {sorted(got)}, the scheme intends {sorted(want)}", path)
    for key, a in want.items():
        b = got[key]
        if (a is None) != (b is None) or (a is not None and not np.array_equal(np.asarray(a), np.asarray(b))):
            raise EdgeVLMError(f"{what}: the package's {key} differs from the intended one", path)
    if not np.array_equal(dequantize(got), dequantize(want)):
        raise EdgeVLMError(f"{what}: dequantized weights differ from the intended ones", path)


# ---- 3. the converted torch program --------------------------------------------------------------------------
class TorchProgramRuntime(ContractRuntime):
    """The traced programs given to `ct.convert`, run in PyTorch with the package's weights."""

    name = "torch-program"

    def __init__(self, bundle: Bundle, programs: dict):
        super().__init__(bundle)
        self.programs = programs

    def generate_many(self, image, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[int]]:
        # TorchScript's profiling executor re-specializes for every new length: off, it is ~10x faster here
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return super().generate_many(image, questions, max_new_tokens)

    def vision_encoder(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.programs["vision_encoder"](torch.from_numpy(pixel_values))[0].numpy()  # (N_img, D)

    def token_embedding(self, ids: np.ndarray) -> np.ndarray:
        return self.programs["token_embedding"](torch.from_numpy(ids.astype(np.int32))[None])[0].numpy()

    def reset(self) -> None:
        self.programs["text_decoder"].k_cache.zero_()
        self.programs["text_decoder"].v_cache.zero_()

    def text_decoder(self, embeds: np.ndarray, start_pos: int) -> np.ndarray:
        mask = torch.from_numpy(causal_mask(start_pos, len(embeds)))  # (1, 1, T, E)
        return self.programs["text_decoder"](torch.from_numpy(embeds)[None], mask)[0, -1].numpy()  # (V,)


@torch.no_grad()
def torch_program_runtime(model, bundle: Bundle, weights: dict) -> TorchProgramRuntime:
    """The traced programs (on a copy of `model`) holding `weights`, the package's dequantized weights."""
    programs = coreml.trace_programs(copy.deepcopy(model))
    for name, program in programs.items():
        for param_name, p in program.named_parameters():  # small ones the converter folded: fp16 as well
            p.copy_(torch.from_numpy(weights[name][param_name]) if param_name in weights[name] else p.half())
    return TorchProgramRuntime(bundle, programs)


@torch.no_grad()
def program_parity(model, bundle: Bundle, weights: dict, data_dir=None, limit: int = 100,
                   progress: bool = True, threads: int = 1) -> dict:
    """verify.verify's record for the traced programs (on a copy of `model`) holding the package's weights."""
    runtime = torch_program_runtime(model, bundle, weights)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # one token at a time is dispatch-bound: extra threads only spin
    try:
        record = verify(runtime, model, data_dir, limit, progress=progress)
    finally:
        torch.set_num_threads(before)
    return {**record, "weights": "the package's, dequantized", "compute": "float32 (Core ML computes in float16)"}
