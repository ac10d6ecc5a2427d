"""Soak: each runtime answers N consecutive prompts in one process; report RSS growth and unstable answers.

A leak shows as resident memory growing between the first and the last requests (the first 50 are warm-up:
allocators and engine caches settle there); an answer that changes for the same (image, question) shows
state leaking between requests (a KV cache not reset, a reused output buffer). Each bundle runs in its own
process so that one runtime's memory does not hide in another's.

    python benchmarks/soak.py                               # the golden bundles, 1,000 prompts each
    python benchmarks/soak.py path/to/bundle --prompts 5000 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "tests" / "goldens"
QUESTIONS = ["What is in the top left?", "Is there a red circle?", "How many shapes are there?",
             "What color is the square?", "What is in the bottom right?", "Describe the image."]
WARMUP = 50


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def soak_one(bundle: Path, prompts: int, new_tokens: int) -> dict:
    from edgevlm.bundle.image import load_image
    from edgevlm.runtimes import load_runtime

    images = [load_image(p) for p in sorted((GOLDENS / "images").iterdir())]
    rt = load_runtime(bundle, threads=1)
    first: dict[tuple[int, int], list[int]] = {}
    changed, rss, t0 = [], {"loaded": rss_mb()}, time.time()
    for i in range(prompts):
        key = (i % len(images), (i // len(images)) % len(QUESTIONS))
        ids = rt.generate_many(images[key[0]], [QUESTIONS[key[1]]], new_tokens)[0]
        if first.setdefault(key, ids) != ids:
            changed.append({"request": i, "image": key[0], "question": QUESTIONS[key[1]], "first": first[key],
                            "now": ids})
        if i + 1 == WARMUP:
            rss["after_warmup"] = rss_mb()
    rss["end"] = rss_mb()
    return {"bundle": str(bundle), "format": rt.bundle.format, "runtime": rt.name, "prompts": prompts,
            "new_tokens": new_tokens, "seconds": round(time.time() - t0, 1), "rss_mb": {k: round(v, 1) for k, v in
                                                                                          rss.items()},
            "rss_growth_mb": round(rss["end"] - rss["after_warmup"], 1), "changed_answers": changed[:10],
            "changed_count": len(changed)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="*", type=Path, help="bundle dirs (default: tests/goldens/bundles/*)")
    p.add_argument("--prompts", type=int, default=1000)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(soak_one(a.bundles[0], a.prompts, a.new_tokens)))
        return 0
    results = []
    for bundle in a.bundles or sorted((GOLDENS / "bundles").iterdir()):
        r = subprocess.run([sys.executable, __file__, str(bundle), "--child", "--prompts", str(a.prompts),
                            "--new-tokens", str(a.new_tokens)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        if r.returncode != 0:
            print(f"{bundle}: failed\n{r.stderr[-3000:]}")
            results.append({"bundle": str(bundle), "error": r.stderr[-3000:]})
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        results.append(res)
        m = res["rss_mb"]
        print(f"{bundle.name:<18} {res['runtime']:<12} {res['prompts']} prompts in {res['seconds']:>6.1f} s  RSS "
              f"{m['loaded']:.0f} → {m['after_warmup']:.0f} → {m['end']:.0f} MB (growth {res['rss_growth_mb']:+.1f} "
              f"MB after warm-up)  changed answers: {res['changed_count']}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all("error" not in r and r["changed_count"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
