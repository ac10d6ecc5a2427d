"""One trainer for every stage: which parameters train, on what batches, with checkpoints and exact resume.

Stages follow the LLaVA-family recipe (projector pre-training, then instruction tuning), with a vision
warm-up first for towers trained from scratch. A frozen tower's features are computed once per image and
reused across epochs. Checkpoints hold weights, optimizer, scheduler and RNG, and the data order is a
function of (seed, epoch), so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from edgevlm.config import Method, MoEConfig, Stage
from edgevlm.data.llava import read_llava
from edgevlm.errors import EdgeVLMError
from edgevlm.io import atomic_dir, read_json, write_json
from edgevlm.load import load_model
from edgevlm.models.checkpoint import read_weights, save_weights, load_weights, unique_state
from edgevlm.models import moe
from edgevlm.models.llm import ATTENTION
from edgevlm.models.vlm import EdgeVLM
from edgevlm.train import lora
from edgevlm.train.config import TrainConfig
from edgevlm.train.images import image_table
from edgevlm.train.packing import IGNORE, PackedImage, build_batch, pack
from edgevlm.train.warmup import (CellHead, cell_loss, encode_windows, object_windows, window_boxes, window_cells,
                                  window_loss)


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    executed: int = 0  # steps this call ran (steps - the resumed checkpoint's step): what a resume test asserts


VISION_HEAD = "vision_head.safetensors"  # the warm-up's throw-away head, kept for a following warm-up phase


def checkpoint_root(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoints")


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# Attention kernel while training. On CPU at these sizes (head dim 32, a few hundred tokens) PyTorch's
# flash-attention kernel's backward costs more than transformers' eager matmul + softmax: a quickstart finetune
# step 0.26 s -> 0.20 s, a vision-window step -6% (sdpa's math path with an additive mask: no faster). Without
# gradients sdpa wins (the quickstart's feature cache, 576 tokens: 55 s sdpa, 96 s eager), so it is kept there.
TRAIN_ATTENTION = {"cpu": "eager", "cuda": "sdpa"}


def set_attention(model: EdgeVLM, implementation: str) -> None:
    for part in (model.vision.tower, model.llm):
        part.set_attn_implementation(implementation)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), i.e. whether bf16 autocast speeds it up."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: Apple silicon and others, leave fp32
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class Trainer:
    """`Trainer(model, out, cfg).setup(data_dir)` reads the data and prepares the model; `.run()` trains.

    Construction only stores its arguments; the work that reads files, changes the model (LoRA, MoE upcycling,
    what trains) and caches tower features is `setup`, a step of its own as in torchtune's recipes, so a caller
    can make a trainer cheaply and decide when that work happens.
    """

    def __init__(self, model: EdgeVLM, out: str | Path, cfg: TrainConfig, progress: bool = True):
        self.model, self.out, self.cfg, self.progress = model, Path(out), cfg, progress
        self.device = pick_device()
        self.images = self.items = self.head = self.features = None  # set by setup()
        self.resumed_from = 0  # the step run() started at
        self.executed = 0  # the steps run() ran: a resume test asserts it (a silent restart would run them all)
        self.opt: torch.optim.Optimizer | None = None  # run()'s

    def setup(self, data_dir: str | Path, head_from: Path | None = None) -> "Trainer":
        """Read `data_dir`, build what the stage trains on, make the right parameters trainable and cache the
        frozen tower's features. `head_from`: a model dir of an earlier warm-up phase whose head continues."""
        cfg, data_dir = self.cfg, Path(data_dir)
        torch.manual_seed(cfg.seed)  # the warm-up head and LoRA weights start the same in every run
        self.model.to(self.device)
        records = read_llava(data_dir)
        paths = sorted({r.image for r in records})
        self.images = image_table(paths, self.model.preprocess, self.progress)
        if cfg.stage is Stage.VISION:
            self.items, self.head = self._cell_items(data_dir, paths), CellHead(self.model.cfg.llm.hidden_size)
            if head_from is not None and (head_from / VISION_HEAD).is_file():  # a later warm-up phase
                self.head.load_state_dict(read_weights(head_from / VISION_HEAD))
            self.head.to(self.device)
        else:
            self.items = self._qa_items(records, {p: i for i, p in enumerate(paths)})
        if cfg.method is Method.MOE:
            self._upcycle()
        self._set_trainable()
        self.features = None if self._tower_trains else self._cache_features()
        set_attention(self.model, TRAIN_ATTENTION[self.device.type])  # after caching: sdpa is faster without grads
        return self

    # ---- what trains on what ---------------------------------------------------------------------------------
    @property
    def _tower_trains(self) -> bool:
        return self.cfg.stage is Stage.VISION or (self.cfg.stage is Stage.FINETUNE and self.cfg.train_vision)

    def _upcycle(self) -> None:
        """MoE-LLaVA stage III starts from a dense model: its FFNs become experts (a MoE model continues)."""
        cfg, mcfg = self.cfg, self.model.cfg
        want = MoEConfig(num_experts=cfg.experts, top_k=cfg.top_k, aux_loss_coef=cfg.aux_loss_coef)
        if mcfg.moe.num_experts:
            if (mcfg.moe.num_experts, mcfg.moe.top_k) != (cfg.experts, cfg.top_k):
                raise EdgeVLMError(f"the model already has {mcfg.moe.num_experts} experts, top-{mcfg.moe.top_k}; "
                                   f"--experts {cfg.experts} --top-k {cfg.top_k} do not match")
            mcfg.moe.aux_loss_coef = cfg.aux_loss_coef
            return
        moe.upcycle(self.model.llm, want)
        mcfg.moe = want

    def _set_trainable(self) -> None:
        m, cfg = self.model, self.cfg
        if cfg.method is Method.LORA:
            m.llm = lora.add_lora(m.llm, cfg.lora_r, cfg.lora_alpha)
        m.requires_grad_(False)
        m.projector.requires_grad_(not (cfg.stage is Stage.FINETUNE and cfg.freeze_projector))
        if self._tower_trains:
            m.vision.requires_grad_(True)
        if cfg.stage is Stage.FINETUNE:
            if cfg.method is Method.LORA:
                for n, p in m.llm.named_parameters():
                    p.requires_grad_("lora_" in n)
            elif cfg.method is Method.MOE:  # MoE-LLaVA's train_modules: every FFN (experts or dense) + routers
                m.projector.requires_grad_(False)
                m.llm.requires_grad_(False)
                for layer in moe.decoder_layers(m.llm):
                    layer.mlp.requires_grad_(True)
            else:
                m.llm.requires_grad_(True)

    def params(self) -> list[torch.nn.Parameter]:
        ps = [p for p in self.model.parameters() if p.requires_grad]
        return ps + (list(self.head.parameters()) if self.head is not None else [])

    def _qa_items(self, records, index: dict[Path, int]) -> list[PackedImage]:
        by_image: dict[int, tuple[list, list]] = {}
        for r in records:
            prompts, answers = by_image.setdefault(index[r.image], ([], []))
            prompts.append(self.model.prompt_ids(r.question))
            answers.append(self.model.answer_ids(r.answer))
        return [item for key, (p, a) in sorted(by_image.items()) for item in pack(key, p, a)]

    def _cell_items(self, data_dir: Path, paths: list[Path]) -> list[tuple]:
        """Vision stage: (image, cell labels) per image, or (image, (row0, col0), label) per object window."""
        from edgevlm.data.shapes import read_cell_labels
        from edgevlm.io import read_json

        if not (data_dir / "scenes.json").is_file():
            raise EdgeVLMError("the vision stage needs `shapes` data (scenes.json holds the cell labels)", data_dir)
        if not self.cfg.vision_window:
            labels = read_cell_labels(data_dir)
            return [(i, labels[p.stem]) for i, p in enumerate(paths)]
        v = self.model.cfg.vision
        wins = object_windows(read_json(data_dir / "scenes.json")["scenes"], v.patch_size, v.grid, self.cfg.vision_window)
        return [(i, (r0, c0), label) for i, p in enumerate(paths) for r0, c0, label in wins[p.stem]]

    @property
    def _projector_trains(self) -> bool:
        return any(p.requires_grad for p in self.model.projector.parameters())

    @torch.no_grad()
    def _cache_features(self) -> torch.Tensor:
        """Frozen tower: its features for every image, computed once: (N, N_patches, D_vis), or the image
        embeddings (N, N_img, D_llm) when the projector is frozen too. In fp32 whatever the training precision:
        these are the features evaluation and every runtime feed the LLM (bf16 ones differ by ~0.4%; one A/B on
        the quickstart: 0.75 trained on fp32 features vs 0.70 on bf16 ones)."""
        return self._features_of(range(len(self.images)))

    @torch.no_grad()
    def _features_of(self, images: range) -> torch.Tensor:
        """The cached features of `images` (a range of the image table), 32 images at a time."""
        self.model.vision.eval()
        encode = self.model.vision if self._projector_trains else self.model.encode_image
        chunks = []
        for start in tqdm(range(images.start, images.stop, 32), desc="vision features", disable=not self.progress,
                          leave=False):
            idx = list(range(start, min(start + 32, images.stop)))
            chunks.append(encode(self.images.batch(idx, self.device)).float())
        return torch.cat(chunks)

    def _autocast(self):
        on = self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    # ---- one step -------------------------------------------------------------------------------------------
    def _image_embeds(self, keys: list[int]) -> torch.Tensor:
        if self.features is not None:
            return self.model.projector(self.features[keys]) if self._projector_trains else self.features[keys]
        return self.model.encode_image(self.images.batch(keys, self.device))

    def _loss(self, batch: list) -> tuple[torch.Tensor, dict]:
        if self.cfg.stage is Stage.VISION:
            keys = [item[0] for item in batch]
            labels = torch.tensor([item[-1] for item in batch], device=self.device)
            if self.cfg.vision_window:
                windows, w = [item[1] for item in batch], self.cfg.vision_window
                pixels = self.images.batch(keys, self.device, *window_boxes(self.model, windows, w))
                embeds = encode_windows(self.model, pixels, windows, w)
                cells = window_cells(windows, w, self.model.cfg.vision.grid, embeds.shape[1])
                loss, acc = window_loss(self.head, embeds, labels, cells)
            else:
                loss, acc = cell_loss(self.head, self._image_embeds(keys), labels)
            return loss, {"acc": acc}
        inputs = build_batch(batch, self._image_embeds([it.image_key for it in batch]), self.model.embed)
        targets = inputs.pop("targets")
        logits = self.model.llm(**inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
        layers = moe.moe_modules(self.model)
        if not layers:
            return loss, {}
        # MoE-LLaVA: LM loss + coef * sum of the layers' load-balancing losses; stats: aux, token share per expert
        loss = loss + self.model.cfg.moe.aux_loss_coef * sum(m.aux_loss for m in layers)
        return loss, moe.routing_stats(self.model)

    # ---- the loop -------------------------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        """Examples per optimizer step over all processes (one here; `ParallelTrainer` has several)."""
        return self.cfg.batch_size

    def total_steps(self) -> int:
        per_epoch = math.ceil(len(self.items) / self.global_batch)
        steps = math.ceil(self.cfg.epochs * per_epoch)
        return min(steps, self.cfg.max_steps) if self.cfg.max_steps else steps

    def _batch_at(self, step: int) -> list:
        per_epoch = math.ceil(len(self.items) / self.global_batch)
        epoch, i = divmod(step, per_epoch)
        order = torch.randperm(len(self.items), generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch))
        idx = order[i * self.global_batch : (i + 1) * self.global_batch]
        return [self.items[j] for j in idx.tolist()]

    def run(self, resume: bool = False) -> TrainResult:
        if self.items is None:
            raise RuntimeError("Trainer.run() needs setup() first")
        cfg, total = self.cfg, self.total_steps()
        torch.manual_seed(cfg.seed)
        opt = self.opt = torch.optim.AdamW(self.params(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, int(cfg.warmup_ratio * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        step, losses = (self._restore(opt, sched) if resume else (0, []))
        self.resumed_from = step
        self.model.train()
        start, samples, self.executed = time.time(), 0, 0
        bar = tqdm(total=total, initial=step, desc=f"train {cfg.stage.value}", disable=not self.progress)
        while step < total:
            batch = self._batch_at(step)
            with self._autocast():
                loss, stats = self._step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params(), 1.0)
            opt.step()
            sched.step()
            step += 1
            self.executed += 1
            samples += len(batch)
            losses.append(self._loss_value(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", samples_s=f"{samples / (time.time() - start):.1f}",
                            **{k: f"{v:.3f}" for k, v in stats.items()})
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                self._checkpoint(step, opt, sched, losses)
        bar.close()
        return self._finish(step, time.time() - start, losses)

    def _step_loss(self, batch: list) -> tuple[torch.Tensor, dict]:
        """The loss to back-propagate for one step's batch (`ParallelTrainer`: this process's share of it)."""
        return self._loss(batch)

    def _loss_value(self, loss: torch.Tensor) -> float:
        """The step's loss as logged (`ParallelTrainer`: the mean over all processes)."""
        return loss.item()

    def _log_extra(self) -> dict:
        """More for train_log.json (`ParallelTrainer`: processes, and the training state each one holds)."""
        return {}

    def _finish(self, step: int, seconds: float, losses: list[float]) -> TrainResult:
        self.model.eval()
        if not self.cfg.keep_adapter:
            self.model.llm = lora.merge(self.model.llm)
        set_attention(self.model, ATTENTION)  # as built
        lora.save_pretrained(self.model, self.out)
        if self.head is not None:
            save_weights({k: v.contiguous() for k, v in self.head.state_dict().items()}, self.out / VISION_HEAD)
        write_json(self.out / "train_log.json", {"config": self.cfg.to_dict(), "steps": step,
                                                 "resumed_from": self.resumed_from, "executed": self.executed,
                                                 "seconds": round(seconds, 2), **self._log_extra(), "losses": losses})
        shutil.rmtree(checkpoint_root(self.out), ignore_errors=True)
        return TrainResult(self.out, step, seconds, losses, self.executed)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        state = unique_state(self.model)
        if self.head is not None:
            state.update({f"_head.{k}": v for k, v in self.head.state_dict().items()})
        return state

    def _checkpoint(self, step: int, opt, sched, losses: list[float]) -> None:
        root = checkpoint_root(self.out)
        with atomic_dir(root / f"step-{step:07d}", "checkpoint") as tmp:
            save_weights(self._trainable_state(), tmp / "weights.safetensors")
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "rng": torch.get_rng_state()}, tmp / "optimizer.pt")
            write_json(tmp / "trainer.json", {"step": step, "losses": losses, "config": self.cfg.to_dict()})
        for old in sorted(root.glob("step-*"))[:-1]:
            shutil.rmtree(old, ignore_errors=True)

    def _restore(self, opt, sched) -> tuple[int, list[float]]:
        ckpts = sorted(checkpoint_root(self.out).glob("step-*"))
        if not ckpts:
            raise EdgeVLMError("--resume: no checkpoint to resume from", checkpoint_root(self.out))
        ck = ckpts[-1]
        meta = read_json(ck / "trainer.json")
        if not (isinstance(meta, dict) and isinstance(meta.get("step"), int) and isinstance(meta.get("losses"), list)
                and isinstance(meta.get("config"), dict)):
            raise EdgeVLMError("--resume: not a trainer checkpoint record (step, losses, config)", ck / "trainer.json")
        if _saved_config(meta["config"]) != self.cfg.to_dict():
            raise EdgeVLMError("--resume: the checkpoint was made with a different training config", ck)
        tensors = read_weights(ck / "weights.safetensors")
        head = {k[len("_head."):]: tensors.pop(k) for k in list(tensors) if k.startswith("_head.")}
        load_weights(self.model, tensors, ck / "weights.safetensors")
        if self.head is not None:
            self.head.load_state_dict(head)
        try:  # a truncated or foreign file raises whatever its unpickler meets: all mean the same here
            state = torch.load(ck / "optimizer.pt", weights_only=True)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
        except Exception as e:
            raise EdgeVLMError(f"--resume: unreadable or mismatched optimizer state ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:120] if str(e) else ''})", ck / "optimizer.pt") from None
        return meta["step"], meta["losses"]


def _saved_config(saved: dict) -> dict | None:
    """A checkpoint's training config, with defaults for the fields added since it was written."""
    try:
        return TrainConfig(**saved).to_dict()
    except (TypeError, EdgeVLMError):
        return None


def train(model_dir: str | Path, data_dir: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False,
          progress: bool = True) -> TrainResult:
    """Train a model dir on a LLaVA-format data dir and write the result as a model dir at `out`."""
    trainer = Trainer(load_model(model_dir), out, cfg, progress)
    return trainer.setup(data_dir, head_from=Path(model_dir)).run(resume=resume)
