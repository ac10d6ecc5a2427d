"""The browser sample's speed beside Python onnxruntime's on the same ONNX bundles and machine; and how far
onnxruntime-web's int4 logits are from Python's at each MatMulNBits accuracy level.

    .venv/bin/python benchmarks/web_bench.py [--bundle DIR ...] [--work DIR] [--threads 1,2] [--runs 3]

Without --bundle it exports the tiny preset (`mobilevlm-v2-tiny`, random weights, seed 0) to ONNX fp32 and
int4 under --work. Each bundle answers one question about one `shapes` image with exactly --new-tokens
tokens (EOS ignored), after --warmup untimed runs, in Python (`Runtime.profile`, onnxruntime's CPU provider, IO
binding for the KV cache) and in the page in headless Chromium (`window.edgevlm.bench`: onnxruntime-web wasm,
served cross-origin isolated so that --threads > 1 runs multi-threaded wasm). Medians; TTFT = image encode
(preprocessing included) + prefill, as `edgevlm bench` reports it.

The accuracy-level part copies the int4 bundle with every MatMulNBits node's `accuracy_level` set to 0 (same
weights, only the kernel's arithmetic differs: level 4 lets x86 quantize activations to int8, level 0 keeps them
float32 as wasm always does) and compares each bundle's first-step logits in Python and in onnxruntime-web.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from edgevlm.data.llava import read_llava
from edgevlm.data.shapes import write_shapes
from edgevlm.export import ExportConfig, export
from edgevlm.bundle.manifest import file_entries
from edgevlm.io import read_json, write_json
from edgevlm.models.factory import create
from edgevlm.runtimes import load_runtime

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "examples" / "web"
QUESTION = "Describe the image."


def tiny_bundles(work: Path) -> list[Path]:
    model = create("mobilevlm-v2-tiny", seed=0)
    out = []
    for quant in ("fp32", "int4"):
        path = work / f"tiny-onnx-{quant}"
        if not (path / "manifest.json").is_file():
            export(model, ExportConfig("onnx", quant, verify_limit=0), path, progress=False)
        out.append(path)
    return out


def with_accuracy_level(bundle: Path, level: int, out: Path) -> Path:
    """A copy of an int4 bundle whose MatMulNBits nodes have `accuracy_level` = level; manifest re-hashed."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(bundle, out)
    for graph_file in out.glob("*.onnx"):
        graph = onnx.load(graph_file, load_external_data=False)
        nodes = [n for n in graph.graph.node if n.op_type == "MatMulNBits"]
        for node in nodes:
            for attr in node.attribute:
                if attr.name == "accuracy_level":
                    attr.i = level
        if nodes:
            onnx.save(graph, graph_file)
    manifest = read_json(out / "manifest.json")
    manifest["files"] = file_entries(out)
    write_json(out / "manifest.json", manifest)
    return out


def python_speed(bundle: Path, image, threads: int, new_tokens: int, runs: int, warmup: int) -> dict:
    rt = load_runtime(bundle, threads=threads)
    for _ in range(warmup):
        rt.profile(image, QUESTION, new_tokens)
    timings = [rt.profile(image, QUESTION, new_tokens) for _ in range(runs)]
    return {"imageMs": statistics.median(t.image_ms for t in timings),
            "ttftMs": statistics.median(t.ttft_ms for t in timings),
            "decodeTokS": statistics.median(t.decode_tokens / t.decode_ms * 1e3 for t in timings),
            "prefillTokens": timings[0].prefill_tokens}


def page_speed(bundles: list[Path], image_path: Path, threads: list[int], new_tokens: int, runs: int,
               warmup: int, timeout_s: int = 300) -> dict:
    spec = importlib.util.spec_from_file_location("edgevlm_web_serve", WEB / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    server = serve.make_server({b.name: b for b in bundles})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    jobs = [{"bundle": f"bundles/{b.name}/", "image": str(image_path), "threads": t,
             "bench": {"question": QUESTION, "newTokens": new_tokens, "runs": runs, "warmup": warmup}}
            for b in bundles for t in threads]
    config = {"url": f"http://127.0.0.1:{server.server_port}/", "jobs": jobs, "timeoutMs": timeout_s * 1000,
              "totalTimeoutMs": max(600, timeout_s * len(jobs) + 60) * 1000}
    try:
        proc = subprocess.run(["node", "tools/browser.mjs", json.dumps(config)], cwd=WEB, capture_output=True,
                              text=True, timeout=max(1800, 2 * timeout_s * len(jobs)))
    finally:
        server.shutdown()
        server.server_close()
    if proc.returncode:
        raise SystemExit(f"browser run failed: {proc.stderr.strip()}")
    result = json.loads(proc.stdout)
    out = {"browser": result["browser"]}
    for b in result["bench"]:
        r = b["runs"]
        out[(b["bundle"].split("/")[1], b["threads"])] = {
            "imageMs": statistics.median(x["imageMs"] for x in r), "ttftMs": statistics.median(x["ttftMs"] for x in r),
            "decodeTokS": statistics.median(x["decodeTokS"] for x in r), "isolated": b["crossOriginIsolated"],
            "firstTtftMs": b["first"]["ttftMs"], "firstDecodeTokS": b["first"]["decodeTokS"]}
    return out


def logit_gap(bundle: Path, image_path: Path) -> tuple[float, float, bool]:
    """First step, Python onnxruntime vs onnxruntime-web: (max |logit difference| over the vocabulary, max |logit|,
    whether the argmax agrees)."""
    rt = load_runtime(bundle, threads=1)
    embeds = rt.prefill_embeds(rt.encode_image(Image.open(image_path).convert("RGB")), QUESTION)
    rt.reset()
    py = rt.text_decoder(embeds, 0)
    proc = subprocess.run(["node", "tools/logits.mjs", str(bundle), str(image_path), QUESTION], cwd=WEB,
                          capture_output=True, text=True, timeout=600, check=True)
    web = np.asarray(json.loads(proc.stdout), dtype=np.float32)
    return float(np.abs(py - web).max()), float(np.abs(py).max()), bool(np.argmax(py) == np.argmax(web))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", action="append", type=Path, default=[], help="ONNX bundle dir (repeatable)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "web-bench")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=15,
                    help="untimed runs first: V8 compiles wasm with its baseline compiler and optimizes hot functions "
                         "in the background, so the page's first runs are several times slower")
    ap.add_argument("--json", type=Path, help="write the numbers here too")
    ap.add_argument("--page-timeout", type=int, default=300, help="seconds the page may take per bundle and thread "
                    "count (loading included: a real-size bundle is over a gigabyte)")
    ap.add_argument("--no-logits", action="store_true", help="skip the accuracy-level comparison (it copies each "
                    "int4 bundle)")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    bundles = [b.resolve() for b in args.bundle] or tiny_bundles(args.work)
    data = args.work / "shapes"
    if not data.is_dir():
        write_shapes(data, 1, seed=0, split="eval")
    image_path = read_llava(data)[0].image
    image = Image.open(image_path).convert("RGB")

    print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    page = page_speed(bundles, image_path, threads, args.new_tokens, args.runs, args.warmup, args.page_timeout)
    rows = []
    for b in bundles:
        for t in threads:
            py = python_speed(b, image, t, args.new_tokens, args.runs, args.warmup)
            web = page[(b.name, t)]
            rows.append({"bundle": b.name, "threads": t, "python": py, "page": web,
                         "decode_ratio": py["decodeTokS"] / web["decodeTokS"]})
    print(f"load after: {os.getloadavg()[0]:.2f}; {page['browser']}; prompt {rows[0]['python']['prefillTokens']} "
          f"positions, {args.new_tokens} new tokens, median of {args.runs} runs after {args.warmup} warm-up runs "
          "(first answer: the page's first run after loading the bundle)")
    print("| bundle | threads | Python ORT TTFT ms | page TTFT ms | page TTFT ms, first answer | Python ORT decode tok/s "
          "| page decode tok/s | page decode tok/s, first answer | Python ÷ page (decode) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        py, web = r["python"], r["page"]
        print(f"| {r['bundle']} | {r['threads']} | {py['ttftMs']:.1f} | {web['ttftMs']:.1f} | {web['firstTtftMs']:.1f} | "
              f"{py['decodeTokS']:.0f} | {web['decodeTokS']:.0f} | {web['firstDecodeTokS']:.0f} | {r['decode_ratio']:.2f}× |")

    gaps = {}
    for b in bundles:
        if args.no_logits or read_json(b / "manifest.json")["quantization"]["name"] != "int4":
            continue
        for level in (4, 0):
            variant = b if level == 4 else with_accuracy_level(b, 0, args.work / f"{b.name}-acc0")
            gap, scale, same = logit_gap(variant, image_path)
            py0 = python_speed(variant, image, 1, args.new_tokens, args.runs, args.warmup)["decodeTokS"] if level == 0 else None
            gaps[f"{b.name} accuracy_level={level}"] = {"max_abs_logit_diff": gap, "max_abs_logit": scale,
                                                        "same_argmax": same, "python_decode_tok_s_1t": py0}
            print(f"{b.name} accuracy_level={level}: first-step logits, Python vs wasm, max |diff| {gap:.5f} "
                  f"(max |logit| {scale:.2f}), same argmax: {same}"
                  + (f"; Python ORT decode at level 0, 1 thread: {py0:.1f} tok/s" if py0 else ""))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "logit_gaps": gaps, "browser": page["browser"],
                                         "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, indent=1))


if __name__ == "__main__":
    main()
