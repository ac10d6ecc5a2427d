"""The native runner (`edgevlm-run`, `edgevlm bench --device local`) beside the Python runtimes, same bundles.

    .venv/bin/python benchmarks/native_vs_python.py --work runs/bench-real --rounds 5

Both sides measure the same bundle with the same request (image, prompt, tokens, threads, warm-up + runs) and
the same definitions (TTFT = image encode + prefill; decode without prefill; peak RSS = the measuring process's
VmHWM). The two sides are interleaved — round r measures Python then native, round r+1 native then Python —
so a machine that slows down between rounds (other load, heat) costs both sides alike. Every figure is the
median over rounds of each round's median, with the spread over rounds. Native ÷ Python is taken within each
round (the two sides back to back) and reported as the median of those paired ratios, so that a small difference
stays visible on a machine whose speed drifts between rounds by more than that difference. `--report` re-writes
the section from native.json without measuring again. No % of roofline here: the two sides
read the bandwidth with different probes (numpy's copy, the runner's memcpy), which disagreed by up to 2x in
one run; the per-round readings stay in native.json.

Writes `--work/results/native.json` and the section between the markers in docs/benchmarks.md (the report step
of benchmarks/run.py keeps that section).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgevlm.bench.devices import open_device  # noqa: E402
from edgevlm.bench.runner import BenchConfig, bench  # noqa: E402
from edgevlm.io import atomic_file  # noqa: E402

BUNDLES = ["gguf-q4_k", "executorch-int4"]  # the formats the native runner reads
SIDES = ("python", "native")
START, END = "<!-- native-vs-python -->", "<!-- /native-vs-python -->"
# what a row reports: (JSON key in a bench result, how to read one value from it)
FIGURES = {
    "image_s": lambda r: r["image_ms"]["median"] / 1e3,
    "prefill_tok_s": lambda r: r["prefill_tok_s"]["median"],
    "ttft_s": lambda r: r["ttft_ms"]["median"] / 1e3,
    "decode_tok_s": lambda r: r["decode_tok_s"]["median"],
    "peak_rss_gb": lambda r: r["peak_rss_bytes"] / 1e9,
}


def measure(bundles: list[Path], rounds: int, cfg: BenchConfig) -> dict:
    local = open_device("local")
    per: dict = {b.name: {s: [] for s in SIDES} for b in bundles}
    for r in range(rounds):
        order = SIDES if r % 2 == 0 else SIDES[::-1]
        for b in bundles:
            for side in order:
                t0 = time.perf_counter()
                report = bench([b], cfg, progress=False, device=local if side == "native" else None)
                row = report["results"][0]
                row["bandwidth_bytes_s"] = report["bandwidth_bytes_s"]
                per[b.name][side].append(row)
                print(f"round {r + 1}/{rounds} {b.name} {side}: decode {row['decode_tok_s']['median']:.1f} tok/s, "
                      f"TTFT {row['ttft_ms']['median'] / 1e3:.2f} s ({time.perf_counter() - t0:.0f} s)", flush=True)
    return per


def summary(rows: list[dict]) -> dict:
    out = {}
    for name, read in FIGURES.items():
        values = [read(r) for r in rows]
        out[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    out["engine"] = f"{rows[0]['runtime']} {rows[0].get('runtime_version', '')}".strip()
    return out


def section(record: dict) -> str:
    """The docs section from native.json (also what benchmarks/report_doc.py includes)."""
    per, cfg, rounds, when = record["rounds"], BenchConfig(**record["config"]), record["n_rounds"], record["date"]
    lines = [START, "## The native runner beside the Python runtimes", "",
             f"`benchmarks/native_vs_python.py --rounds {rounds}`: `edgevlm bench` (Python runtime, one worker "
             f"process) and `edgevlm bench --device local` (`build/native/edgevlm-run`, C++) on the same bundles, "
             f"interleaved round by round, {cfg.runs} timed runs after {cfg.warmup} warm-up per call, "
             f"{cfg.new_tokens} new tokens, {cfg.threads} threads; each figure is the median over the {rounds} "
             f"rounds (± half the range over rounds). Measured {when}.", "",
             "| bundle | side | engine | image s | prefill tok/s | TTFT s | decode tok/s | peak RSS GB |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, sides in per.items():
        for side in SIDES:
            s = summary(sides[side])
            lines.append(f"| {name} | {side} | {s['engine']} | " + " | ".join(
                _pm(s[k], d) for k, d in (("image_s", 2), ("prefill_tok_s", 0), ("ttft_s", 2),
                                          ("decode_tok_s", 1), ("peak_rss_gb", 2)))
                         + " |")
    device = next((r["device"] for sides in per.values() for r in sides["native"] if r.get("device")), {})
    lines += ["", f"Machine: {device.get('cpu', '?')}, {device.get('cores', '?')} cores.", "",
              "Native ÷ Python, paired: the ratio within each round (both sides back to back), median over the "
              "rounds [min–max]; above 1 is native faster for decode, below 1 for TTFT and RSS. " + "; ".join(
                  f"{name}: decode {_paired(s, 'decode_tok_s')}, TTFT {_paired(s, 'ttft_s')}, "
                  f"peak RSS {_paired(s, 'peak_rss_gb')}" for name, s in per.items()) + ".", END]
    return "\n".join(lines)


def _paired(sides: dict, key: str) -> str:
    """native / python for one figure, round by round: drift between rounds (other load, heat) cancels out."""
    read = FIGURES[key]
    ratios = [read(n) / read(p) for n, p in zip(sides["native"], sides["python"])]
    return f"{statistics.median(ratios):.2f}× [{min(ratios):.2f}–{max(ratios):.2f}]"


def _pm(stat: dict, digits: int) -> str:
    return f"{stat['median']:.{digits}f} ±{(stat['max'] - stat['min']) / 2:.{digits}f}"


def splice(doc: Path, text: str) -> None:
    old = doc.read_text() if doc.exists() else ""
    if START in old and END in old:
        new = old[:old.index(START)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    with atomic_file(doc) as f:
        f.write(new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-real")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--bundles", default=",".join(BUNDLES), help="bundle names under --work/bundles")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report", action="store_true", help="re-write the docs section from --work/results/native.json")
    a = p.parse_args()
    results = a.work / "results"
    if a.report:
        text = section(json.loads((results / "native.json").read_text()))
        splice(a.docs / "benchmarks.md", text)
        return print(text)
    bundles = [a.work / "bundles" / n for n in a.bundles.split(",")]
    missing = [str(b) for b in bundles if not (b / "manifest.json").exists()]
    if missing:
        raise SystemExit(f"not exported (run benchmarks/run.py --steps create,export first): {', '.join(missing)}")
    cfg = BenchConfig(new_tokens=a.new_tokens, runs=a.runs, threads=a.threads)
    per = measure(bundles, a.rounds, cfg)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results.mkdir(parents=True, exist_ok=True)
    record = {"date": when, "n_rounds": a.rounds, "rounds": per,
              "config": {"new_tokens": cfg.new_tokens, "runs": cfg.runs, "warmup": cfg.warmup, "threads": cfg.threads}}
    with atomic_file(results / "native.json") as f:
        json.dump(record, f, indent=1)
    text = section(record)
    splice(a.docs / "benchmarks.md", text)
    print(text)


if __name__ == "__main__":
    main()
