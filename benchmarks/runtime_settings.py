"""Each runtime's engine knobs (`Runtime.settings`: memory mapping, spinning threads, weight prepacking, ...) and
thread counts, measured the way `edgevlm bench` measures bundles: interleaved rounds, each run beside a bandwidth
reading of its own, medians with their spread.

Per bundle, one `bench` call interleaves the runtime's defaults with every one-knob change of them (same thread
count), so a knob's effect is a within-round ratio (`decode_vs_first`, `ttft_vs_first`: against the defaults);
then the defaults alone at each other thread count, compared by % of roofline (also a within-round ratio).
Peak RSS is each worker process's own. The defaults in `edgevlm/runtimes/` are what these runs chose.

    .venv/bin/python benchmarks/runtime_settings.py runs/bench-real/bundles/{gguf-q4_k,onnx-int4,executorch-int4} \\
        --threads 2,1 --rounds 3 --json runs/bench-real/settings.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgevlm.bench.runner import BenchConfig, bench
from edgevlm.bundle.manifest import open_bundle
from edgevlm.runtimes import runtime_class


def variants(bundle: Path) -> list[dict[str, str]]:
    """The defaults ({}), then each knob at each of its other values, one knob at a time."""
    knobs = runtime_class(open_bundle(bundle)).settings
    return [{}] + [{key: v} for key, s in knobs.items() for v in s.choices if v != s.default]


def rows(report: dict, settings: list[dict[str, str]]) -> list[dict]:
    med = lambda s: s["median"] if s else None  # noqa: E731
    out = []
    for result, changed in zip(report["results"], settings):
        out.append({
            "bundle": Path(result["bundle"]).name, "runtime": result["runtime"],
            "threads": report["machine"]["threads"],
            "changed": ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults",
            "settings": result["settings"],
            "ttft_ms": med(result["ttft_ms"]), "decode_tok_s": med(result["decode_tok_s"]),
            "roofline_pct": result["roofline_pct"], "roofline_pct_spread": result["roofline"]["pct"],
            "decode_vs_defaults": result["ratios"]["decode_vs_first"],
            "ttft_vs_defaults": result["ratios"]["ttft_vs_first"],
            "load_ms": med(result["load_ms"]), "peak_rss_bytes": result["peak_rss_bytes"],
        })
    return out


def markdown(table: list[dict]) -> str:
    def ratio(s):
        return f"{s['median']:.3f} ({s['min']:.3f}–{s['max']:.3f})" if s else "—"

    lines = ["| bundle | threads | settings changed | TTFT ms | decode tok/s | % of roofline | decode ÷ defaults | "
             "TTFT ÷ defaults | load ms | peak RSS GiB |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['bundle']} | {r['threads']} | {r['changed']} | {r['ttft_ms']:.0f} | "
                     f"{r['decode_tok_s']:.1f} | {r['roofline_pct']:.1f} | {ratio(r['decode_vs_defaults'])} | "
                     f"{ratio(r['ttft_vs_defaults'])} | {r['load_ms']:.0f} | {r['peak_rss_bytes'] / 2**30:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--threads", default="2,1", help="comma-separated; the first is where the knobs are compared")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    table = []
    for bundle in a.bundles:
        for i, t in enumerate(threads):
            settings = variants(bundle) if i == 0 else [{}]
            cfg = BenchConfig(runs=a.runs, new_tokens=a.new_tokens, threads=t, rounds=a.rounds)
            report = bench([bundle] * len(settings), cfg, settings=settings)
            table += rows(report, settings)
            tmp = a.json.with_name(a.json.name + ".partial")  # what is done so far survives a stop
            tmp.write_text(json.dumps({"rows": table}, indent=1))
            tmp.replace(a.json)
    print(markdown(table))


if __name__ == "__main__":
    main()
