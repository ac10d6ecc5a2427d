"""The decode roofline: a decoded token reads every LLM weight once and the KV cache up to its position, so
tokens/s ≤ bandwidth ÷ bytes per token (weights.py counts both).

Bandwidth is measured in the same run (a large array copy split over the benchmark's thread count: read +
write bytes over time), as gpt-fast reports effective bandwidth beside its decode speed. numpy releases the GIL
while copying, so one Python thread per slice copies in parallel; no torch, so a runtime-only install benches.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

COPY_BYTES = 512 << 20  # far beyond any last-level cache


def measure_bandwidth(threads: int | None = None, repeats: int = 7) -> float:
    """Best-of-`repeats` copy bandwidth in bytes/s (bytes read + bytes written)."""
    n = threads or os.cpu_count() or 1
    src = np.ones(COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, len(src), n + 1).astype(int)
    slices = [slice(a, b) for a, b in zip(bounds, bounds[1:])]

    def copy(s: slice) -> None:
        np.copyto(dst[s], src[s])

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(copy, slices))  # touch pages first
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(copy, slices))
            best = min(best, time.perf_counter() - t)
    return 2 * COPY_BYTES / best


def decode_bound(bandwidth: float, bytes_per_token: int | None) -> float | None:
    """Upper bound on decode tokens/s at this bandwidth."""
    return bandwidth / bytes_per_token if bytes_per_token else None
