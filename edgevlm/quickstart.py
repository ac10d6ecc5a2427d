"""`edgevlm quickstart`: generate `shapes`, create a tiny MobileVLM V2, train it, evaluate it, print a table.

The recipe, and why (a tiny model starts from random weights, so it differs from the papers' in one place:
the vision tower is trained, where published models start from a pre-trained CLIP):
1. vision warm-up: tower + LDPv2 projector learn the content of each cell, every projector token predicting
   its cell's class through a throw-away linear head (dense supervision trains a from-scratch ViT far faster
   than answers through the LLM do); the tower's position embeddings start as 2-D sin-cos.
2. instruction tuning: the tower is frozen and its features computed once; projector + LLM train on all
   questions, each image's questions packed into one sequence (exactly single-turn training, 4x fewer tokens).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgevlm.data.shapes import write_shapes
from edgevlm.evaluation import evaluate
from edgevlm.models.factory import create
from edgevlm.models.vlm import EdgeVLM
from edgevlm.train.config import TrainConfig
from edgevlm.train.trainer import Trainer

PRESET = "mobilevlm-v2-tiny"


@dataclass
class Recipe:
    train_images: int = 2000
    eval_images: int = 50  # ~6.5 questions each: >= 300 eval questions
    seed: int = 0
    vision: TrainConfig = None
    finetune: TrainConfig = None

    def __post_init__(self):
        self.vision = self.vision or TrainConfig(stage="vision", epochs=4, batch_size=16, lr=3e-3, seed=self.seed)
        self.finetune = self.finetune or TrainConfig(stage="finetune", epochs=6, batch_size=16, lr=2e-3,
                                                     seed=self.seed)


def quickstart(out: str | Path, recipe: Recipe | None = None, progress: bool = True) -> dict:
    recipe = recipe or Recipe()
    out = Path(out)
    t0 = time.time()
    timings: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t = time.time()
        r = fn(*a, **kw)
        timings[name] = time.time() - t
        return r

    train_dir, eval_dir = out / "data" / "train", out / "data" / "eval"
    timed("data", lambda: (write_shapes(train_dir, recipe.train_images, recipe.seed, "train", progress),
                           write_shapes(eval_dir, recipe.eval_images, recipe.seed, "eval", progress)))
    model = create(PRESET, seed=recipe.seed)
    warm = timed("vision warm-up", lambda: Trainer(model, train_dir, out / "work" / "vision", recipe.vision,
                                                   progress).run())
    model = EdgeVLM.from_pretrained(warm.out)
    tuned = timed("instruction tuning", lambda: Trainer(model, train_dir, out / "model", recipe.finetune,
                                                        progress).run())
    model = EdgeVLM.from_pretrained(tuned.out)
    result = timed("eval", evaluate, model, eval_dir, None, progress)
    summary = {
        "preset": PRESET,
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_tokens": model.num_image_tokens,
        "accuracy": result.accuracy,
        "eval": result.to_dict(),
        "timings_s": timings,
        "wall_s": time.time() - t0,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
    }
    print(report(summary))
    return summary


def report(s: dict) -> str:
    ev = s["eval"]
    lines = [
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
    ]
    return "\n".join(lines)
