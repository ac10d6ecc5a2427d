"""Does the quickstart recipe hold? `edgevlm quickstart` for several seeds and thread counts (issue #22).

    quickstart_seeds.py --work runs/qs22 [--seeds 0 1 2] [--threads 1 2] [--cores 2]

Each cell is the command a user runs, `edgevlm quickstart --seed S --threads T --out WORK/sS-tT`, its output
in `WORK/sS-tT.log`. A cell whose `quickstart.json` exists is read, not run again, so the grid resumes. Cells
run side by side while their threads fit in `--cores` (two 1-thread runs share a 2-core machine; a 2-thread
run has it to itself): the seed and thread count fix the arithmetic, so a neighbour changes a cell's seconds,
never its accuracy, and the table says which cells ran beside another. Writes `WORK/seeds.md` and
`WORK/seeds.json`: accuracy overall and per kind, train seconds and the whole command's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EDGEVLM = [sys.executable, "-m", "edgevlm.cli"]
TARGET = 0.80  # issue #22 item 7: every cell at or above it
BUDGET_S = 15 * 60  # ... in at most 15 minutes on the 2-core machine (the 2-thread cells, each alone)


@dataclass
class Cell:
    seed: int
    threads: int
    work: Path

    @property
    def out(self) -> Path:
        return self.work / f"s{self.seed}-t{self.threads}"

    @property
    def log(self) -> Path:
        return self.out.with_suffix(".log")

    @property
    def summary(self) -> Path:
        return self.out / "quickstart.json"

    def start(self) -> subprocess.Popen:
        """Run the user's command; its stdout and stderr (progress bars included) go to the cell's log."""
        cmd = [*EDGEVLM, "quickstart", "--seed", str(self.seed), "--threads", str(self.threads), "--out", str(self.out)]
        with open(self.log, "w") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def run_grid(cells: list[Cell], cores: int) -> dict[str, dict]:
    """Run the cells that have no summary yet, packed into `cores`; per cell its wall time and who ran beside it."""
    todo = [c for c in cells if not c.summary.exists()]
    running: dict[str, tuple[Cell, subprocess.Popen, float, set]] = {}
    times: dict[str, dict] = {}
    while todo or running:
        while todo and sum(c.threads for c, *_ in running.values()) + todo[0].threads <= max(cores, todo[0].threads):
            c = todo.pop(0)
            print(f"start  {c.out.name}", flush=True)
            for _, _, _, beside in running.values():
                beside.add(c.out.name)
            running[c.out.name] = (c, c.start(), time.time(), set(running))
        time.sleep(5)
        for name, (c, proc, t0, beside) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            times[name] = {"wall_s": round(time.time() - t0, 1), "beside": sorted(beside)}
            if proc.returncode:
                sys.exit(f"{c.log}: edgevlm quickstart exited with {proc.returncode}; see its last lines")
            print(f"done   {name} in {times[name]['wall_s']:.0f} s", flush=True)
    return times


def row(c: Cell, times: dict) -> dict:
    s = json.loads(c.summary.read_text())
    t = s["timings_s"]
    return {"seed": c.seed, "threads": c.threads, "accuracy": s["accuracy"],
            "per_kind": {k: v["accuracy"] for k, v in s["eval"]["per_kind"].items()},
            "train_s": round(sum(v for k, v in t.items() if k.startswith("train:")), 1),
            "quickstart_s": round(s["wall_s"], 1), "recipe": s.get("recipe"), **times.get(c.out.name, {})}


def table(rows: list[dict]) -> str:
    kinds = list(rows[0]["per_kind"])
    lines = ["| seed | threads | accuracy | " + " | ".join(kinds) + " | train s | quickstart s | ran beside |",
             "|---:|---:|---:|" + "---:|" * len(kinds) + "---:|---:|---|"]
    for r in rows:
        mark = "" if r["accuracy"] >= TARGET else " (below 0.80)"
        over = " (over 15 min)" if r["threads"] > 1 and r["quickstart_s"] > BUDGET_S else ""
        lines.append(f"| {r['seed']} | {r['threads']} | **{r['accuracy']:.3f}**{mark} | "
                     + " | ".join(f"{r['per_kind'][k]:.2f}" for k in kinds)
                     + f" | {r['train_s']:.0f} | {r['quickstart_s']:.0f}{over} | {', '.join(r.get('beside', [])) or '-'} |")
    summary = f"Lowest accuracy {min(r['accuracy'] for r in rows):.3f} (target {TARGET:.2f})."
    alone = [r["quickstart_s"] for r in rows if r["threads"] > 1]
    if alone:
        summary += f" Slowest multi-thread quickstart {max(alone):.0f} s (budget {BUDGET_S} s)."
    lines += ["", summary]
    recipes = {json.dumps({k: v for k, v in r["recipe"].items() if k != "seed"}, sort_keys=True)
               for r in rows if r["recipe"]}
    for rec in map(json.loads, sorted(recipes)):
        steps = "; ".join(f"{n}: epochs {c['epochs']}, max_steps {c['max_steps']}, batch {c['batch_size']}, "
                          f"lr {c['lr']}, precision {c['precision']}" for n, c in rec["stages"].items())
        lines.append(f"Recipe: {rec['train_images']} train images; {steps}.")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/qs22"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="threads that may run at once (all cells)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    # the 1-thread cells first, so that they pair up; then the 2-thread ones, each alone
    cells = [Cell(s, t, a.work) for t in sorted(a.threads) for s in a.seeds]
    times_file = a.work / "times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    times.update(run_grid(cells, a.cores))
    times_file.write_text(json.dumps(times, indent=1))
    rows = [row(c, times) for c in cells]
    (a.work / "seeds.json").write_text(json.dumps(rows, indent=1))
    md = table(rows)
    (a.work / "seeds.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
