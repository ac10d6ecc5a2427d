"""`TrainConfig`: one training run (a stage with a method and its schedule)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgevlm.config import Method, Stage, _check, _plain


@dataclass
class TrainConfig:
    stage: Stage = Stage.FINETUNE
    method: Method = Method.FULL
    epochs: float = 1.0
    max_steps: int = 0  # > 0 caps the run (for smoke tests)
    batch_size: int = 8
    lr: float = 1e-3
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    train_vision: bool = False  # finetune: also train the tower (a from-scratch tower needs it)
    freeze_projector: bool = False  # finetune: keep the projector (e.g. one a vision warm-up trained)
    vision_window: int = 0  # vision stage: train on W x W patch windows around objects (0: whole images)
    lora_r: int = 16
    lora_alpha: int = 32
    keep_adapter: bool = False
    experts: int = 4  # method moe: experts per MoE layer (MoE-LLaVA: 4)
    top_k: int = 2  # method moe: experts per token (MoE-LLaVA: 2)
    aux_loss_coef: float = 0.01  # method moe: weight of the summed load-balancing losses (MoE-LLaVA: 0.01)
    save_every: int = 0  # checkpoint every N optimizer steps (0: only at the end)
    # bf16 autocast (weights and optimizer stay fp32): "auto" uses it on CUDA only; "bf16" also on a CPU, where
    # it pays off with native bf16 matmuls (AVX512-BF16 / AMX: ~1.4x on the quickstart's LLM), not without
    precision: str = "auto"
    seed: int = 0

    def __post_init__(self):
        self.stage, self.method = Stage(self.stage), Method(self.method)
        _check(self.epochs > 0 or self.max_steps > 0, "train needs epochs > 0 or max_steps > 0")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(not (self.method is Method.LORA and self.stage is not Stage.FINETUNE), "LoRA applies to finetune")
        _check(not (self.method is Method.MOE and self.stage is not Stage.FINETUNE), "MoE-tuning applies to finetune")
        _check(1 <= self.top_k <= self.experts, "top_k must be in [1, experts]")
        _check(self.aux_loss_coef >= 0, "aux_loss_coef must be >= 0")
        _check(self.precision in ("auto", "fp32", "bf16"), f"precision must be auto, fp32 or bf16, not {self.precision!r}")

    def to_dict(self) -> dict:
        return _plain(asdict(self))
