"""One bundle's measurements, in a process of its own so that peak memory and thread settings are its own.

`python -m edgevlm.bench.worker REQUEST.json` prints one JSON line; the runner starts one per bundle.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from importlib import metadata

from edgevlm.bench.stats import summarize
from edgevlm.bench.weights import decode_bytes_per_token, kv_bytes_per_token
from edgevlm.bundle.image import load_image
from edgevlm.errors import EdgeVLMError
from edgevlm.runtimes.base import PHASES

# bundle format → the distribution whose version names the engine
ENGINE_PACKAGES = {"gguf": "llama-cpp-python", "onnx": "onnxruntime", "executorch": "executorch",
                   "coreml": "coremltools"}


def _llama_cpp_build() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode().strip()


# bundle format → what the engine's build says about itself (which CPU kernels it has)
BUILD_FACTS = {"gguf": _llama_cpp_build}


def measure(req: dict) -> dict:
    from edgevlm.runtimes import load_runtime

    t = time.perf_counter()
    self_timing = req.get("self_timing", False)
    runtime = load_runtime(req["bundle"], threads=req["threads"], self_timing=self_timing,
                           settings=req.get("settings"))
    load_ms = (time.perf_counter() - t) * 1e3
    image = load_image(req["image"])
    for _ in range(req["warmup"]):
        runtime.profile(image, req["prompt"], req["new_tokens"])
    runs = [runtime.profile(image, req["prompt"], req["new_tokens"]) for _ in range(req["runs"])]
    own = runtime.engine_self_ms()[req["warmup"]:] if self_timing else None  # ends the engine's profiling
    bundle = runtime.bundle
    weight_bytes, weight_source = decode_bytes_per_token(bundle)
    kv_bytes, kv_source = kv_bytes_per_token(bundle, runs[0].prefill_tokens, runs[0].decode_tokens)
    result = {
        "bundle": str(bundle.path),
        "format": bundle.format,
        "scheme": bundle.manifest["quantization"]["name"],
        "projector": bundle.manifest.get("model", {}).get("projector"),
        "image_tokens": bundle.image_tokens,
        "runtime": runtime.name,
        "settings": runtime.chosen,
        "runtime_version": metadata.version(ENGINE_PACKAGES[bundle.format]),
        "bytes_on_disk": sum(f["bytes"] for f in bundle.manifest["files"].values()),
        "decode_weight_bytes": weight_bytes,
        "decode_weight_bytes_from": weight_source,
        "decode_kv_bytes": kv_bytes,
        "decode_kv_bytes_from": kv_source,
        "load_ms": load_ms,
        "prefill_tokens": runs[0].prefill_tokens,
        "decode_tokens": runs[0].decode_tokens,
        "image_ms": summarize([r.image_ms for r in runs]),
        "prefill_ms": summarize([r.prefill_ms for r in runs]),
        "ttft_ms": summarize([r.ttft_ms for r in runs]),
        "decode_ms": summarize([r.decode_ms for r in runs]),
        "prefill_tok_s": summarize([r.prefill_tokens / r.prefill_ms * 1e3 for r in runs]),
        "decode_tok_s": summarize([r.decode_tokens / r.decode_ms * 1e3 for r in runs]),
        "split": time_split(runs, own),
    }
    if bundle.format in BUILD_FACTS:
        result["engine_build"] = BUILD_FACTS[bundle.format]()
    if req.get("eval"):
        from edgevlm.evaluation import evaluate

        ev = evaluate(runtime, req["eval"], limit=req.get("eval_limit"), progress=False)
        result["accuracy"], result["eval_n"] = ev.accuracy, ev.n
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


def peak_rss_bytes() -> int:
    """This process's own peak resident set. Linux: VmHWM of /proc/self/status, because `ru_maxrss` survives
    exec and would report the bench runner's memory at the moment it started this worker whenever that is
    larger (every small bundle measured the runner, not the runtime)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB (macOS: bytes)


def time_split(runs: list, own: list[dict] | None = None) -> dict:
    """Where the time goes, median ms over runs: each phase inside the engine vs around it (Python, data
    handling, preprocessing), and one decoded token's share of each.

    `own` (`Runtime.engine_self_ms`, per run) checks `PHASE_engine_ms`, our clock around the engine calls, against
    the engine's own: `PHASE_engine_self_ms` is its median, `PHASE_engine_unseen_ms` the median of each run's ours
    − theirs, paired because on a busy machine runs differ far more than two clocks within one run. The unseen
    time is the bindings' argument and result handling (a little negative for llama.cpp, whose clock runs on to
    the logits read)."""
    out = {}
    for phase in PHASES:
        if not all(phase in r.engine_ms for r in runs):
            continue
        total = [getattr(r, f"{phase}_ms") for r in runs]
        out[f"{phase}_engine_ms"] = summarize([r.engine_ms[phase] for r in runs])["median"]
        out[f"{phase}_outside_ms"] = summarize([t - r.engine_ms[phase] for t, r in zip(total, runs)])["median"]
        out[f"{phase}_engine_calls"] = runs[0].engine_calls[phase]
        if own and all(phase in o for o in own):
            out[f"{phase}_engine_self_ms"] = summarize([o[phase] for o in own])["median"]
            out[f"{phase}_engine_unseen_ms"] = summarize([r.engine_ms[phase] - o[phase]
                                                          for r, o in zip(runs, own)])["median"]
    n = runs[0].decode_tokens
    if "decode_engine_ms" in out and n:
        out["token_engine_ms"] = out["decode_engine_ms"] / n
        out["token_outside_ms"] = out["decode_outside_ms"] / n
    return out


def main() -> int:
    req = json.loads(open(sys.argv[1]).read())
    try:
        print(json.dumps(measure(req)))
    except EdgeVLMError as e:
        print(json.dumps({"error": str(e)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
