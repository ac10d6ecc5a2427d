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
from edgevlm.bench.weights import decode_bytes_per_token
from edgevlm.bundle.image import load_image
from edgevlm.errors import EdgeVLMError

# bundle format → the distribution whose version names the engine
ENGINE_PACKAGES = {"gguf": "llama-cpp-python", "onnx": "onnxruntime", "executorch": "executorch",
                   "coreml": "coremltools"}


def measure(req: dict) -> dict:
    from edgevlm.runtimes import load_runtime

    t = time.perf_counter()
    runtime = load_runtime(req["bundle"], threads=req["threads"])
    load_ms = (time.perf_counter() - t) * 1e3
    image = load_image(req["image"])
    for _ in range(req["warmup"]):
        runtime.profile(image, req["prompt"], req["new_tokens"])
    runs = [runtime.profile(image, req["prompt"], req["new_tokens"]) for _ in range(req["runs"])]
    bundle = runtime.bundle
    weight_bytes, weight_source = decode_bytes_per_token(bundle)
    result = {
        "bundle": str(bundle.path),
        "format": bundle.format,
        "scheme": bundle.manifest["quantization"]["name"],
        "projector": bundle.manifest.get("model", {}).get("projector"),
        "image_tokens": bundle.image_tokens,
        "runtime": runtime.name,
        "runtime_version": metadata.version(ENGINE_PACKAGES[bundle.format]),
        "bytes_on_disk": sum(f["bytes"] for f in bundle.manifest["files"].values()),
        "decode_weight_bytes": weight_bytes,
        "decode_weight_bytes_from": weight_source,
        "load_ms": load_ms,
        "prefill_tokens": runs[0].prefill_tokens,
        "decode_tokens": runs[0].decode_tokens,
        "image_ms": summarize([r.image_ms for r in runs]),
        "prefill_ms": summarize([r.prefill_ms for r in runs]),
        "ttft_ms": summarize([r.ttft_ms for r in runs]),
        "decode_ms": summarize([r.decode_ms for r in runs]),
        "prefill_tok_s": summarize([r.prefill_tokens / r.prefill_ms * 1e3 for r in runs]),
        "decode_tok_s": summarize([r.decode_tokens / r.decode_ms * 1e3 for r in runs]),
        "split": time_split(runs),
    }
    if req.get("eval"):
        from edgevlm.evaluation import evaluate

        ev = evaluate(runtime, req["eval"], limit=req.get("eval_limit"), progress=False)
        result["accuracy"], result["eval_n"] = ev.accuracy, ev.n
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return result


def time_split(runs: list) -> dict:
    """Where the time goes, median ms over runs: each phase inside the engine vs around it (Python, data
    handling, preprocessing), and one decoded token's share of each."""
    out = {}
    for phase, total in (("image", "image_ms"), ("prefill", "prefill_ms"), ("decode", "decode_ms")):
        if not all(phase in r.engine_ms for r in runs):
            continue
        out[f"{phase}_engine_ms"] = summarize([r.engine_ms[phase] for r in runs])["median"]
        out[f"{phase}_outside_ms"] = summarize([getattr(r, total) - r.engine_ms[phase] for r in runs])["median"]
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
