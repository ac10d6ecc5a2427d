"""`TrainConfig`: one training run (a stage with a method and its schedule).

Each field's `metadata` holds the help of its `edgevlm train` flag (and the flag's name or choices where they are
not the field's own), so the command is generated from this class and cannot drift from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum

from edgevlm.config import Method, Stage, _check, _plain

PRECISIONS = ("auto", "fp32", "bf16")
PARALLEL = ("ddp", "fsdp")


def _arg(default, help: str = "", **flag):
    """A field with its flag's help; `flag` may add `name` (when not --field-name) and `choices`."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class TrainConfig:
    stage: Stage = _arg(Stage.FINETUNE, "vision: warm up a from-scratch tower on shapes cell labels; pretrain: "
                                        "projector only; finetune: projector + LLM")
    method: Method = _arg(Method.FULL, "moe: MoE-LLaVA stage III, upcycle every second LLM FFN into experts, "
                                       "train FFNs + routers")
    epochs: float = _arg(1.0)
    max_steps: int = _arg(0, "> 0 caps the run (smoke tests)")
    batch_size: int = _arg(8)
    lr: float = _arg(1e-3)
    warmup_ratio: float = _arg(0.03)
    weight_decay: float = _arg(0.0)
    train_vision: bool = _arg(False, "finetune: also train the vision tower (a from-scratch tower needs it)")
    freeze_projector: bool = _arg(False, "finetune: keep the projector as it is (e.g. after a vision warm-up)")
    vision_window: int = _arg(0, "vision stage: train on W x W patch windows around each object (0: whole images)")
    lora_r: int = _arg(16)
    lora_alpha: int = _arg(32)
    keep_adapter: bool = _arg(False, "save the LoRA adapter instead of merging it")
    experts: int = _arg(4, "method moe: experts per MoE layer (MoE-LLaVA: 4)")
    top_k: int = _arg(2, "method moe: experts per token (MoE-LLaVA: 2)")
    aux_loss_coef: float = _arg(0.01, "method moe: coefficient of the summed load-balancing losses (MoE-LLaVA: "
                                      "0.01)", name="--aux-loss")
    save_every: int = _arg(0, "checkpoint every N optimizer steps (0: only at the end)")
    # bf16 autocast (weights and optimizer stay fp32): "auto" uses it on CUDA only; "bf16" also on a CPU, where
    # it pays off with native bf16 matmuls (AVX512-BF16 / AMX: ~1.4x on the quickstart's LLM), not without
    precision: str = _arg("auto", "bf16 autocast: auto = on CUDA only; bf16 = also on CPU (fast with AVX512-BF16 / "
                                  "AMX)", choices=PRECISIONS)
    seed: int = _arg(0)
    # several processes (docs/training.md): under torchrun every process runs the same command, with
    # --batch-size per process, so a step sees nproc x batch_size examples
    nproc: int = _arg(1, "> 1: launch this many processes on this machine through torchrun (or start the command "
                         "under torchrun yourself); --batch-size is per process")
    parallel: str = _arg("ddp", "with several processes: ddp replicates the model, fsdp shards it (FSDP2, per "
                                "decoder layer and vision block)", choices=PARALLEL)

    def __post_init__(self):
        self.stage, self.method = Stage(self.stage), Method(self.method)
        _check(self.epochs > 0 or self.max_steps > 0, "train needs epochs > 0 or max_steps > 0")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(not (self.method is Method.LORA and self.stage is not Stage.FINETUNE), "LoRA applies to finetune")
        _check(not (self.method is Method.MOE and self.stage is not Stage.FINETUNE), "MoE-tuning applies to finetune")
        _check(1 <= self.top_k <= self.experts, "top_k must be in [1, experts]")
        _check(self.aux_loss_coef >= 0, "aux_loss_coef must be >= 0")
        _check(self.nproc >= 1, "nproc must be >= 1")
        _check(self.parallel in PARALLEL, f"parallel must be {', '.join(PARALLEL)}, not {self.parallel!r}")
        _check(self.precision in PRECISIONS, f"precision must be {', '.join(PRECISIONS)}, not {self.precision!r}")

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    def to_args(self) -> list[str]:
        """The `edgevlm train` flags that give this config (fields left at their default are left out)."""
        args = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            text = value.value if isinstance(value, Enum) else value
            args += [flag(f)] if isinstance(value, bool) else [flag(f), str(text)]
        return args


def flag(f) -> str:
    """The `edgevlm train` flag of a TrainConfig field: `metadata["name"]`, else --field-name."""
    return f.metadata.get("name", "--" + f.name.replace("_", "-"))
