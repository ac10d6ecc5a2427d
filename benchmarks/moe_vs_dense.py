"""A tiny MoE-LLaVA against its dense twin on `shapes` (issue #7, MoE-tuning).

    moe_vs_dense.py --start runs/quickstart/model --data runs/quickstart/data/train \
        --eval runs/quickstart/data/eval --work runs/moe-vs-dense [--epochs 2] [--experts 4 --top-k 2]

MoE-LLaVA's recipe (arXiv:2401.15947) makes stage III start from the dense stage-II model; so does this:
`--start` is a dense, instruction-tuned model dir (the quickstart's `model`). From it, with the same data,
steps, batch size, learning rate and seed:
- `dense+`: the dense twin, trained on (`edgevlm train --method full --freeze-projector`: the whole LLM);
- `moe`: upcycled and MoE-tuned (`edgevlm train --method moe`: every FFN and the routers, as MoE-LLaVA);
then every model (and the starting point, `dense`) answers the eval questions. Writes `results.json` and
`results.md` under `--work`: accuracy overall and per kind, parameters in total and active per token, train
seconds and the final routing statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgevlm.evaluation import evaluate
from edgevlm.io import write_json
from edgevlm.models.moe import moe_modules
from edgevlm.models.vlm import EdgeVLM
from edgevlm.train.config import TrainConfig
from edgevlm.train.trainer import train


def params(model: EdgeVLM) -> tuple[int, int]:
    """(total, active per token): a token runs top_k of each MoE layer's experts."""
    total = sum(p.numel() for p in model.parameters())
    idle = sum((m.num_experts - model.cfg.moe.top_k) * sum(p.numel() for p in m.experts[0].parameters())
               for m in moe_modules(model))
    return total, total - idle


def run(a) -> dict:
    a.work.mkdir(parents=True, exist_ok=True)
    common = dict(stage="finetune", epochs=a.epochs, max_steps=a.max_steps, batch_size=a.batch_size, lr=a.lr,
                  seed=a.seed)
    runs = {
        "dense+": TrainConfig(method="full", freeze_projector=True, **common),
        "moe": TrainConfig(method="moe", experts=a.experts, top_k=a.top_k, aux_loss_coef=a.aux_loss, **common),
    }
    dirs, seconds = {"dense": a.start}, {"dense": 0.0}
    for name, cfg in runs.items():
        r = train(a.start, a.data, a.work / name, cfg, progress=not a.quiet)
        dirs[name], seconds[name] = r.out, r.seconds
    results = {}
    for name, d in dirs.items():
        model = EdgeVLM.from_pretrained(d)
        t = time.time()
        ev = evaluate(model, a.eval, limit=a.limit, progress=not a.quiet)
        total, active = params(model)
        results[name] = {"model": str(d), "accuracy": round(ev.accuracy, 4), "n": ev.n,
                         "per_kind": ev.to_dict()["per_kind"], "params": total, "active_params": active,
                         "train_seconds": round(seconds[name], 1), "eval_seconds": round(time.time() - t, 1)}
    log = json.loads((a.work / "moe" / "train_log.json").read_text())
    return {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
            "train": {name: cfg.to_dict() for name, cfg in runs.items()},
            "moe_final_loss": log["losses"][-1], "results": results}


def markdown(report: dict) -> str:
    res = report["results"]
    kinds = sorted(next(iter(res.values()))["per_kind"])
    head = "| model | params | active | train s | " + " | ".join(kinds) + " | **overall** |"
    rows = [head, "|---" * (len(kinds) + 5) + "|"]
    for name, r in res.items():
        per = " | ".join(f"{r['per_kind'][k]['accuracy']:.3f}" for k in kinds)
        rows.append(f"| {name} | {r['params'] / 1e6:.2f} M | {r['active_params'] / 1e6:.2f} M | "
                    f"{r['train_seconds']:.0f} | {per} | **{r['accuracy']:.3f}** |")
    return "\n".join(rows) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", type=Path, required=True, help="dense instruction-tuned model dir")
    p.add_argument("--data", type=Path, required=True, help="training data (LLaVA format)")
    p.add_argument("--eval", type=Path, required=True, help="eval data (LLaVA format)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--aux-loss", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="eval questions (default: all)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    report = run(a)
    write_json(a.work / "results.json", report)
    (a.work / "results.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
