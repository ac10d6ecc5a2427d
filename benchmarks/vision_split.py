"""Image encode split into tower and projector, in PyTorch (fp32, eager), at real size.

No runtime exposes the two separately (ONNX's vision graph, ExecuTorch's `vision_encoder` method and llama.cpp's
`mtmd_encode_chunk` each run both), so their share is measured here on the same architecture with the
benchmark's thread count: a proportion to read each runtime's image time with, not a runtime's own number.

    vision_split.py --out results/vision_split.json [--threads N] [--preset mobilevlm-v2-1.7b]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from edgevlm.config import ProjectorConfig, VisionKind
from edgevlm.models.presets import get_preset
from edgevlm.models.projectors import build_projector, projector_tokens
from edgevlm.models.vision import VisionTower

PROJECTORS = {"ldpv2": ({"kind": "ldpv2"}, VisionKind.CLIP), "mlp2x_gelu": ({"kind": "mlp2x_gelu"}, VisionKind.CLIP),
              "pixel_shuffle-r3": ({"kind": "pixel_shuffle", "shuffle_ratio": 3}, VisionKind.SIGLIP)}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def measure(preset: str, repeats: int) -> dict:
    base = get_preset(preset)
    towers: dict[VisionKind, tuple[float, torch.Tensor]] = {}
    out = {}
    for name, (proj_kw, kind) in PROJECTORS.items():
        vcfg = dataclasses.replace(base.vision, kind=kind, drop_first_token=None)  # re-runs __post_init__
        if kind not in towers:
            torch.manual_seed(0)
            tower = VisionTower(vcfg).eval()
            pixels = torch.randn(1, 3, vcfg.image_size, vcfg.image_size)
            feats = tower(pixels)
            towers[kind] = (timed(lambda: tower(pixels), repeats), feats)
            del tower
        tower_ms, feats = towers[kind]
        pcfg = ProjectorConfig(**proj_kw)
        projector = build_projector(pcfg, vcfg.hidden_size, base.llm.hidden_size).eval()
        out[name] = {"tower": kind.value, "image_tokens": projector_tokens(pcfg, vcfg.num_patches),
                     "tower_ms": tower_ms, "projector_ms": timed(lambda: projector(feats), repeats)}
        print(name, out[name], flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--preset", default="mobilevlm-v2-1.7b")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    result = {"threads": torch.get_num_threads(), "preset": a.preset, "dtype": "float32",
              "projectors": measure(a.preset, a.repeats)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
