"""Training on several processes with PyTorch's own engine: torchrun starts them, DDP or FSDP2 keeps them in step.

Every process runs the same command. A step's batch is the one a single process with batch nproc x B takes (the
same seeded order per epoch, so reshuffled every epoch and resumable at any step), cut into nproc contiguous
shares of B: process r trains on share r. Gradients are averaged over processes, so each process scales its
loss by nproc x its share of the step's scored units (answer tokens; images in the vision stage): the average
is then the one-process loss of the whole batch, and a run equals one process up to float summation order.

The backend follows the device, gloo on CPU and nccl on CUDA. Checkpoints are torch.distributed.checkpoint (DCP)
dirs, which reshard on load, so a run resumes on another process count as long as a step's batch (nproc x
batch size) stays the same. The model dir at the end is the one a single process writes: rank 0 gathers it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from edgevlm.config import Method, Stage
from edgevlm.errors import EdgeVLMError
from edgevlm.io import write_json
from edgevlm.load import load_model
from edgevlm.models import moe
from edgevlm.train import lora
from edgevlm.train.config import TrainConfig
from edgevlm.train.trainer import Trainer, TrainResult, _saved_config, checkpoint_root

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}

# What cannot run on several processes, and why: (does the config hit it, the reason)
REFUSALS = [
    (lambda cfg: cfg.method is Method.MOE,
     "MoE-tuning runs on one process: its load-balancing loss multiplies batch-wide routing statistics, so "
     "per-process losses would not add up to the one-process loss"),
]

PER_LAUNCH = ("nproc", "batch_size", "parallel")  # may change on --resume (nproc x batch size may not)


def refuse(cfg: TrainConfig) -> None:
    for hits, why in REFUSALS:
        if hits(cfg):
            raise EdgeVLMError(f"--nproc/torchrun: {why}")


def under_torchrun() -> bool:
    """Whether this process is one of the workers torchrun started (it sets these for every worker)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main() -> bool:
    """Rank 0 (or no torchrun): the process that writes the model dir and reports."""
    return int(os.environ.get("RANK", 0)) == 0


def launch(model_dir, data_dir, out, cfg: TrainConfig, resume: bool = False) -> None:
    """`edgevlm train --nproc N` on this machine: the same command in N processes under torchrun."""
    refuse(cfg)
    args = ["--model", str(model_dir), "--data", str(data_dir), "--out", str(out), *worker_args(cfg)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(cfg.nproc),
           "-m", "edgevlm.train", *args, *(["--resume"] if resume else [])]
    here = str(Path(__file__).resolve().parents[2])  # the processes import this edgevlm, not another install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    rc = subprocess.run(cmd, env=env).returncode
    if rc:
        raise EdgeVLMError(f"torchrun exited with status {rc} (the processes' errors are above)", out)


def worker_args(cfg: TrainConfig) -> list[str]:
    """The flags of `cfg` for torchrun's processes: without --nproc (torchrun's count rules there, and torchrun
    would take --nproc for an abbreviation of its own --nproc-per-node)."""
    return dataclasses.replace(cfg, nproc=1).to_args()


def train(model_dir, data_dir, out, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """`trainer.train` in one of torchrun's processes: joins the process group (unless joined), trains, leaves."""
    refuse(cfg)  # before any process loads a model
    joined = not dist.is_initialized()
    if joined:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(BACKENDS[device])
    try:
        trainer = ParallelTrainer(load_model(model_dir), out, cfg, progress)
        return trainer.setup(data_dir, head_from=Path(model_dir)).run(resume=resume)
    finally:
        if joined:
            dist.destroy_process_group()


class Parts(nn.Module):
    """The trained modules under one root: the model and, in the vision stage, the warm-up head."""

    def __init__(self, model: nn.Module, head: nn.Module | None):
        super().__init__()
        self.model, self.head = model, head


class StepLoss(Parts):
    """The root DDP / FSDP wrap: its forward is the trainer's loss, so their hooks see every parameter used."""

    def __init__(self, trainer: Trainer):
        super().__init__(trainer.model, trainer.head)
        self._loss = trainer._loss

    def forward(self, batch: list) -> tuple[torch.Tensor, dict]:
        return self._loss(batch)


def _ddp(trainer: "ParallelTrainer") -> nn.Module:
    # unused: parameters that train but feed nothing (CLIP's post-layernorm, tower layers past the feature layer)
    ids = [trainer.device.index] if trainer.device.type == "cuda" else None
    return DistributedDataParallel(StepLoss(trainer), device_ids=ids, find_unused_parameters=True)


def _fsdp(trainer: "ParallelTrainer") -> nn.Module:
    """FSDP2: each LLM decoder layer and each used vision block is a unit; the root holds the rest. On rank 0 a
    CPU copy of the unsharded modules is kept first: the gathered weights are loaded into it at the end, and it
    saves the model dir exactly as one process does (LoRA merged or kept)."""
    model = trainer.model
    if trainer.rank == 0:
        trainer.plain = Parts(copy.deepcopy(model).cpu(), copy.deepcopy(trainer.head))
    bf16 = trainer.device.type == "cuda" and trainer.cfg.precision in ("auto", "bf16")
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    tower = model.vision.tower.encoder.layers[: model.cfg.vision.layers_used]
    blocks = [*moe.decoder_layers(lora.base(model.llm)), *tower]
    for block in blocks:
        fully_shard(block, mp_policy=mp)
    return fully_shard(StepLoss(trainer), mp_policy=mp)


PARALLEL = {"ddp": _ddp, "fsdp": _fsdp}


class ParallelTrainer(Trainer):
    """`Trainer` in one of several processes: its share of each step, synced gradients, DCP checkpoints."""

    def __init__(self, model, out, cfg: TrainConfig, progress: bool = True):
        refuse(cfg)
        super().__init__(model, out, dataclasses.replace(cfg, nproc=dist.get_world_size()), progress)  # as logged
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.progress = progress and self.rank == 0
        self.wrapped: nn.Module | None = None  # set by setup()
        self.plain: Parts | None = None  # FSDP, rank 0: the unsharded copy that saves the result
        self.state_bytes = 0  # measured at the end, for train_log.json

    def setup(self, data_dir, head_from=None) -> "ParallelTrainer":
        super().setup(data_dir, head_from)
        self.wrapped = PARALLEL[self.cfg.parallel](self)
        return self

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.world

    def _cache_features(self) -> torch.Tensor:
        """Each process encodes its contiguous share of the images once; the shares are then exchanged."""
        n = len(self.images)
        per = -(-n // self.world)
        lo, hi = min(n, self.rank * per), min(n, (self.rank + 1) * per)
        mine = self._features_of(range(lo, hi) if hi > lo else range(0, 1))[: hi - lo]
        padded = torch.zeros(per, *mine.shape[1:], device=mine.device)
        padded[: hi - lo] = mine
        shares = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(shares, padded)
        return torch.cat(shares)[:n]

    def _units(self, items: list) -> int:
        """What the loss averages over: answer tokens of packed sequences, or images in the vision stage."""
        if self.cfg.stage is Stage.VISION:
            return len(items)
        return sum(len(answer) for item in items for _, answer in item.segments)

    def _step_loss(self, batch: list) -> tuple[torch.Tensor, dict]:
        b = self.cfg.batch_size
        share = batch[self.rank * b : (self.rank + 1) * b]
        weight = self._units(share) * self.world / self._units(batch)
        loss, stats = self.wrapped(share or batch[:1])  # an empty share (an epoch's last batch) joins at weight 0
        return loss * weight, stats

    def _loss_value(self, loss: torch.Tensor) -> float:
        total = loss.detach().clone()
        dist.all_reduce(total)
        return total.item() / self.world

    def _log_extra(self) -> dict:
        return {"nproc": self.world, "parallel": self.cfg.parallel, "state_bytes_per_process": self.state_bytes}

    def _measure_state(self) -> int:
        """Bytes of weights, gradients and optimizer state this process holds (its shards, under FSDP)."""
        tensors = [t for p in self.wrapped.parameters() for t in (p, p.grad) if t is not None]
        tensors += [t for st in self.opt.state.values() for t in st.values() if torch.is_tensor(t)]
        return sum(_local(t).numel() * t.element_size() for t in tensors)

    # ---- checkpoints: DCP, every process writes its shard ----------------------------------------------------
    def _checkpoint(self, step: int, opt, sched, losses: list[float]) -> None:
        root = checkpoint_root(self.out)
        final, tmp = root / f"step-{step:07d}", root / f".step-{step:07d}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        model_state, optim_state = get_state_dict(self.wrapped, opt)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp)  # returns once all have written
        if self.rank == 0:
            torch.save({"scheduler": sched.state_dict(), "rng": torch.get_rng_state()}, tmp / "schedule.pt")
            write_json(tmp / "trainer.json", {"step": step, "losses": losses, "config": self.cfg.to_dict(),
                                              "nproc": self.world, "global_batch": self.global_batch})
            os.replace(tmp, final)
            for old in sorted(root.glob("step-*"))[:-1]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()

    def _restore(self, opt, sched) -> tuple[int, list[float]]:
        ckpts = sorted(checkpoint_root(self.out).glob("step-*"))
        if not ckpts:
            raise EdgeVLMError("--resume: no checkpoint to resume from", checkpoint_root(self.out))
        ck = ckpts[-1]
        if not (ck / ".metadata").is_file():
            raise EdgeVLMError("--resume: a one-process checkpoint; resume it with one process", ck)
        meta = json.loads((ck / "trainer.json").read_text())
        if meta["global_batch"] != self.global_batch:
            raise EdgeVLMError(f"--resume: the checkpoint's steps took {meta['global_batch']} examples, this run's "
                               f"take {self.global_batch} (keep nproc x batch size)", ck)
        if _same_run(_saved_config(meta["config"])) != _same_run(self.cfg.to_dict()):
            raise EdgeVLMError("--resume: the checkpoint was made with a different training config", ck)
        model_state, optim_state = get_state_dict(self.wrapped, opt)
        state = {"model": model_state, "optim": optim_state}
        # partial: get_state_dict gives a fresh optimizer state for every trained parameter, also for those that
        # never get a gradient (CLIP's post-layernorm) and so have none in the checkpoint; AdamW skips them anyway
        dcp.load(state, checkpoint_id=ck, planner=DefaultLoadPlanner(allow_partial_load=True))
        set_state_dict(self.wrapped, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        saved = torch.load(ck / "schedule.pt", weights_only=True)
        sched.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        return meta["step"], meta["losses"]

    def _finish(self, step: int, seconds: float, losses: list[float]) -> TrainResult:
        self.state_bytes = self._measure_state()
        if self.cfg.parallel == "fsdp":  # every process takes part in the gather; rank 0 receives the weights
            full = get_model_state_dict(self.wrapped, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))
            if self.rank == 0:
                self.plain.load_state_dict(full)
                self.model, self.head = self.plain.model, self.plain.head
        dist.barrier()  # every process is done with the checkpoints before rank 0 removes them
        result = super()._finish(step, seconds, losses) if self.rank == 0 else TrainResult(self.out, step, seconds,
                                                                                           losses)
        dist.barrier()
        return result


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def _same_run(cfg: dict | None) -> dict | None:
    return None if cfg is None else {k: v for k, v in cfg.items() if k not in PER_LAUNCH}
