"""Core ML facts shared by its exporter and its runtime: where prediction runs, and the decoder's mask input.

The bundle's `text_decoder` function takes `causal_mask` (1, 1, T, E): its last dimension tells the program
where the call ends (docs/bundle-spec.md, section 7); the exporter traces with it and the runtime feeds it.
"""

from __future__ import annotations

import platform

import numpy as np

CAN_PREDICT = platform.system() == "Darwin"
NO_PREDICTION = "CoreML prediction needs macOS"


def causal_mask(start: int, length: int) -> np.ndarray:
    """`text_decoder`'s mask for positions start .. start+length-1: (1, 1, T, E = start+T), 0 or -inf.

    Its last dimension tells the program where the call ends (the start position comes from shapes)."""
    end = start + length
    allowed = np.arange(end)[None, :] <= np.arange(start, end)[:, None]  # (T, E)
    return np.where(allowed, 0.0, -np.inf).astype(np.float32)[None, None]
