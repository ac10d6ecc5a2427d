"""Killed, not just failed: SIGKILL a real `edgevlm` process mid-way and check what it leaves.

An export killed while writing or while verifying leaves the previous bundle at --out byte for byte, and the
next export removes the dead writer's temporary dir. A training run killed between checkpoints resumes from
the last one, runs only the remaining steps, and ends with an uninterrupted run's weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgevlm.bundle.manifest import open_bundle
from edgevlm.export import ExportConfig, export
from edgevlm.io import clean_stale
from edgevlm.models.vlm import EdgeVLM
from edgevlm.train.config import TrainConfig
from edgevlm.train.trainer import checkpoint_root, train

ROOT = Path(__file__).resolve().parents[1]


def spawn(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # as conftest's one torch thread
    return subprocess.Popen([sys.executable, "-m", "edgevlm.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> object:
    """SIGKILL `proc` as soon as `ready()` returns something truthy (polled every 5 ms); return that."""
    end = time.time() + timeout
    while time.time() < end:
        seen = ready()
        if seen:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return seen
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before the moment to kill it: "
                        f"{proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("timed out waiting for the moment to kill")


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*"))


# the phase → the format killed in it: ONNX writes for seconds (tracing), GGUF writes in 0.1 s but verifies for
# seconds; the previous bundle and the next export are GGUF (fast), any bundle being replaceable by any other
@pytest.mark.parametrize("phase,fmt,quant", [("writing", "onnx", "fp32"), ("verifying", "gguf", "f16")])
def test_export_killed(phase, fmt, quant, tiny_model, tiny_model_dir, parity_eval, tmp_path):
    out = tmp_path / "bundle"
    export(tiny_model, ExportConfig("gguf", "f16", verify_limit=0), out, progress=False)
    before = snapshot(out)

    proc = spawn(["export", "--model", str(tiny_model_dir), "--format", fmt, "--quant", quant, "--out", str(out),
                  "--verify-data", str(parity_eval), "--verify-limit", "100"])

    def moment():
        for tmp in temporaries(out):
            names = {p.name for p in tmp.iterdir()} if tmp.is_dir() else set()
            if phase == "writing" and names and "manifest.json" not in names:
                return tmp, names
            if phase == "verifying" and "manifest.json" in names:
                return tmp, names
        return None

    tmp, names = kill_when(proc, moment)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(out) == before  # the previous bundle, byte for byte
    assert temporaries(out) == [tmp] and tmp.name.startswith(f".{out.name}.tmp-{proc.pid}-")
    open_bundle(out)  # and it still opens

    export(tiny_model, ExportConfig("gguf", "f16", verify_limit=0), out, progress=False)
    assert temporaries(out) == []  # the next export removed the dead writer's temporary dir


def test_output_left_aside_by_a_kill_between_renames_comes_back(tmp_path):
    """Killed between `final → .final.old-PID` and `tmp → final`: the next writer restores the old output."""
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now names no live process
    out = tmp_path / "data"
    old = tmp_path / f".data.old-{dead.pid}"
    old.mkdir()
    (old / "data.json").write_text("[]")
    clean_stale(out)
    assert (out / "data.json").read_text() == "[]" and not old.exists()


def test_train_killed_between_checkpoints_resumes(tiny_model_dir, shapes_train, tmp_path):
    total = 16
    cfg = TrainConfig(epochs=10, max_steps=total, save_every=3, batch_size=4, lr=1e-3)
    whole = train(tiny_model_dir, shapes_train, tmp_path / "whole", cfg, progress=False)
    assert whole.executed == total

    out = tmp_path / "killed"
    proc = spawn(["train", "--model", str(tiny_model_dir), "--data", str(shapes_train), "--out", str(out),
                  "--epochs", "10", "--max-steps", str(total), "--save-every", "3", "--batch-size", "4",
                  "--lr", "1e-3"])
    kill_when(proc, lambda: sorted(checkpoint_root(out).glob("step-*")) if checkpoint_root(out).is_dir() else None)
    assert not out.exists()
    last = int(sorted(checkpoint_root(out).glob("step-*"))[-1].name.split("-")[1])
    assert 3 <= last < total

    resumed = train(tiny_model_dir, shapes_train, out, cfg, resume=True, progress=False)
    assert resumed.steps == total
    assert resumed.executed == total - last  # only the remaining steps ran: a resume that started over fails here
    assert resumed.losses == whole.losses
    a = EdgeVLM.from_pretrained(whole.out).state_dict()
    b = EdgeVLM.from_pretrained(resumed.out).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
