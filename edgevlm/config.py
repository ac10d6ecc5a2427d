"""Typed configs: the model (`VLMConfig`) and the training run (`TrainConfig`).

A model dir's `config.json` is `VLMConfig.to_dict()`; nested dataclasses validate themselves in
`__post_init__` so a bad value fails where it is written, not deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from edgevlm.errors import EdgeVLMError


# Default answer length for generation everywhere (PyTorch and every runtime). `shapes` captions are 55 tokens
# of its tokenizer: a lower cap truncates every caption and scores it wrong.
MAX_NEW_TOKENS = 64


class VisionKind(str, enum.Enum):
    CLIP = "clip"
    SIGLIP = "siglip"


class Stage(str, enum.Enum):
    """Training stages, as the LLaVA-family papers stage them (plus a warm-up for from-scratch towers)."""

    VISION = "vision"  # tower + projector on per-cell labels: only for a tower trained from scratch
    PRETRAIN = "pretrain"  # projector only
    FINETUNE = "finetune"  # projector + LLM (+ tower with `train_vision`)


class Method(str, enum.Enum):
    FULL = "full"
    LORA = "lora"
    MOE = "moe"  # MoE-LLaVA stage III: upcycle the LLM's FFNs into experts, train the FFNs and routers


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise EdgeVLMError(f"invalid config: {msg}")


@dataclass
class VisionConfig:
    kind: VisionKind = VisionKind.CLIP
    image_size: int = 336
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    feature_layer: int = -2  # LLaVA's mm_vision_select_layer: hidden state fed to the projector
    # Drop the first output token (LLaVA's "patch" select feature). None: the tower's own rule, i.e. drop CLIP's
    # class token and keep all of SigLIP's patches. TinyLLaVA_Factory drops token 0 for SigLIP too (728 of 729).
    drop_first_token: bool | None = None
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self):
        self.kind = VisionKind(self.kind)
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)
        if self.drop_first_token is None:
            self.drop_first_token = self.kind is VisionKind.CLIP
        # a valid (unpadded) patch convolution: SigLIP-so400m's 384 px in patches of 14 is a 27 x 27 grid
        _check(self.image_size >= self.patch_size, "vision.image_size must be at least patch_size")
        _check(self.hidden_size % self.num_heads == 0, "vision.hidden_size must divide by num_heads")
        _check(-self.num_layers <= self.feature_layer < 0, "vision.feature_layer must be in [-num_layers, -1]")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def num_features(self) -> int:
        """Feature tokens the tower hands the projector: the patches, plus CLIP's class token, minus a dropped one."""
        return self.num_patches + (self.kind is VisionKind.CLIP) - self.drop_first_token

    @property
    def layers_used(self) -> int:
        """Encoder blocks that run: hidden_states[feature_layer] is the output of this many blocks."""
        return self.num_layers + 1 + self.feature_layer


@dataclass
class ProjectorConfig:
    kind: str = "ldpv2"  # a name in edgevlm.models.projectors.PROJECTORS
    shuffle_ratio: int = 2  # pixel_shuffle only: r, for r*r fewer tokens


@dataclass
class LLMConfig:
    arch: str = "llama"  # a name in edgevlm.models.llm.LLM_ARCHS
    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int = 16
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # arch-specific transformers config keys

    def __post_init__(self):
        _check(self.hidden_size % self.num_heads == 0, "llm.hidden_size must divide by num_heads")
        _check(self.num_heads % self.num_kv_heads == 0, "llm.num_heads must divide by num_kv_heads")


@dataclass
class MoEConfig:
    """MoE-LLaVA: the FFN of every `every`-th LLM layer becomes `num_experts` routed copies (0 = dense)."""

    num_experts: int = 0
    top_k: int = 2
    aux_loss_coef: float = 0.01
    every: int = 2

    def __post_init__(self):
        _check(self.num_experts == 0 or 1 <= self.top_k <= self.num_experts, "moe.top_k must be in [1, num_experts]")


@dataclass
class VLMConfig:
    family: str = "mobilevlm"
    template: str = "edgevlm"  # a name in edgevlm.bundle.template.TEMPLATES
    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "VLMConfig":
        try:
            return cls(
                family=d["family"],
                template=d.get("template", "edgevlm"),
                vision=VisionConfig(**d["vision"]),
                projector=ProjectorConfig(**d["projector"]),
                llm=LLMConfig(**d["llm"]),
                moe=MoEConfig(**d.get("moe", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise EdgeVLMError(f"invalid config: {e}") from None


def _plain(obj):
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
