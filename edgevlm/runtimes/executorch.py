"""Run an ExecuTorch bundle through ExecuTorch's Python bindings (`executorch.runtime.Runtime`).

The bundle's `model.pte` holds the runtime contract as three methods (edgevlm/export/executorch.py); the KV
cache lives in `text_decoder`'s mutable buffers, which persist between calls of the loaded method. Every call
writes its positions before attending to them and attends to nothing later, so a new prompt needs no cache
clearing: writing from position 0 is a reset (ExecuTorch's own runners do the same).

`vision_encoder` in the program takes the resized RGB image as uint8 (what ExecuTorch's MultimodalRunner
feeds it) and normalizes inside; `to_uint8` maps the contract's normalized pixels back to those bytes exactly.

The one runtime that imports torch: ExecuTorch's Python bindings take and return torch tensors. The native
runner (native/, C++) runs the same `.pte` without torch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgevlm.bundle.image import ImagePreprocess
from edgevlm.errors import EdgeVLMError
from edgevlm.log import native_quiet
from edgevlm.bundle.manifest import Bundle
from edgevlm.runtimes.base import ContractRuntime, Setting

PTE = "model.pte"
METHODS = ("vision_encoder", "token_embedding", "text_decoder")


def to_uint8(pre: ImagePreprocess, pixels: np.ndarray) -> np.ndarray:
    """Normalized pixels (1, 3, S, S) from `pre` → the 8-bit levels they came from, (1, 3, S, S) uint8.

    Exact for pixels that `pre` made from an 8-bit image; anything else is not an image the program can take.
    """
    mean = np.asarray(pre.mean, dtype=np.float64).reshape(1, 3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float64).reshape(1, 3, 1, 1)
    levels = (pixels.astype(np.float64) * std + mean) / pre.rescale  # (1, 3, S, S)
    rounded = np.rint(levels)
    if np.abs(levels - rounded).max(initial=0) > 1e-2 or rounded.min(initial=0) < 0 or rounded.max(initial=0) > 255:
        raise EdgeVLMError("pixel values are not this bundle's normalization of an 8-bit RGB image")
    return np.ascontiguousarray(rounded, dtype=np.uint8)


class ExecuTorchRuntime(ContractRuntime):
    name = "executorch"
    # ETDump, the runtime's own event trace (Program load_program(enable_etdump=True)): `Method::execute` spans
    self_timed_phases = ("image", "prefill", "decode")
    settings = {"load": Setting(("mmap", "read"), "mmap", "the program mapped from its file (the bindings' "
                                "MmapDataLoader) or read whole into a Python buffer that lives as long as it")}

    def __init__(self, bundle: Bundle, threads: int | None = None, self_timing: bool = False,
                 settings: dict[str, str] | None = None):
        super().__init__(bundle, threads, self_timing, settings)
        import executorch.kernels.quantized  # noqa: F401  registers the int8 embedding kernels (docs/dependencies.md)
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  llama::update_cache, custom_sdpa
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        path = bundle.file(PTE)
        try:
            with native_quiet():  # the runtime's cpuinfo probing logs to stderr on every machine
                if threads:
                    _unsafe_reset_threadpool(threads)
                source = path if self.setting("load") == "mmap" else path.read_bytes()
                self.program = Runtime.get().load_program(source, enable_etdump=self_timing)
                self.methods = {name: self.program.load_method(name) for name in METHODS}
        except (RuntimeError, ValueError) as e:
            raise EdgeVLMError(f"ExecuTorch cannot load the program ({_first_line(e)})", path) from None
        if None in self.methods.values():
            missing = [n for n, m in self.methods.items() if m is None]
            raise EdgeVLMError(f"program lacks the method(s) {', '.join(missing)}", path)
        self.image_shape = tuple(self.methods["vision_encoder"].metadata.input_tensor_meta(0).sizes())

    def _run(self, name: str, *inputs: torch.Tensor) -> np.ndarray:
        # the bindings read a tensor's memory in contiguous order whatever its strides: make it so
        inputs = [x.contiguous() for x in inputs]
        try:
            with self.in_engine():
                out = self.methods[name].execute(inputs)[0]
            return out.numpy()
        except RuntimeError as e:
            raise EdgeVLMError(f"ExecuTorch {name} failed ({_first_line(e)})", self.bundle.file(PTE)) from None

    def engine_clock(self) -> int:
        """Engine calls so far: each is one method execution, the k-th being the k-th `Method::execute` span."""
        return self.engine_calls

    def engine_elapsed_ms(self, marks: list[int]) -> list[float]:
        """From the program's ETDump, written here: the `Method::execute` spans of the executions between marks
        (ticks are nanoseconds on every platform ExecuTorch's default PAL runs on)."""
        from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc

        tmp = Path(tempfile.mkdtemp(prefix="edgevlm-etdump-"))
        try:
            self.program.write_etdump_result_to_file(str(tmp / "run.etdp"), str(tmp / "debug.bin"))
            etdump = deserialize_from_etdump_flatcc((tmp / "run.etdp").read_bytes())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        spans = [(e.profile_event.start_time, e.profile_event.end_time) for run in etdump.run_data
                 for e in run.events if e.profile_event and e.profile_event.name == "Method::execute"]
        if len(spans) != self.engine_calls:  # an execution outside `in_engine`, or one ETDump missed
            raise EdgeVLMError(f"ETDump holds {len(spans)} executions, edgevlm timed {self.engine_calls}",
                               self.bundle.file(PTE))
        ms = [(end - start) / 1e6 for start, end in sorted(spans)]
        return [sum(ms[a:b]) for a, b in zip(marks, marks[1:])]

    def vision_encoder(self, pixel_values: np.ndarray) -> np.ndarray:
        if tuple(pixel_values.shape) != self.image_shape:
            raise EdgeVLMError(f"image of shape {list(pixel_values.shape)}; the program takes "
                               f"{list(self.image_shape)}", self.bundle.file(PTE))
        image = torch.from_numpy(to_uint8(self.bundle.preprocess, pixel_values))
        return self._run("vision_encoder", image)[0]  # (N_img, D)

    def token_embedding(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) > self.bundle.max_context:  # the program's dynamic length stops there
            raise EdgeVLMError(f"{len(ids)} tokens do not fit the bundle's context of {self.bundle.max_context}",
                               self.bundle.path)
        return self._run("token_embedding", torch.from_numpy(ids[None]))[0]  # (T, D)

    def reset(self) -> None:
        """Nothing to clear: the next prefill writes from position 0 and attends to nothing beyond."""

    def text_decoder(self, embeds: np.ndarray, start_pos: int) -> np.ndarray:
        x = torch.from_numpy(embeds[None].astype(np.float32, copy=False))  # (1, T, D)
        return self._run("text_decoder", x, torch.tensor([start_pos], dtype=torch.int64))[0]  # (V,)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


RUNTIME = ExecuTorchRuntime
