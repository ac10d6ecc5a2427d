"""Training on two CPU processes (torchrun, gloo): DDP and FSDP2 equal one process with the whole batch, LoRA
under FSDP saves the DDP model, a killed rank resumes to the same weights, refusals are one line.

Per process batch 5 on 2 processes = one process with batch 10: the 24 packed `shapes` items give steps of 10,
10 and 4 examples, so the last step of an epoch leaves rank 1 without a share, and 6 steps cross an epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from edgevlm.cli import main
from edgevlm.train.config import TrainConfig
from edgevlm.train.distributed import worker_args
from edgevlm.train.trainer import checkpoint_root, train

ROOT = Path(__file__).resolve().parents[1]
STEPS = dict(epochs=2, max_steps=6, lr=3e-3, seed=0)
FULL = dict(stage="finetune", train_vision=True, **STEPS)  # LLM, projector and tower train: every FSDP unit


def run_parallel(model_dir, data_dir, out, cfg: TrainConfig, *extra: str) -> int:
    return main(["train", "--model", str(model_dir), "--data", str(data_dir), "--out", str(out), *cfg.to_args(),
                 *extra])


def log(out: Path) -> dict:
    return json.loads((out / "train_log.json").read_text())


def assert_same_weights(a: Path, b: Path, atol: float = 5e-5) -> None:
    """Every tensor equal to `atol`: float summation order differs between one and two processes, and AdamW turns
    a relative gradient difference of 1e-7 on a near-zero gradient into up to 1e-5 (measured 1.3e-5 over 6
    steps); an example trained by the wrong process or weighted wrongly moves weights by ~lr = 3e-3 per step."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, worst
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, shapes_train, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "m"
    return train(tiny_model_dir, shapes_train, out, TrainConfig(batch_size=10, **FULL), progress=False).out


@pytest.fixture(scope="module")
def fsdp_run(tiny_model_dir, shapes_train, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "m"
    assert run_parallel(tiny_model_dir, shapes_train, out,
                        TrainConfig(batch_size=5, nproc=2, parallel="fsdp", **FULL)) == 0
    return out


def test_ddp_equals_one_process(tiny_model_dir, shapes_train, one_process, tmp_path):
    out = tmp_path / "ddp"
    assert run_parallel(tiny_model_dir, shapes_train, out, TrainConfig(batch_size=5, nproc=2, **FULL)) == 0
    assert log(out)["steps"] == 6
    assert log(out)["losses"] == pytest.approx(log(one_process)["losses"], rel=1e-5)
    assert_same_weights(out, one_process)


def test_fsdp_equals_one_process(fsdp_run, one_process):
    assert log(fsdp_run)["losses"] == pytest.approx(log(one_process)["losses"], rel=1e-5)
    assert_same_weights(fsdp_run, one_process)


def test_lora_under_fsdp_saves_the_ddp_model(tiny_model_dir, shapes_train, tmp_path):
    """LoRA with a frozen tower: the feature cache is computed in shares, and FSDP's merged model is DDP's."""
    lora = dict(stage="finetune", method="lora", lora_r=4, batch_size=5, nproc=2, **STEPS)
    for parallel in ("ddp", "fsdp"):
        assert run_parallel(tiny_model_dir, shapes_train, tmp_path / parallel,
                            TrainConfig(parallel=parallel, **lora)) == 0
    assert not (tmp_path / "fsdp" / "adapter").exists()  # merged, as one process saves it
    assert_same_weights(tmp_path / "fsdp", tmp_path / "ddp")
    one = train(tiny_model_dir, shapes_train, tmp_path / "one", TrainConfig(**{**lora, "batch_size": 10, "nproc": 1}),
                progress=False).out
    assert_same_weights(tmp_path / "fsdp", one)


def test_vision_stage_under_fsdp_equals_one_process(tiny_model_dir, shapes_train, tmp_path):
    """The warm-up's head sits at the FSDP root and is saved beside the model, as by one process."""
    vision = dict(stage="vision", epochs=1, max_steps=2, lr=3e-3)
    assert run_parallel(tiny_model_dir, shapes_train, tmp_path / "fsdp",
                        TrainConfig(batch_size=5, nproc=2, parallel="fsdp", **vision)) == 0
    one = train(tiny_model_dir, shapes_train, tmp_path / "one", TrainConfig(batch_size=10, **vision),
                progress=False).out
    assert log(tmp_path / "fsdp")["losses"] == pytest.approx(log(one)["losses"], rel=1e-5)
    assert_same_weights(tmp_path / "fsdp", one)
    ha, hb = load_file(one / "vision_head.safetensors"), load_file(tmp_path / "fsdp" / "vision_head.safetensors")
    assert ha.keys() == hb.keys()
    # score.bias shifts every token's pooling score alike, which the softmax cancels: its true gradient is 0,
    # and AdamW's normalisation turns the float noise of either run into steps (measured: 6e-5 apart)
    assert all(torch.allclose(ha[k], hb[k], atol=5e-5) for k in ha if k != "score.bias")


def workers(pid: int) -> list[int]:
    """The training processes torchrun (`pid`) started."""
    kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [k for k in kids if b"edgevlm.train" in Path(f"/proc/{k}/cmdline").read_bytes()]


def test_killed_rank_resumes_to_the_same_weights(tiny_model_dir, shapes_train, fsdp_run, tmp_path):
    """SIGKILL one rank after the first (sharded) checkpoint; the restarted job runs only the remaining steps."""
    out = tmp_path / "m"
    cfg = TrainConfig(batch_size=5, nproc=2, parallel="fsdp", save_every=2, **FULL)
    args = ["--model", str(tiny_model_dir), "--data", str(shapes_train), "--out", str(out), *worker_args(cfg)]
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "edgevlm.train", *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           stdout=subprocess.DEVNULL, stderr=(tmp_path / "log").open("wb"))
    first = checkpoint_root(out) / "step-0000002"
    deadline = time.time() + 120
    while not first.is_dir() and job.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert first.is_dir(), (tmp_path / "log").read_text()[-2000:]
    ranks = workers(job.pid)
    assert len(ranks) == 2
    os.kill(ranks[-1], signal.SIGKILL)
    assert job.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    assert not (out / "model.safetensors").exists()  # the job did not get to the end
    saved = sorted(checkpoint_root(out).glob("step-*"))[-1]
    done = json.loads((saved / "trainer.json").read_text())["step"]
    shutil.copytree(checkpoint_root(out), checkpoint_root(tmp_path / "one"))  # for a resume on one process

    assert run_parallel(tiny_model_dir, shapes_train, out, cfg, "--resume") == 0
    assert log(out)["resumed_from"] == done and 2 <= done < 6 and log(out)["steps"] == 6
    assert log(out)["losses"] == pytest.approx(log(fsdp_run)["losses"], rel=1e-6)
    assert_same_weights(out, fsdp_run, atol=1e-6)
    assert not checkpoint_root(out).exists()

    # the same sharded checkpoint resumed by one process with the whole batch: DCP reshards it
    one = dataclasses.replace(cfg, batch_size=10, nproc=1)
    rc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                         "-m", "edgevlm.train", "--model", str(tiny_model_dir), "--data", str(shapes_train), "--out",
                         str(tmp_path / "one"), *worker_args(one), "--resume"], cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert log(tmp_path / "one")["resumed_from"] == done and log(tmp_path / "one")["nproc"] == 1
    assert_same_weights(tmp_path / "one", fsdp_run)


def test_worker_flags_give_the_same_config():
    """What `--nproc` hands torchrun's processes parses back to the config (less --nproc, torchrun's to set)."""
    import argparse

    from edgevlm.cli import _add_train, _train_config

    parser = argparse.ArgumentParser()
    _add_train(parser)
    cfg = TrainConfig(stage="vision", vision_window=10, train_vision=True, lr=3e-3, aux_loss_coef=0.5, nproc=2,
                      parallel="fsdp", precision="bf16")
    parsed = _train_config(parser.parse_args(["--model", "m", "--data", "d", "--out", "o", *worker_args(cfg)]))
    assert parsed == dataclasses.replace(cfg, nproc=1)


def test_moe_refuses_several_processes(tiny_model_dir, shapes_train, tmp_path, capsys):
    rc = run_parallel(tiny_model_dir, shapes_train, tmp_path / "m", TrainConfig(method="moe", nproc=2, max_steps=1))
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "MoE-tuning runs on one process" in err
    assert not (tmp_path / "m").exists()
