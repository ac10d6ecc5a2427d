"""The decode roofline: a decoded token reads every LLM weight once, so tokens/s ≤ bandwidth ÷ bytes per token.

Bandwidth is measured in the same run (a large tensor copy with the benchmark's thread count: read + write
bytes over time), as gpt-fast reports effective bandwidth beside its decode speed.
"""

from __future__ import annotations

import time

import torch

COPY_BYTES = 512 << 20  # far beyond any last-level cache


def measure_bandwidth(threads: int | None = None, repeats: int = 7) -> float:
    """Best-of-`repeats` copy bandwidth in bytes/s (bytes read + bytes written)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        src = torch.ones(COPY_BYTES // 4, dtype=torch.float32)
        dst = torch.empty_like(src)
        dst.copy_(src)  # touch pages first
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t)
        return 2 * COPY_BYTES / best
    finally:
        torch.set_num_threads(before)


def decode_bound(bandwidth: float, bytes_per_token: int | None) -> float | None:
    """Upper bound on decode tokens/s at this bandwidth."""
    return bandwidth / bytes_per_token if bytes_per_token else None
