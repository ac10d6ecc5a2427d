"""A / B of ExecuTorch programs: the same method of two or more bundles, alternating in one process.

`edgevlm bench --rounds` interleaves whole bundles, each in its own worker; on a shared 2-core machine its
rounds can move more than a small change does (docs/benchmarks.md, *ExecuTorch: the tower's
layer norms and no-op expands*).
This loads every program once and alternates single method calls, so every program sees the same machine
state, and checks that their outputs agree:

    benchmarks/et_ab.py OLD_BUNDLE NEW_BUNDLE --method vision_encoder --runs 21 --threads 2
    benchmarks/et_ab.py OLD_BUNDLE NEW_BUNDLE --method text_decoder --runs 5   # prefill, then 16 decode steps

Prints, per bundle, the median [min–max] milliseconds of each phase and the ratio of the medians to the first
bundle's, and the largest difference of each bundle's output from the first's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from edgevlm.bundle.manifest import open_bundle
from edgevlm.runtimes.executorch import ExecuTorchRuntime

DECODE_STEPS = 16


def inputs(method: str, runtime: ExecuTorchRuntime, prefill: int) -> list[torch.Tensor]:
    """The method's inputs, made once per bundle: a seeded uint8 image, or the embeddings of `prefill` + 1 ids
    (any ids: the time does not depend on them) for the prefill and the decode steps."""
    if method == "vision_encoder":
        size = runtime.bundle.manifest["image"]["size"]
        seeded = torch.Generator().manual_seed(0)
        return [torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=seeded)]
    ids = (torch.arange(prefill + 1) % 100)[None]
    table = runtime.methods["token_embedding"].execute([ids])[0]
    return [table[:, :prefill].contiguous(), table[:, prefill:].contiguous()]


def phases(method: str, runtime: ExecuTorchRuntime, args: list[torch.Tensor]) -> dict[str, tuple[float, torch.Tensor]]:
    """One call of `method` (two phases for the decoder): phase → (ms, output)."""
    runner = runtime.methods[method]
    if method == "vision_encoder":
        t = time.perf_counter()
        out = runner.execute(args)[0]
        return {"encode": (1e3 * (time.perf_counter() - t), out)}
    embeds, step = args
    prefill = embeds.shape[1]
    t = time.perf_counter()
    first = runner.execute([embeds, torch.tensor([0])])[0]
    done = {"prefill": (1e3 * (time.perf_counter() - t), first)}
    t = time.perf_counter()
    for i in range(DECODE_STEPS):
        last = runner.execute([step, torch.tensor([prefill + i])])[0]
    done["decode step"] = (1e3 * (time.perf_counter() - t) / DECODE_STEPS, last)
    return done


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", type=Path, nargs="+", help="ExecuTorch bundle dirs; ratios are to the first")
    p.add_argument("--method", choices=("vision_encoder", "text_decoder"), default="vision_encoder")
    p.add_argument("--runs", type=int, default=11, help="timed calls per bundle, after one warm-up each")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefill", type=int, default=187, help="text_decoder: prefill positions")
    p.add_argument("--json", type=Path)
    a = p.parse_args()

    runtimes = [ExecuTorchRuntime(open_bundle(b), threads=a.threads) for b in a.bundles]
    args = [inputs(a.method, rt, a.prefill) for rt in runtimes]
    times = [dict[str, list[float]]() for _ in runtimes]
    outputs = []
    for run in range(a.runs + 1):
        for rt, rt_args, mine in zip(runtimes, args, times):
            done = phases(a.method, rt, rt_args)
            if run == 0:  # the warm-up: XNNPACK packs its weights
                outputs.append({k: out for k, (_, out) in done.items()})
                continue
            for k, (ms, _) in done.items():
                mine.setdefault(k, []).append(ms)
    report = []
    for path, mine, out in zip(a.bundles, times, outputs):
        row = {"bundle": str(path)}
        for k, ms in mine.items():
            med = statistics.median(ms)
            row[k] = {"median_ms": round(med, 1), "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1),
                      "ratio": round(med / statistics.median(times[0][k]), 3),
                      "max_diff": float((out[k] - outputs[0][k]).abs().max())}
        report.append(row)
        print(path, "  ".join(f"{k}: {v['median_ms']} ms [{v['min_ms']}–{v['max_ms']}] ×{v['ratio']}, "
                              f"max diff {v['max_diff']:.3g}" for k, v in row.items() if k != "bundle"))
    if a.json:
        a.json.write_text(json.dumps({"method": a.method, "runs": a.runs, "threads": a.threads, "results": report},
                                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
