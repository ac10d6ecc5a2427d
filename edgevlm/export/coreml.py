"""CoreML export: the runtime contract as ML Programs for iOS 18 / macOS 15, weights compressed by coremltools.

Files (coremltools 9, apple.github.io/coremltools/docs-guides):
- `VisionEncoder.mlpackage`: `pixel_values (1, 3, S, S) → image_embeds (1, N_img, D)` (tower + projector).
- `TextDecoder.mlpackage`, a multifunction model ("Multifunction Models" guide) with two functions:
  `text_decoder(inputs_embeds (1, T, D), causal_mask (1, 1, T, E)) → logits (1, T, V)` with the KV cache as
  Core ML state (`ct.StateType`, "Stateful Models" guide; `CoreMLTextDecoder`), T and E flexible
  (`ct.RangeDim`); and `token_embedding(input_ids (1, T) int32) → inputs_embeds (1, T, D)`.
Programs are traced (`torch.jit.trace`, the converter's path for stateful models) and converted with fp16
compute precision (the ML Program default). Compression ("Optimizing Models" guide, the pass of `coremltools.
optimize.coreml.linear_quantize_weights`, run inside the conversion: `pipeline`): int8 is linear symmetric per
output channel; int4 is linear symmetric per block of 32 input channels for the LLM's linears, int8 per channel
for the vision side and the embedding.
Weights of at most `WEIGHT_THRESHOLD` elements (norms, biases) stay fp16.

Core ML cannot predict on Linux, so the bundle's runtime (`edgevlm.runtimes.coreml`) runs only on macOS; on
other systems `edgevlm.export.coreml_verify.linux_verification` checks what can be checked there.
"""

from __future__ import annotations

import gc
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgevlm.export.base import Exporter
from edgevlm.export.contract import contract_modules
from edgevlm.export.coreml_decoder import CoreMLTextDecoder
from edgevlm.models.checkpoint import released_every, trim_heap
from edgevlm.quant.schemes import PARTS, Scheme
from edgevlm.registry import Registry
from edgevlm.engines.coreml import CAN_PREDICT, causal_mask

VISION_FILE, DECODER_FILE = "VisionEncoder.mlpackage", "TextDecoder.mlpackage"
TARGET, SPEC_VERSION = "iOS18", 9  # the first target with states and per-block int4 (specification version 9)
WEIGHT_THRESHOLD = 2048  # coremltools' default: smaller constants are left uncompressed
RELEASE_SECONDS = 0.2  # how often the mapped weights are handed back while the model is traced and converted
COMPRESSION_PASS = "compression::linear_quantize_weights"  # what `cto.linear_quantize_weights` runs
FP16_PASSES = ("common::add_fp16_cast", "common::add_int16_cast")  # what the converter drops at float32


@dataclass(frozen=True)
class LinearQuant:
    """Linear symmetric weight quantization: per output channel, or per block of `block` input channels."""

    dtype: str  # "int8" | "int4"
    block: int | None = None

    def config(self):
        import coremltools.optimize.coreml as cto

        granularity = {"granularity": "per_block", "block_size": self.block} if self.block else \
            {"granularity": "per_channel"}
        return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=self.dtype,
                                           weight_threshold=WEIGHT_THRESHOLD, **granularity)

    def block_sizes(self, shape: tuple[int, ...]) -> list[int]:
        """The intended blocks: one scale per output channel (axis 0), per `block` along axis 1 if set."""
        sizes = [1] + [0] * (len(shape) - 1)
        if self.block:
            sizes[1] = self.block
        return sizes

    def describe(self) -> str:
        return f"{self.dtype} linear symmetric, " + (f"per block of {self.block}" if self.block else "per channel")


# the format's quantizers, by the names the `coreml` rows of quant/schemes.py give (parts without one: fp16)
MECHANISMS: Registry[LinearQuant] = Registry("coreml quantization mechanism")
MECHANISMS.register("int8_per_channel")(LinearQuant("int8"))
MECHANISMS.register("int4_block32")(LinearQuant("int4", block=32))


def compression(scheme: Scheme) -> dict[str, LinearQuant]:
    """Function (= contract part) → its weights' quantization, for the parts `scheme` quantizes."""
    return {part: MECHANISMS[name] for part, name in scheme.mechanisms().items()}


def max_context(model) -> int:
    return model.cfg.llm.max_position_embeddings


def function_specs(model) -> dict:
    """Each contract function's file, function name, and named inputs / outputs / states; "T" and "E" are
    flexible dims."""
    c, n_ctx = model.cfg, max_context(model)
    S, D, V, N = c.vision.image_size, c.llm.hidden_size, c.llm.vocab_size, model.num_image_tokens
    cache = list(CoreMLTextDecoder(model.llm, c.llm.arch, n_ctx).cache_shape)
    return {
        "vision_encoder": _function(VISION_FILE, "main", [_t("pixel_values", [1, 3, S, S])],
                                    [_t("image_embeds", [1, N, D])]),
        "token_embedding": _function(DECODER_FILE, "token_embedding", [_t("input_ids", [1, "T"], "int32")],
                                     [_t("inputs_embeds", [1, "T", D])]),
        "text_decoder": _function(DECODER_FILE, "text_decoder",
                                  [_t("inputs_embeds", [1, "T", D]), _t("causal_mask", [1, 1, "T", "E"])],
                                  [_t("logits", [1, "T", V])],
                                  [_t("k_cache", cache, "float16"), _t("v_cache", cache, "float16")]),
    }


def _t(name: str, shape: list, dtype: str = "float32") -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def _function(file: str, function: str, inputs, outputs, states=()) -> dict:
    return {"file": file, "function": function, "inputs": inputs, "outputs": outputs, "states": list(states)}


def flexible_dims(model) -> dict[str, list[int]]:
    return {"T": [1, max_context(model)], "E": [1, max_context(model)]}


def modules(model) -> dict[str, tuple[nn.Module, tuple]]:
    """The eager module of each function, sharing `model`'s weights, with an example input to trace it on."""
    c = model.cfg
    S, D = c.vision.image_size, c.llm.hidden_size
    parts = contract_modules(model.vision, model.projector, model.llm,
                             lambda llm: CoreMLTextDecoder(llm, c.llm.arch, max_context(model)))
    return {
        "vision_encoder": (parts["vision_encoder"], (torch.zeros(1, 3, S, S),)),
        "token_embedding": (parts["token_embedding"], (torch.zeros(1, 4, dtype=torch.int32),)),
        "text_decoder": (parts["text_decoder"], (torch.zeros(1, 4, D), torch.from_numpy(causal_mask(3, 4)))),
    }


@torch.no_grad()
def trace_programs(model) -> dict[str, torch.jit.ScriptModule]:
    """The traced programs handed to `ct.convert`, by function name (they share `model`'s weights)."""
    return {name: torch.jit.trace(module, args) for name, (module, args) in modules(model).items()}


def convert(program: torch.jit.ScriptModule, spec: dict, dims: dict, quant: LinearQuant | None):
    """One traced program → an fp16 ML Program (iOS 18) with `spec`'s names, compressed by `quant`."""
    import coremltools as ct

    # one RangeDim per flexible dim, shared by the inputs that have it (symbol names are process-global)
    flexible = {d: ct.RangeDim(lo, hi, default=1) for d, (lo, hi) in dims.items()}

    def tensor(t, **name):
        shape = tuple(flexible[d] if isinstance(d, str) else d for d in t["shape"])
        return ct.TensorType(shape=shape, dtype=np.dtype(t["dtype"]).type, **name)

    return ct.convert(
        program,
        inputs=[tensor(t, name=t["name"]) for t in spec["inputs"]],
        outputs=[ct.TensorType(name=t["name"], dtype=np.dtype(t["dtype"]).type) for t in spec["outputs"]],
        states=[ct.StateType(wrapped_type=tensor(t), name=t["name"]) for t in spec["states"]],
        minimum_deployment_target=getattr(ct.target, TARGET),
        compute_precision=ct.precision.FLOAT16,
        pass_pipeline=pipeline(quant),
        skip_model_load=not CAN_PREDICT,
    )


def pipeline(quant: LinearQuant | None):
    """The converter's passes, with `quant`'s compression run inside them: the default passes, the compression
    pass, then the default passes again but the fp16 cast, which is what `cto.linear_quantize_weights` would run
    on the converted model. In one pipeline the fp16 weights are compressed where they are; compressing the
    converted model reads its package back into a second copy of them, beside the mapped package (3B: a peak of
    11.36 GiB against 9.18). Same weights and ops
    (tests/test_coreml.py::test_compression_in_the_pipeline_is_the_post_conversion_one)."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    passes = ct.PassPipeline.DEFAULT
    if quant is not None:
        passes.append_pass(COMPRESSION_PASS)
        for name in ct.PassPipeline.DEFAULT.passes:
            if name not in FP16_PASSES:
                passes.append_pass(name)
        passes.set_options(COMPRESSION_PASS, {"config": cto.OptimizationConfig(global_config=quant.config())})
    return passes


def write(model, scheme: Scheme, out_dir: Path) -> dict:
    """Write VisionEncoder.mlpackage and TextDecoder.mlpackage into `out_dir`; return the manifest fields."""
    import coremltools as ct

    specs, dims, parts = function_specs(model), flexible_dims(model), compression(scheme)
    # tracing runs the model, and the converter reads every weight twice (its frontend compares each with
    # itself, its fp16 pass copies each) with no hook in between: without handing the mapped pages back as it
    # goes, all of them were resident at once (1.7 B: 6.0 GiB after tracing, 5.0 in the frontend and fp16 pass)
    released = released_every(RELEASE_SECONDS, model.page_out_weights)
    with released, tempfile.TemporaryDirectory(dir=out_dir) as tmp:  # scratch beside the bundle being written
        programs = trace_programs(model)
        for name, spec in specs.items():  # one at a time: each is saved before the next is converted
            mlmodel = convert(programs.pop(name), spec, dims, parts.get(name))
            mlmodel.save(str(out_dir / VISION_FILE) if name == "vision_encoder" else f"{tmp}/{name}.mlpackage")
            del mlmodel
            gc.collect()  # a MIL program is a web of reference cycles: its weights go only when collected
            trim_heap()
        desc = ct.utils.MultiFunctionDescriptor()
        for name in ("text_decoder", "token_embedding"):
            desc.add_function(f"{tmp}/{name}.mlpackage", src_function_name="main",
                              target_function_name=specs[name]["function"])
        desc.default_function_name = specs["text_decoder"]["function"]
        ct.utils.save_multifunction(desc, str(out_dir / DECODER_FILE))
    return {
        "max_context": max_context(model),
        "target": TARGET,
        "compute_precision": "float16",
        "compression": {part: parts[part].describe() if part in parts else "float16" for part in PARTS},
        "weight_threshold": WEIGHT_THRESHOLD,
        "flexible_dims": dims,
        "functions": specs,
    }


class CoreML(Exporter):
    mechanisms = MECHANISMS

    def write(self, model, scheme: Scheme, out_dir: Path) -> dict:
        return write(model, scheme, out_dir)

    def runs_here(self) -> bool:
        return CAN_PREDICT

    def offline_verification(self, model, scheme: Scheme, out_dir: Path, data_dir: Path | None = None,
                             limit: int = 100, progress: bool = True, threads: int | None = None) -> dict:
        """The verification record where Core ML cannot predict (see `coreml_verify.linux_verification`)."""
        from edgevlm.export.coreml_verify import linux_verification as run

        return run(model, scheme, out_dir, data_dir, limit, progress, threads)


EXPORTER = CoreML()
