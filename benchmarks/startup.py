"""Start-up time of the CLI as a user meets it: `edgevlm --help`, and `edgevlm run` on a small bundle per format,
each a fresh process (the files in the page cache, as on a second try), median of N.

    .venv/bin/python benchmarks/startup.py [--bundles DIR...] [--repeats 7]

Without --bundles it exports the tiny MobileVLM V2 (random weights) to ONNX int4, GGUF q4_k and ExecuTorch int4
under runs/startup/ first. Goals (issue #21): --help under 0.5 s, `run` on an ONNX bundle under 1.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

EDGEVLM = [str(Path(sys.executable).with_name("edgevlm"))]
QUESTION = "What is in the top left?"


def seconds(argv: list[str], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        out.append(time.perf_counter() - t)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip().splitlines()[-1]}")
    return out


def tiny_bundles(root: Path) -> list[Path]:
    from edgevlm.export import ExportConfig, export
    from edgevlm.models.factory import create

    model, out = create("mobilevlm-v2-tiny", seed=0), []
    for fmt, quant in (("onnx", "int4"), ("gguf", "q4_k"), ("executorch", "int4")):
        path = root / f"{fmt}-{quant}"
        if not (path / "manifest.json").is_file():
            export(model, ExportConfig(fmt, quant, verify_limit=0), path, progress=False)
        out.append(path)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", nargs="*", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--work", type=Path, default=Path("runs/startup"))
    a = p.parse_args()
    bundles = a.bundles or tiny_bundles(a.work)
    image = a.work / "image.png"
    if not image.is_file():
        from PIL import Image

        a.work.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (336, 336), (200, 30, 30)).save(image)
    rows = [("edgevlm --help", seconds(EDGEVLM + ["--help"], a.repeats))]
    for b in bundles:
        argv = EDGEVLM + ["run", "--bundle", str(b), "--image", str(image), "--prompt", QUESTION, "--max-new-tokens", "8"]
        rows.append((f"edgevlm run ({b.name})", seconds(argv, a.repeats)))
    print(f"{a.repeats} fresh processes per command, python {sys.version.split()[0]}\n")
    print("| command | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    for name, s in rows:
        print(f"| `{name}` | {statistics.median(s):.2f} | {min(s):.2f} | {max(s):.2f} |")


if __name__ == "__main__":
    main()
