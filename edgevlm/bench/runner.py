"""`edgevlm bench`: measure bundles one process each, beside the machine's measured decode roofline."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

import edgevlm
from edgevlm.bench.devices import Device, host_facts
from edgevlm.bench.roofline import decode_bound, measure_bandwidth
from edgevlm.errors import EdgeVLMError

DEFAULT_PROMPT = "What is in the top left?"


@dataclass
class BenchConfig:
    image: Path | None = None  # None: a generated `shapes` eval image
    prompt: str = DEFAULT_PROMPT
    new_tokens: int = 32
    runs: int = 5
    warmup: int = 1
    threads: int | None = None  # None: every core
    eval: Path | None = None  # LLaVA-format data for accuracy
    eval_limit: int | None = None
    # also time each phase by the engine's own clock (ONNX Runtime profiling, llama.cpp perf counters, ExecuTorch
    # ETDump): `split.PHASE_engine_self_ms`; the profilers cost time, so the other timings are a little slower
    self_timing: bool = False


def bench(bundles: list[Path], cfg: BenchConfig, progress: bool = True, device: Device | None = None) -> dict:
    """Measure every bundle in its own process, then the memory bandwidth; the report as one dict. With a
    `device` (devices.py), the native runner measures on that target instead of the Python runtimes."""
    if device is not None and cfg.eval is not None:
        raise EdgeVLMError("--eval measures accuracy with the host's Python runtimes, not with --device")
    if device is not None and cfg.self_timing:
        raise EdgeVLMError("--self-timing reads the host's Python runtimes' engine clocks, not --device's")
    facts = device.facts() if device is not None else None
    threads = cfg.threads or (facts or {}).get("cores") or os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        image = cfg.image or _default_image(Path(tmp))
        rows = []
        for b in tqdm(bundles, desc="bench", disable=not progress):
            req = _request({**asdict(cfg), "image": image, "threads": threads})
            rows.append(device.measure(b, req) if device is not None else _measure(b, req, Path(tmp)))
    bandwidth = device.bandwidth(threads) if device is not None else measure_bandwidth(threads)
    for r in rows:
        if device is not None and device.emulated:
            _drop_timings(r)
        bound = decode_bound(bandwidth, r["decode_weight_bytes"]) if bandwidth else None
        r["roofline_tok_s"] = bound
        r["roofline_pct"] = 100 * r["decode_tok_s"]["median"] / bound if bound and r["decode_tok_s"] else None
    return {
        "machine": {**facts, "threads": threads, "device": device.target} if device is not None else machine(threads),
        "bandwidth_bytes_s": bandwidth,
        "config": {**asdict(cfg), "image": str(cfg.image or "generated shapes eval image"), "threads": threads},
        "edgevlm_version": edgevlm.__version__,
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "results": rows,
    }


# what an emulated run (qemu) must not report: its timings say nothing about any real device's speed
TIMED = ("load_ms", "image_ms", "prefill_ms", "ttft_ms", "decode_ms", "prefill_tok_s", "decode_tok_s")


def _drop_timings(result: dict) -> None:
    for key in TIMED:
        result[key] = None
    result["split"] = {}
    result["emulated"] = True


def _request(req: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in req.items()}


def _measure(bundle: Path, req: dict, tmp: Path) -> dict:
    req = _request({**req, "bundle": bundle})
    path = tmp / "request.json"
    path.write_text(json.dumps(req))
    done = subprocess.run([sys.executable, "-m", "edgevlm.bench.worker", str(path)], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"error": done.stderr.strip().splitlines()[-1:] or ["crashed"]}
    if "error" in result:
        raise EdgeVLMError(f"benchmark failed: {result['error']}", bundle)
    return result


def _default_image(tmp: Path) -> Path:
    from edgevlm.data.shapes import write_shapes

    data = write_shapes(tmp / "image", 1, seed=0, split="eval", progress=False)
    return next((data / "images").iterdir())


def machine(threads: int) -> dict:
    return {**host_facts(), "threads": threads, "python": platform.python_version()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(edgevlm.__file__).parent,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
