"""`edgevlm bench`: measure bundles one process each, in interleaved rounds, beside the machine's measured decode
roofline."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

import edgevlm
from edgevlm.bench.devices import Device, host_facts
from edgevlm.bench.roofline import measure_bandwidth
from edgevlm.bench.rounds import combine, schedule, spread, with_roofline
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
    rounds: int = 1  # each bundle measured once per round, interleaved, beside a bandwidth reading (rounds.py);
    # `edgevlm bench` defaults to 5; 1 for callers that interleave on their own (benchmarks/native_vs_python.py)


def bench(bundles: list[Path], cfg: BenchConfig, progress: bool = True, device: Device | None = None,
          settings: list[dict[str, str]] | None = None) -> dict:
    """Measure the bundles in rounds (rounds.py): each round measures every bundle once, each in its own process
    and beside a bandwidth reading of its own; the report as one dict. With a `device` (devices.py), the native
    runner measures on that target instead of the Python runtimes. `settings[i]`: engine knobs for bundles[i]
    (`Runtime.settings`); a bundle may be listed more than once, with different knobs."""
    settings = settings or [{} for _ in bundles]
    if len(settings) != len(bundles):
        raise ValueError(f"{len(settings)} settings for {len(bundles)} bundles")
    if device is not None and any(settings):
        raise EdgeVLMError("engine settings apply to the host's Python runtimes, not to --device's runner")
    if device is not None and cfg.eval is not None:
        raise EdgeVLMError("--eval measures accuracy with the host's Python runtimes, not with --device")
    if device is not None and cfg.self_timing:
        raise EdgeVLMError("--self-timing reads the host's Python runtimes' engine clocks, not --device's")
    if cfg.rounds < 1:
        raise EdgeVLMError(f"--rounds must be at least 1, not {cfg.rounds}")
    facts = device.facts() if device is not None else None
    threads = cfg.threads or (facts or {}).get("cores") or os.cpu_count()
    order = schedule(len(bundles), cfg.rounds)
    per_round: list[list[dict]] = []
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=cfg.rounds * len(bundles), desc="bench",
                                                    disable=not progress) as bar:
        image = cfg.image or _default_image(Path(tmp))
        for r, indices in enumerate(order):
            got: dict[int, dict] = {}
            for position, i in enumerate(indices):
                req = _request({**asdict(cfg), "image": image, "threads": threads, "settings": settings[i],
                                "eval": cfg.eval if r == 0 else None})  # accuracy once: it does not vary
                row = device.measure(bundles[i], req) if device is not None else _measure(bundles[i], req, Path(tmp))
                # right after it (on a phone, `measure` is what puts the runner there)
                bandwidth = device.bandwidth(threads) if device is not None else measure_bandwidth(threads)
                got[i] = with_roofline({**_with_kv(bundles[i], row, device), "position": position}, bandwidth)
                bar.update()
            per_round.append([got[i] for i in range(len(bundles))])
    readings = [[per_round[r][i]["bandwidth_bytes_s"] for i in indices] for r, indices in enumerate(order)]
    flat = [x for rnd in readings for x in rnd if x is not None]
    return {
        "machine": {**facts, "threads": threads, "device": device.target} if device is not None else machine(threads),
        "bandwidth_bytes_s": statistics.median(flat) if flat else None,
        "bandwidth": spread(flat) if flat else None,
        "rounds": [{"order": [str(bundles[i]) for i in indices], "bandwidth_bytes_s": bw}
                   for indices, bw in zip(order, readings)],
        "config": {**asdict(cfg), "image": str(cfg.image or "generated shapes eval image"), "threads": threads},
        "edgevlm_version": edgevlm.__version__,
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "results": combine(bundles, per_round),
    }


def _with_kv(bundle: Path, row: dict, device: Device | None) -> dict:
    """The bytes per token the result lacks or only estimates (the native runner's: no KV bytes, an estimate for
    a .pte), read from the bundle on this host. An emulated device's timings are dropped here, before any figure
    is made of them."""
    from edgevlm.bench.weights import decode_bytes_per_token, kv_bytes_per_token
    from edgevlm.bundle.manifest import open_bundle

    if device is not None and device.emulated:
        _drop_timings(row)
    if "decode_kv_bytes" not in row:
        row["decode_kv_bytes"], row["decode_kv_bytes_from"] = kv_bytes_per_token(
            open_bundle(bundle), row["prefill_tokens"], row["decode_tokens"])
    if row.get("decode_weight_bytes_from") == "estimate":
        row["decode_weight_bytes"], row["decode_weight_bytes_from"] = decode_bytes_per_token(open_bundle(bundle))
    return row


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
