"""Run a CoreML bundle through Core ML itself (coremltools' `MLModel`), on macOS only.

The bundle holds two ML Programs (iOS 18 / macOS 15): `VisionEncoder.mlpackage` and the multifunction
`TextDecoder.mlpackage` (functions `text_decoder`, with the KV cache as Core ML state, and `token_embedding`).
The manifest names each function's file, inputs, outputs and states. Generation keeps one state per prompt
(`make_state()`, then `predict(..., state)`), as Apple's stateful-model guide describes
(apple.github.io/coremltools/docs-guides/source/stateful-models.html).

Core ML predicts only on macOS; coremltools on Linux converts and compresses but cannot run a model, so this
runtime refuses other systems with one line (the exporter verifies there what can be verified without Core ML).
"""

from __future__ import annotations

import platform

import numpy as np

from edgevlm.errors import EdgeVLMError
from edgevlm.bundle.manifest import Bundle
from edgevlm.engines.coreml import CAN_PREDICT, NO_PREDICTION, causal_mask
from edgevlm.runtimes.base import ContractRuntime

class CoreMLRuntime(ContractRuntime):
    name = "coreml"

    def __init__(self, bundle: Bundle, threads: int | None = None, self_timing: bool = False,
                 settings: dict[str, str] | None = None):
        super().__init__(bundle, threads, self_timing, settings)  # Core ML picks its own threads and compute units
        if not CAN_PREDICT:
            raise EdgeVLMError(f"{NO_PREDICTION} (this is {platform.system()}); run the bundle on a Mac or in the "
                               "iOS app", bundle.path)
        import coremltools as ct

        self.functions = bundle.runtime_fields["functions"]
        self.models = {
            name: ct.models.MLModel(str(self._package(f["file"])), function_name=f["function"])
            for name, f in self.functions.items()
        }
        self.state = None

    def _package(self, name: str):
        path = self.bundle.path / name
        if not path.is_dir():
            raise EdgeVLMError("ML package listed in manifest.json is missing", path)
        return path

    def _predict(self, function: str, *arrays: np.ndarray, **kw) -> np.ndarray:
        spec = self.functions[function]
        feed = {i["name"]: a for i, a in zip(spec["inputs"], arrays)}
        return self.models[function].predict(feed, **kw)[spec["outputs"][0]["name"]]

    def vision_encoder(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._predict("vision_encoder", pixel_values.astype(np.float32))[0]  # (N_img, D)

    def token_embedding(self, ids: np.ndarray) -> np.ndarray:
        return self._predict("token_embedding", ids.astype(np.int32)[None])[0]  # (T, D)

    def reset(self) -> None:
        self.state = self.models["text_decoder"].make_state()

    def text_decoder(self, embeds: np.ndarray, start_pos: int) -> np.ndarray:
        mask = causal_mask(start_pos, len(embeds))  # (1, 1, T, E)
        logits = self._predict("text_decoder", embeds.astype(np.float32)[None], mask, state=self.state)
        return logits[0, -1]  # (V,)


RUNTIME = CoreMLRuntime
