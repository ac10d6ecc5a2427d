"""Where an ONNX bundle's decode time goes, per operator type, against the machine's copy bandwidth.

onnxruntime's own profiler (SessionOptions.enable_profiling) times every kernel; this groups the kernels of the
decode steps (prefill and the first step left out) by operator type, and beside each type puts the bytes its
weights occupy in the graph (initializers, read once per token), so that each weight-bound operator gets an
effective bandwidth to hold against the copy bandwidth that `edgevlm bench` measures. Random embeddings stand
for the prompt: decode cost does not depend on the values.

    onnx_decode_ops.py BUNDLE [--threads 2] [--prompt 187] [--steps 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from edgevlm.bench.roofline import measure_bandwidth
from edgevlm.bench.weights import initializer_bytes
from edgevlm.bundle.manifest import open_bundle
from edgevlm.runtimes.onnxruntime import OnnxRuntime


def weight_bytes(graph_path: Path) -> dict[str, int]:
    """Node name → bytes of the initializers it reads (external data counted by its recorded length)."""
    graph = onnx.load(graph_path, load_external_data=False).graph
    sizes = {t.name: initializer_bytes(t) for t in graph.initializer}
    return {n.name: sum(sizes.get(i, 0) for i in n.input) for n in graph.node}


def kernel_times(profile: Path, skip_runs: int) -> tuple[dict[str, float], dict[str, str], int]:
    """Kernel µs summed per node over the runs after the first `skip_runs`, node → op type, and the runs kept."""
    events = json.loads(profile.read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[skip_runs:]
    per_node, op_of = defaultdict(float), {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if any(a <= e["ts"] <= b for a, b in runs):
            node = e["name"][: -len("_kernel_time")]
            per_node[node] += e["dur"]
            op_of[node] = e["args"]["op_name"]
    return per_node, op_of, len(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=187, help="prompt positions before decoding")
    p.add_argument("--steps", type=int, default=32, help="decode steps (the first is left out as warm-up)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()

    bundle = open_bundle(a.bundle)
    runtime = OnnxRuntime(bundle, threads=a.threads, self_timing=True)
    dim = bundle.runtime_fields["graphs"]["decoder"]["inputs"]["inputs_embeds"][1][-1]
    embeds = np.random.default_rng(0).standard_normal((a.prompt, dim)).astype(np.float32)
    logits = runtime.text_decoder(embeds, 0)
    for pos in range(a.prompt, a.prompt + a.steps):
        logits = runtime.text_decoder(runtime.token_embedding(np.array([int(np.argmax(logits))])), pos)
    profile = Path(runtime.sessions["decoder"].end_profiling())
    per_node, op_of, tokens = kernel_times(profile, skip_runs=2)
    profile.unlink()
    bandwidth = measure_bandwidth(a.threads)

    nodes_bytes = weight_bytes(bundle.file("decoder.onnx"))
    by_op = defaultdict(lambda: {"ms_per_token": 0.0, "weight_mb": 0.0, "nodes": 0})
    for node, us in per_node.items():
        row = by_op[op_of[node]]
        row["ms_per_token"] += us / 1e3 / tokens
        row["weight_mb"] += nodes_bytes.get(node, 0) / 1e6
        row["nodes"] += 1
    total = sum(r["ms_per_token"] for r in by_op.values())
    rows = sorted(by_op.items(), key=lambda kv: -kv[1]["ms_per_token"])
    print(f"{a.bundle}: {tokens} decode steps after a {a.prompt}-position prompt, {a.threads} threads; "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; kernels {total:.1f} ms per token")
    print("| operator | nodes | ms per token | share | weight MB read per token | effective GB/s | of copy bandwidth |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for op, r in rows:
        gbs = r["weight_mb"] / 1e3 / (r["ms_per_token"] / 1e3) if r["weight_mb"] >= 1 else None
        print(f"| {op} | {r['nodes']} | {r['ms_per_token']:.2f} | {r['ms_per_token'] / total:.0%} | "
              f"{r['weight_mb']:.0f} | {'–' if gbs is None else f'{gbs:.1f}'} | "
              f"{'–' if gbs is None else f'{gbs / (bandwidth / 1e9):.0%}'} |")
    if a.json:
        a.json.write_text(json.dumps({"bundle": str(a.bundle), "threads": a.threads, "prompt": a.prompt,
                                      "tokens": tokens, "bandwidth_bytes_s": bandwidth, "ops": dict(rows)}, indent=1))


if __name__ == "__main__":
    main()
