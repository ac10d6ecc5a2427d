"""An ExecuTorch image encode split into tower and projector, each timed in the ExecuTorch runtime.

`vision_split.py` measures the split in PyTorch and `onnx_vision_split.py` in onnxruntime's kernel profile; an
ExecuTorch program runs its `vision_encoder` as one method, so this writes a program with two methods over the
same quantized weights, exactly as the exporter makes them (the scheme's `vision_encoder` mechanism, XNNPACK):
`vision_encoder` (preprocessing + tower + projector, the bundle's method) and `tower` (the same with the
projector left out). Both are timed in alternation in a fresh process; projector = encoder - tower, the
medians' difference (at real size smaller than the run-to-run noise, so the JSON keeps the paired differences).
Random pixels: the cost does not depend on the values.

    et_vision_split.py --model runs/bench-real/model [--quant int4] [--threads 2] [--runs 15] [--pte split.pte]
                       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevlm.export.contract import VisionEncoder  # noqa: E402
from edgevlm.export.executorch import MECHANISMS, contract, lower  # noqa: E402
from edgevlm.io import atomic_file  # noqa: E402
from edgevlm.models.checkpoint import ReleaseEvery  # noqa: E402
from edgevlm.models.vlm import EdgeVLM  # noqa: E402
from edgevlm.quant.schemes import scheme  # noqa: E402


def split_program(model: EdgeVLM, quant: str) -> bytes:
    """A .pte with `vision_encoder` and `tower` over one quantized copy of the tower: the exporter's own
    `vision_encoder` (executorch.contract: a copy sharing the model's tensors, the tower traced as the exporter
    traces it) quantized by the scheme's mechanism, lowered as the exporter lowers a bundle's program."""
    encoder = contract(model, model.cfg.llm.max_position_embeddings)["vision_encoder"]
    mechanism = scheme("executorch", quant).mechanisms().get("vision_encoder")
    if mechanism:  # fp32 has none
        MECHANISMS[mechanism](encoder, ReleaseEvery(lambda: None))
    tower = VisionEncoder(encoder.vision, nn.Identity(), model.preprocess).eval()
    size = model.cfg.vision.image_size
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    with torch.no_grad():
        programs = {name: torch.export.export(m, (image,), strict=False)
                    for name, m in (("vision_encoder", encoder), ("tower", tower))}
    return lower(programs, {})


def time_methods(pte: Path, image: torch.Tensor, threads: int, runs: int) -> dict[str, list[float]]:
    """Milliseconds per execution of each method, after one warm-up each (XNNPACK packs its weights then),
    alternating between the methods so that both see the same machine."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    _unsafe_reset_threadpool(threads)
    program = Runtime.get().load_program(pte)
    methods = {name: program.load_method(name) for name in ("vision_encoder", "tower")}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for m in methods.values():
        m.execute([image])
    for _ in range(runs):
        for name, m in methods.items():
            t = time.perf_counter()
            m.execute([image])
            times[name].append(1e3 * (time.perf_counter() - t))
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="an edgevlm model dir")
    p.add_argument("--quant", default="int4", help="the ExecuTorch scheme whose vision mechanism to use")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=15, help="timed encodes per method, after one warm-up each")
    p.add_argument("--pte", type=Path, help="keep the split program here (and reuse it when it exists)")
    p.add_argument("--json", type=Path)
    p.add_argument("--time-only", action="store_true", help=argparse.SUPPRESS)  # internal: the timing process
    a = p.parse_args()
    size = json.loads((a.model / "config.json").read_text())["vision"]["image_size"]
    if a.time_only:
        image = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(0))
        print(json.dumps(time_methods(a.pte, image, a.threads, a.runs)))
        return 0

    mechanism = scheme("executorch", a.quant).mechanisms().get("vision_encoder") or "fp32"
    with tempfile.TemporaryDirectory() as tmp:
        pte = a.pte or Path(tmp) / "split.pte"
        export_s = None
        if not pte.is_file():
            t = time.time()
            buffer = split_program(EdgeVLM.from_pretrained(a.model), a.quant)
            export_s = round(time.time() - t, 1)
            with atomic_file(pte, "wb") as f:
                f.write(buffer)
            del buffer
        # timed in a fresh process: the one that exported holds torch's heap and thread pool beside the runtime's
        out = subprocess.run([sys.executable, __file__, "--model", str(a.model), "--threads", str(a.threads),
                              "--runs", str(a.runs), "--pte", str(pte), "--time-only"],
                             check=True, capture_output=True, text=True).stdout
        times = json.loads(out.strip().splitlines()[-1])
    enc, tower = statistics.median(times["vision_encoder"]), statistics.median(times["tower"])
    result = {"model": str(a.model), "quant": a.quant, "mechanism": mechanism, "threads": a.threads, "runs": a.runs,
              "export_s": export_s, "encoder_ms": times["vision_encoder"], "tower_ms": times["tower"],
              "median_encoder_ms": enc, "median_tower_ms": tower, "projector_ms": enc - tower,
              # run-to-run noise: the spread of the paired (same-iteration) differences
              "paired_diff_ms": sorted(e - t for e, t in zip(times["vision_encoder"], times["tower"]))}
    print(f"{a.model}: ExecuTorch {a.quant} vision ({mechanism}), {a.threads} threads, median of {a.runs}: "
          f"encoder {enc:.0f} ms, tower {tower:.0f} ms, projector {enc - tower:.0f} ms "
          f"({(enc - tower) / enc:.1%})")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
