"""`edgevlm quickstart`: generate `shapes`, create a tiny MobileVLM V2, train it, evaluate it, print a table.

One command that shows the whole path on a laptop CPU in minutes: a vision warm-up (the tiny tower starts from
random weights), instruction tuning, then 4-bit bundles for three runtimes, each verified and benchmarked.
Why each number in `Recipe` is what it is, with the measurements: docs/quickstart.md.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgevlm.bench.runner import BenchConfig, bench
from edgevlm.data.shapes import write_shapes
from edgevlm.evaluation import evaluate
from edgevlm.export import ExportConfig, export
from edgevlm.io import write_json
from edgevlm.models.factory import create
from edgevlm.models.vlm import EdgeVLM
from edgevlm.train.config import TrainConfig
from edgevlm.train.trainer import cpu_has_bf16, train

PRESET = "mobilevlm-v2-tiny"


def fast_precision() -> str:
    """bf16 autocast where the machine multiplies bf16 natively (CUDA, AVX512-BF16 / AMX CPUs), else fp32."""
    return "bf16" if torch.cuda.is_available() or cpu_has_bf16() else "fp32"


@dataclass
class Recipe:
    train_images: int = 4500  # more images beat more epochs: 4000 x 5 epochs 0.79, 2000 x 10 epochs 0.77
    eval_images: int = 50  # ~6.5 questions each: >= 300 eval questions
    seed: int = 0
    stages: dict[str, TrainConfig] = field(default_factory=lambda: {
        "vision-windows": TrainConfig(stage="vision", vision_window=10, epochs=2, max_steps=1000, batch_size=32,
                                      lr=2e-3),
        "finetune": TrainConfig(stage="finetune", freeze_projector=True, epochs=6, batch_size=16, lr=2e-3,
                                precision=fast_precision()),
    })
    exports: tuple[tuple[str, str], ...] = (("gguf", "q4_k"), ("executorch", "int4"), ("onnx", "int4"))
    verify_questions: int = 100  # eval questions each bundle answers in its runtime and in PyTorch
    bench_runs: int = 3


def quickstart(out: str | Path, recipe: Recipe | None = None, progress: bool = True) -> dict:
    """Run the whole pipeline; the trained model dir is `out/model`, the data `out/data/{train,eval}`."""
    recipe, out, t0 = recipe or Recipe(), Path(out), time.time()
    timings: dict[str, float] = {}
    train_dir, eval_dir = out / "data" / "train", out / "data" / "eval"

    t = time.time()
    write_shapes(train_dir, recipe.train_images, recipe.seed, "train", progress)
    write_shapes(eval_dir, recipe.eval_images, recipe.seed, "eval", progress)
    model_dir = create(PRESET, seed=recipe.seed).save_pretrained(out / "work" / "init")
    timings["data + create"] = time.time() - t

    names = list(recipe.stages)
    for name in names:
        dst = out / "model" if name == names[-1] else out / "work" / name
        timings[f"train: {name}"] = train(model_dir, train_dir, dst, recipe.stages[name], progress=progress).seconds
        model_dir = dst

    t = time.time()
    model = EdgeVLM.from_pretrained(model_dir)
    result = evaluate(model, eval_dir, progress=progress)
    timings["eval"] = time.time() - t
    summary = {
        "preset": PRESET,
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_tokens": model.num_image_tokens,
        "accuracy": result.accuracy,
        "eval": result.to_dict(),
        "timings_s": timings,
        "recipe": {"train_images": recipe.train_images, "eval_images": recipe.eval_images, "seed": recipe.seed,
                   "stages": {name: cfg.to_dict() for name, cfg in recipe.stages.items()}},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    summary["bundles"] = export_bundles(model, recipe, out / "bundles", eval_dir, timings, progress)
    summary["wall_s"] = time.time() - t0
    write_json(out / "quickstart.json", summary)
    print(report(summary))
    return summary


def export_bundles(model, recipe: Recipe, out: Path, eval_dir: Path, timings: dict, progress: bool) -> list[dict]:
    """Export, verify and benchmark each of the recipe's bundles; one summary row per bundle."""
    rows, paths = [], []
    for fmt, quant in recipe.exports:
        t = time.time()
        cfg = ExportConfig(fmt, quant, verify_data=eval_dir, verify_limit=recipe.verify_questions)
        r = export(model, cfg, out / f"{fmt}-{quant}", progress=progress)
        timings[f"export: {fmt} {quant}"] = time.time() - t
        rows.append({"bundle": r.path.name, "bytes": r.bytes, **r.manifest["verification"]})
        paths.append(r.path)
    t = time.time()
    bench_report = bench(paths, BenchConfig(runs=recipe.bench_runs, new_tokens=16), progress=progress)
    timings["bench"] = time.time() - t
    for row, b in zip(rows, bench_report["results"]):
        row.update(ttft_ms=b["ttft_ms"]["median"], decode_tok_s=b["decode_tok_s"]["median"])
    return rows


def report(s: dict) -> str:
    ev = s["eval"]
    return "\n".join([
        f"## edgevlm quickstart: {s['preset']}",
        f"{s['parameters'] / 1e6:.2f} M parameters, {s['image_tokens']} image tokens, {s['machine']}",
        "",
        "| kind | n | accuracy |",
        "|---|---:|---:|",
        *[f"| {k} | {v['n']} | {v['accuracy']:.3f} |" for k, v in ev["per_kind"].items()],
        f"| **overall** | {ev['n']} | **{ev['accuracy']:.3f}** |",
        "",
        "| step | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in s["timings_s"].items()],
        f"| **total** | **{s['wall_s']:.1f}** |",
        "",
        f"Bundles (accuracy on the first {s['bundles'][0]['n']} eval questions, in the runtime and in PyTorch):",
        "",
        "| bundle | MB | accuracy | PyTorch | answers identical | TTFT ms | decode tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {b['bundle']} | {b['bytes'] / 1e6:.2f} | {b['accuracy']:.3f} | {b['reference_accuracy']:.3f} "
          f"| {b['answers_identical']:.3f} | {b['ttft_ms']:.0f} | {b['decode_tok_s']:.0f} |" for b in s["bundles"]],
    ])
