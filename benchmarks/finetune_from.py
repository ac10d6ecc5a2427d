"""One quickstart finetune from an existing warm-up, on given data, evaluated: the cheap half of a recipe experiment.

    finetune_from.py --init runs/qs22/s1-t1/work/vision-windows --train DATA --eval runs/qs22/s1-t1/data/eval
                     --out runs/ft/NAME [--epochs 6] [--lr 2e-3] [--batch 16] [--threads 1]

The quickstart's second stage (`Recipe.stages["finetune"]`: frozen tower and projector, bf16 autocast where the
CPU has native bf16) with its knobs as flags, so that a change to the finetune or its data (e.g.
`edgevlm data shapes --dense`) is measured against the same warm-up without re-running it (issue #22, item 7).
Prints one JSON line: accuracy overall and per kind, train seconds, the mean loss of the last 100 steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevlm.evaluation import evaluate  # noqa: E402
from edgevlm.models.vlm import EdgeVLM  # noqa: E402
from edgevlm.quickstart import Recipe  # noqa: E402
from edgevlm.train.trainer import train  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", type=Path, required=True, help="a warm-up stage's model dir")
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--eval", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    cfg = Recipe().stages["finetune"]  # the defaults, then this run's flags
    p.add_argument("--epochs", type=float, default=cfg.epochs)
    p.add_argument("--lr", type=float, default=cfg.lr)
    p.add_argument("--batch", type=int, default=cfg.batch_size)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg.epochs, cfg.lr, cfg.batch_size = a.epochs, a.lr, a.batch
    r = train(a.init, a.train, a.out, cfg, progress=False)
    ev = evaluate(EdgeVLM.from_pretrained(a.out), a.eval, progress=False)
    print(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "train_s": round(r.seconds),
                      "acc": round(ev.accuracy, 3),
                      "kinds": {k: v["accuracy"] for k, v in ev.to_dict()["per_kind"].items()},
                      "end_loss": round(sum(r.losses[-100:]) / len(r.losses[-100:]), 4)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
