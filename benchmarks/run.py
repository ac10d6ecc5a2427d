"""Real-size benchmarks: MobileVLM V2 1.7B (random weights) in every runtime, against llama.cpp's own conversion.

    .venv/bin/python benchmarks/run.py                      # everything, resumable
    .venv/bin/python benchmarks/run.py --steps bench,report # re-measure only (e.g. later, on a quiet machine)

Steps (each skips what it already made under --work, so an interrupted run continues where it stopped):
  create     `edgevlm create --preset mobilevlm-v2-1.7b` (CLIP ViT-L/14-336 + LDPv2 + MobileLLaMA-1.4B, 32k vocab)
  export     GGUF q4_k and q8_0, ONNX int4, ExecuTorch int4 (`edgevlm export --verify smoke`: random weights
             answer nothing, so the bundle is only checked to load and generate in its runtime)
  reference  the same LLM saved as a transformers Llama dir, converted by llama.cpp's convert_hf_to_gguf.py and
             quantized by llama.cpp's quantizer (Q4_K_M, Q8_0), run with our mmproj: the speed to match
  sweep      the projector sweep, GGUF q4_k: mlp2x_gelu (576 image tokens), ldpv2 (144, the main model),
             pixel_shuffle r=3 (64; llama.cpp runs it as idefics3, after a SigLIP tower of CLIP-L's size)
  bench      `edgevlm bench` on the main bundles + reference, then on the sweep (JSON under --work/results);
             the image encode's tower / projector split in PyTorch, onnxruntime and ExecuTorch
  native     the native runner beside the Python runtimes on gguf-q4_k and executorch-int4, interleaved
             (benchmarks/native_vs_python.py)
  report     docs/benchmarks.md and its PNGs from those JSON files

Heavy steps run one at a time, each in its own process (memory is returned between them); every step's wall
time and peak memory go to --work/steps.json and the log to --work/run.log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PRESET = "mobilevlm-v2-1.7b"
EXPORTS = [("gguf", "q4_k"), ("gguf", "q8_0"), ("onnx", "int4"), ("executorch", "int4")]
REFERENCE = {"q4_k": "MOSTLY_Q4_K_M", "q8_0": "MOSTLY_Q8_0"}
SWEEP = {"mlp2x_gelu": {"kind": "mlp2x_gelu"}, "pixel_shuffle-r3": {"kind": "pixel_shuffle", "shuffle_ratio": 3}}
STEPS = ["create", "export", "reference", "sweep", "bench", "native", "report"]
PY = sys.executable
EDGEVLM = [PY, "-m", "edgevlm.cli"]


class Work:
    """Paths under the work dir, the log, and the per-step record."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.model = root / "model"
        self.bundles = root / "bundles"
        self.results = root / "results"
        self.steps_file = root / "steps.json"

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.root / "run.log", "a") as f:
            f.write(line + "\n")

    def run(self, name: str, cmd: list[str]) -> None:
        """Run one heavy step in its own process; record wall time, peak RSS and the load around it."""
        self.log(f"{name}: {' '.join(map(str, cmd))}")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t, load = time.time(), os.getloadavg()[0]
        with open(self.root / "run.log", "a") as out:
            proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        record = {"seconds": round(time.time() - t, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
                  "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                  "exit": proc.returncode, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        steps = json.loads(self.steps_file.read_text()) if self.steps_file.exists() else {}
        steps[name] = record
        self.steps_file.write_text(json.dumps(steps, indent=1))
        self.log(f"{name}: exit {proc.returncode} after {record['seconds']} s, peak RSS {record['peak_rss_gb']} GB")
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed (exit {proc.returncode}); see {self.root / 'run.log'}")


def done(bundle: Path) -> bool:
    return (bundle / "manifest.json").is_file()


# ---- steps -------------------------------------------------------------------------------------------------------
def step_create(w: Work, a) -> None:
    if (w.model / "config.json").is_file():
        return w.log(f"create: {w.model} exists")
    w.run("create", [*EDGEVLM, "create", "--preset", a.preset, "--out", w.model])


def export_cmd(model: Path, fmt: str, quant: str, out: Path, threads: int) -> list:
    return [*EDGEVLM, "export", "--model", model, "--format", fmt, "--quant", quant, "--out", out,
            "--verify", "smoke", "--threads", threads]


def step_export(w: Work, a) -> None:
    for fmt, quant in EXPORTS:
        if (a.formats and fmt not in a.formats) or (a.quants and quant not in a.quants):
            continue
        out = w.bundles / f"{fmt}-{quant}"
        if done(out):
            w.log(f"export: {out.name} exists")
            continue
        w.run(f"export {out.name}", export_cmd(w.model, fmt, quant, out, a.threads))


def step_reference(w: Work, a) -> None:
    for quant in [q for q in REFERENCE if not a.quants or q in a.quants]:
        ours, out = w.bundles / f"gguf-{quant}", w.bundles / f"llamacpp-ref-{quant}"
        if done(out):
            w.log(f"reference: {out.name} exists")
            continue
        if not done(ours):
            raise SystemExit(f"reference needs {ours} (the mmproj and manifest come from it): run --steps export")
        w.run(f"reference {quant}", [PY, ROOT / "benchmarks" / "reference.py", "--model", w.model, "--ours", ours,
                                     "--quant", quant, "--work", w.root / "reference", "--out", out])
    if all(done(w.bundles / f"llamacpp-ref-{q}") for q in REFERENCE):  # the float files are no longer needed
        shutil.rmtree(w.root / "reference" / "hf", ignore_errors=True)
        (w.root / "reference" / "model-f32.gguf").unlink(missing_ok=True)


def step_sweep(w: Work, a) -> None:
    for name in SWEEP:
        out = w.bundles / "sweep" / f"{name}-gguf-q4_k"
        if done(out):
            w.log(f"sweep: {out.name} exists")
            continue
        w.run(f"sweep {name}", [PY, __file__, "_sweep_export", "--preset", a.preset, "--name", name,
                                "--out", out, "--threads", a.threads])


def sweep_export(preset: str, name: str, out: Path, threads: int) -> None:
    """The main model's architecture with another projector (a SigLIP tower for pixel_shuffle), GGUF q4_k."""
    from edgevlm.config import ProjectorConfig, VisionKind
    from edgevlm.export import ExportConfig, export
    from edgevlm.models.factory import create_from_config
    from edgevlm.models.presets import get_preset

    cfg = get_preset(preset)
    cfg.projector = ProjectorConfig(**SWEEP[name])
    if cfg.projector.kind == "pixel_shuffle":  # replace() re-runs __post_init__: SigLIP keeps every patch
        cfg.vision = dataclasses.replace(cfg.vision, kind=VisionKind.SIGLIP, hidden_act="gelu_pytorch_tanh",
                                         drop_first_token=None)
    # mlp2x_gelu keeps all 576 patches: a tiny dry run's 512-position context must grow (real size: 2048)
    cfg.llm = dataclasses.replace(cfg.llm, max_position_embeddings=max(cfg.llm.max_position_embeddings, 1024))
    model = create_from_config(cfg, seed=0)
    r = export(model, ExportConfig("gguf", "q4_k", threads=threads, verify="smoke"), out, progress=False)
    print(f"wrote {r.path} ({r.bytes / 1e6:.0f} MB), {model.num_image_tokens} image tokens", flush=True)


def main_bundles(w: Work) -> list[Path]:
    names = [f"{f}-{q}" for f, q in EXPORTS] + [f"llamacpp-ref-{q}" for q in REFERENCE]
    return [w.bundles / n for n in names if done(w.bundles / n)]


def sweep_bundles(w: Work) -> list[Path]:
    return [b for b in [w.bundles / "sweep" / f"{n}-gguf-q4_k" for n in SWEEP] + [w.bundles / "gguf-q4_k"]
            if done(b)]


def step_bench(w: Work, a) -> None:
    w.results.mkdir(exist_ok=True)
    common = ["--runs", a.runs, "--new-tokens", a.new_tokens, "--threads", a.threads]
    main = main_bundles(w)
    missing = sorted({f"{f}-{q}" for f, q in EXPORTS} - {b.name for b in main})
    if missing:
        w.log(f"bench: not exported (yet): {', '.join(missing)}")
    with open(w.results / "uptime-before.txt", "w") as f:
        f.write(subprocess.run(["uptime"], capture_output=True, text=True).stdout)
    w.run("bench main", [*EDGEVLM, "bench", *main, *common, "--json", w.results / "main.json",
                         "--md", w.results / "main.md"])
    sweep = sweep_bundles(w)
    if len(sweep) > 1:
        w.run("bench sweep", [*EDGEVLM, "bench", *sweep, *common, "--json", w.results / "sweep.json",
                              "--md", w.results / "sweep.md"])
    if not (w.results / "vision_split.json").exists():  # PyTorch's proportions: delete the file to re-measure
        w.run("vision split", [PY, ROOT / "benchmarks" / "vision_split.py", "--out", w.results / "vision_split.json",
                               "--threads", a.threads, "--preset", a.preset])
    onnx = w.bundles / "onnx-int4"
    if done(onnx) and not (w.results / "onnx_vision_split.json").exists():  # the same split in onnxruntime
        w.run("onnx vision split", [PY, ROOT / "benchmarks" / "onnx_vision_split.py", onnx, "--threads", a.threads,
                                    "--json", w.results / "onnx_vision_split.json"])
    if w.model.is_dir() and not (w.results / "et_vision_split.json").exists():  # ... and in ExecuTorch
        w.run("executorch vision split", [PY, ROOT / "benchmarks" / "et_vision_split.py", "--model", w.model,
                                          "--threads", a.threads, "--json", w.results / "et_vision_split.json"])
    with open(w.results / "uptime-after.txt", "w") as f:
        f.write(subprocess.run(["uptime"], capture_output=True, text=True).stdout)


def step_native(w: Work, a) -> None:
    w.run("native vs python", [PY, ROOT / "benchmarks" / "native_vs_python.py", "--work", w.root, "--docs", a.docs,
                               "--threads", a.threads, "--runs", a.runs, "--new-tokens", a.new_tokens])


def step_report(w: Work, a) -> None:
    from report_doc import write_doc

    path = write_doc(w, a, a.docs)
    w.log(f"report: wrote {path}")


# ---- command line -----------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-real", help="models, bundles, results")
    p.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the report step writes")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--formats", default="", help="export only these formats (comma-separated; default all)")
    p.add_argument("--quants", default="", help="export / convert only these schemes (comma-separated; default all)")
    p.add_argument("--preset", default=PRESET, help="a tiny preset gives a quick dry run of every step")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_sweep_export"]:  # internal: one sweep export in its own process
        p = argparse.ArgumentParser()
        p.add_argument("--preset", required=True)
        p.add_argument("--name", required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--threads", type=int)
        s = p.parse_args(argv[1:])
        sweep_export(s.preset, s.name, s.out, s.threads)
        return 0
    a = parser().parse_args(argv)
    a.formats = [f for f in a.formats.split(",") if f]
    a.quants = [q for q in a.quants.split(",") if q]
    steps = [s for s in a.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise SystemExit(f"unknown step(s) {unknown}; known: {STEPS}")
    w = Work(a.work)
    for name in STEPS:
        if name in steps:
            w.log(f"== {name}")
            globals()[f"step_{name}"](w, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
