"""An ONNX bundle's image encode split into tower and projector, from onnxruntime's own kernel times.

`vision_split.py` measures the split in PyTorch; this measures it in the runtime. The vision graph runs both
parts in one session (opened as `edgevlm.runtimes.onnxruntime` opens it, with profiling on and the graph that
onnxruntime optimized saved), so its kernels (SessionOptions.enable_profiling) are split by that graph: the
tower is every node that the nodes reading the tower's named weights (`vision.tower.*` initializers) need, the
projector everything else (the tower's last residual add and its feature-layer slice fall on the projector's
side: a few elementwise kernels). Random pixels: the cost does not depend on the values.

    onnx_vision_split.py BUNDLE [--threads 2] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgevlm.bundle.manifest import open_bundle
from edgevlm.runtimes.onnxruntime import open_session
from onnx_decode_ops import kernel_times

TOWER_WEIGHTS = "vision.tower."


def tower_nodes(graph_path: Path) -> set[str]:
    """The nodes the tower's named weights need: those reading them and all their ancestors."""
    graph = onnx.load(graph_path, load_external_data=False).graph
    maker = {out: n for n in graph.node for out in n.output}
    todo = [n for n in graph.node if any(i.startswith(TOWER_WEIGHTS) for i in n.input)]
    seen: set[str] = set()
    while todo:
        node = todo.pop()
        if node.name not in seen:
            seen.add(node.name)
            todo.extend(maker[i] for i in node.input if i in maker)
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5, help="image encodes after one warm-up")
    p.add_argument("--json", type=Path)
    a = p.parse_args()

    bundle = open_bundle(a.bundle)
    entry = bundle.runtime_fields["graphs"]["vision"]
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = a.threads
        options.enable_profiling = True
        options.profile_file_prefix = f"{tmp}/vision"
        options.optimized_model_filepath = f"{tmp}/optimized.onnx"
        session = open_session(bundle, entry, bundle.runtime_fields["opset"], options)
        pixels = np.random.default_rng(0).standard_normal(entry["inputs"]["pixel_values"][1]).astype(np.float32)
        for _ in range(a.runs + 1):
            session.run(["image_embeds"], {"pixel_values": pixels})
        per_node, op_of, runs = kernel_times(Path(session.end_profiling()), skip_runs=1)
        tower = tower_nodes(Path(tmp) / "optimized.onnx")

    parts = {name: {"nodes": 0, "ms_per_image": defaultdict(float)} for name in ("tower", "projector")}
    for node, us in per_node.items():
        part = parts["tower" if node in tower else "projector"]
        part["nodes"] += 1
        part["ms_per_image"][op_of[node]] += us / 1e3 / runs
    total = sum(sum(part["ms_per_image"].values()) for part in parts.values())
    print(f"{a.bundle}: {runs} image encodes, {a.threads} threads; kernels {total:.0f} ms per image")
    print("| part | nodes | ms per image | share | top operators (ms) |")
    print("|---|---:|---:|---:|---|")
    for name, part in parts.items():
        ops = part["ms_per_image"]
        ms = sum(ops.values())
        top = ", ".join(f"{op} {t:.0f}" for op, t in sorted(ops.items(), key=lambda kv: -kv[1])[:4])
        print(f"| {name} | {part['nodes']} | {ms:.1f} | {ms / total:.1%} | {top} |")
    if a.json:
        a.json.write_text(json.dumps({"bundle": str(a.bundle), "threads": a.threads, "runs": runs, "parts": parts},
                                     indent=1))

if __name__ == "__main__":
    main()
