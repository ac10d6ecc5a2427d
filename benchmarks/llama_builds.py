"""llama.cpp builds against each other on the same GGUF bundles (issue #20, item 1): which compile of ggml
runs our bundles fastest on this CPU.

    llama_builds.py runs/bench-real/bundles/gguf-q4_k --build portable= --build native=/work/llama-native \\
        --rounds 5 --json runs/bench-real/llama_builds.json

A build is a llama-cpp-python installed into its own directory (`pip install --target DIR` with the CMAKE_ARGS
to compare, from the patched sources `scripts/setup` keeps in .venv/src); `NAME=` with no directory is the one
in the venv. Each round runs `edgevlm bench` once per bundle and build, the builds in turn (A B, then B A, ...), each
bench in its own worker process with the build's directory first on PYTHONPATH and beside a bandwidth reading
of its own; the ratios to the first build are taken within a round, then the median over rounds with min–max.
The bench JSON's `engine_build` (`llama_print_system_info()`) says which kernels each worker really loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from edgevlm.bench.runner import BenchConfig, bench

METRICS = ("image_ms", "prefill_ms", "ttft_ms", "decode_tok_s")


def measure(bundle: Path, build: str, cfg: BenchConfig) -> dict:
    """One bench of one bundle with `build` first on the worker's PYTHONPATH ('' = the venv's llama_cpp)."""
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (build, old) if p)
    try:
        report = bench([bundle], cfg, progress=False)
    finally:
        os.environ["PYTHONPATH"] = old
    r = report["results"][0]
    return {**{m: r[m]["median"] for m in METRICS}, "roofline_pct": r["roofline_pct"],
            "peak_rss_bytes": r["peak_rss_bytes"], "engine_build": r["engine_build"]}


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def summarize(rounds: list[dict[str, dict]], builds: list[str]) -> dict[str, dict]:
    """Per build: medians over rounds, and each metric's within-round ratio to the first build."""
    first = builds[0]
    out = {}
    for b in builds:
        out[b] = {m: spread([r[b][m] for r in rounds]) for m in (*METRICS, "roofline_pct")}
        out[b]["vs_first"] = {m: spread([r[b][m] / r[first][m] for r in rounds]) for m in METRICS}
        out[b]["peak_rss_bytes"] = max(r[b]["peak_rss_bytes"] for r in rounds)
        out[b]["engine_build"] = rounds[0][b]["engine_build"]
    return out


def markdown(bundle: str, s: dict[str, dict]) -> str:
    def ratio(x):
        return f"{x['median']:.2f} ({x['min']:.2f}–{x['max']:.2f})"

    lines = [f"**{bundle}**", "", "| build | image ms | prefill ms | TTFT ms | decode tok/s | % of roofline | "
             "image ÷ first | TTFT ÷ first | decode ÷ first | peak RSS GiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b, r in s.items():
        lines.append(f"| {b} | {r['image_ms']['median']:.0f} | {r['prefill_ms']['median']:.0f} | "
                     f"{r['ttft_ms']['median']:.0f} | {r['decode_tok_s']['median']:.1f} | "
                     f"{r['roofline_pct']['median']:.0f} | {ratio(r['vs_first']['image_ms'])} | "
                     f"{ratio(r['vs_first']['ttft_ms'])} | {ratio(r['vs_first']['decode_tok_s'])} | "
                     f"{r['peak_rss_bytes'] / 2**30:.2f} |")
    lines += [""] + [f"- {b}: `{r['engine_build']}`" for b, r in s.items()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--build", action="append", required=True, metavar="NAME=DIR",
                   help="a llama-cpp-python install dir (empty: the venv's); the first is the reference")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args()
    builds = dict(b.split("=", 1) for b in a.build)
    for name, d in builds.items():
        if d and not (Path(d) / "llama_cpp").is_dir():
            p.error(f"--build {name}={d}: no llama_cpp package in that directory")
    cfg = BenchConfig(runs=a.runs, new_tokens=a.new_tokens, threads=a.threads)
    result, text = {}, []
    for bundle in a.bundles:
        rounds = []
        for r in range(a.rounds):
            order = list(builds) if r % 2 == 0 else list(builds)[::-1]  # A B, B A, ...: no build always first
            got = {name: measure(bundle, builds[name], cfg) for name in order}
            rounds.append({name: got[name] for name in builds})
            print(f"{bundle.name} round {r + 1}/{a.rounds}: " + ", ".join(
                f"{n} decode {m['decode_tok_s']:.1f} tok/s TTFT {m['ttft_ms']:.0f} ms" for n, m in rounds[-1].items()),
                flush=True)
        result[bundle.name] = {"rounds": rounds, "summary": summarize(rounds, list(builds))}
        text.append(markdown(bundle.name, result[bundle.name]["summary"]))
        tmp = a.json.with_name(a.json.name + ".partial")  # what is done so far survives a stop
        tmp.write_text(json.dumps({"builds": builds, "threads": a.threads, "bundles": result}, indent=1))
        tmp.replace(a.json)
    print("\n\n".join(text))


if __name__ == "__main__":
    main()
