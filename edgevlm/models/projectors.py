"""Token-reducing projectors from vision features (B, N, D_vis) to LLM embeddings (B, M, D_llm).

Module trees mirror the upstream implementations so upstream checkpoints load by name:
- `mlp2x_gelu`: LLaVA-1.5 / TinyLLaVA / Bunny, Linear-GELU-Linear, no reduction.
- `ldp`: MobileVLM's Lightweight Downsample Projector (arXiv:2312.16886): MLP, then two MobileNetV3 inverted
  residual blocks (depthwise 3x3 + LayerNorm2d + hardswish, squeeze-excite, 1x1 projection), the second with
  stride 2: 24x24 → 12x12.
- `ldpv2`: MobileVLM V2 (arXiv:2402.03766): MLP, adaptive average pool to 12x12 (144 tokens, whatever the
  grid), depthwise-conv position injection (PEG) with a residual.
- `pixel_shuffle`: Idefics3 / SmolVLM space-to-depth by r, then one bias-free linear: r*r fewer tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.config import ProjectorConfig
from edgevlm.registry import Registry

PROJECTORS: Registry[type[nn.Module]] = Registry("projector")


def _to_grid(x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    h = math.isqrt(n)
    return x.transpose(1, 2).reshape(b, c, h, h)  # (B, C, H, W)


def _from_grid(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, H*W, C)


@PROJECTORS.register("mlp2x_gelu")
class MLPProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_vis, d_llm), nn.GELU(), nn.Linear(d_llm, d_llm))

    @staticmethod
    def num_tokens(cfg: ProjectorConfig, num_patches: int) -> int:
        return num_patches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW map (timm's LayerNorm2d, used by MobileVLM's LDP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeeze = _make_divisible(channels // 4)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.fc2(F.relu(self.fc1(scale)))
        return x * F.hardsigmoid(scale)


class InvertedResidual(nn.Module):
    """MobileNetV3 block with expand ratio 1, as torchvision builds it for MobileVLM's LDP (keys `block.*`)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.use_residual = stride == 1
        self.block = nn.Sequential(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False),
                LayerNorm2d(channels),
                nn.Hardswish(),
            ),
            SqueezeExcite(channels),
            nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), LayerNorm2d(channels)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


@PROJECTORS.register("ldp")
class LDPProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Identity(), nn.Linear(d_vis, d_llm), nn.GELU(), nn.Linear(d_llm, d_llm))
        self.mb_block = nn.Sequential(nn.Identity(), InvertedResidual(d_llm, 1), InvertedResidual(d_llm, 2))

    @staticmethod
    def num_tokens(cfg: ProjectorConfig, num_patches: int) -> int:
        side = math.isqrt(num_patches)
        return ((side + 1) // 2) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _from_grid(self.mb_block(_to_grid(self.mlp(x))))


class _FeatureIR(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))

    def forward(self, x):
        return self.mlp(x)


class _PosInject(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.peg = nn.Sequential(nn.Conv2d(d, d, 3, 1, 1, bias=True, groups=d))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.peg(grid) + grid


LDPV2_GRID = 12  # MobileVLM V2's TokenDownLayer: nn.AdaptiveAvgPool2d((12, 12)), whatever the tower's grid


@PROJECTORS.register("ldpv2")
class LDPv2Projector(nn.Module):
    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int):
        super().__init__()
        self.mlp = _FeatureIR(d_vis, d_llm)
        self.peg = _PosInject(d_llm)

    @staticmethod
    def num_tokens(cfg: ProjectorConfig, num_patches: int) -> int:
        return LDPV2_GRID**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = _to_grid(self.mlp(x))  # (B, D_llm, H, H)
        return _from_grid(self.peg(adaptive_avg_pool(grid, LDPV2_GRID)))


def adaptive_avg_pool(grid: torch.Tensor, out: int) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(grid, out)` in ops every exporter lowers.

    When the side divides by `out` it is a plain k x k average pool (24 → 12: 2 x 2, what llama.cpp's LDPv2
    graph runs). Otherwise PyTorch's windows overlap ([floor(i H / out), ceil((i + 1) H / out))), which ONNX,
    ExecuTorch and CoreML have no pooling op for; averaging is linear, so the same windows are applied as one
    (out, H) matrix on each side."""
    side = grid.shape[-1]
    if side % out == 0:
        return F.avg_pool2d(grid, side // out)
    windows = [(i * side // out, -(-(i + 1) * side // out)) for i in range(out)]
    rows = torch.tensor([[1.0 / (hi - lo) if lo <= j < hi else 0.0 for j in range(side)] for lo, hi in windows],
                        dtype=grid.dtype, device=grid.device)  # a constant in traced programs
    return rows @ grid @ rows.T


@PROJECTORS.register("pixel_shuffle")
class PixelShuffleProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig, d_vis: int, d_llm: int):
        super().__init__()
        self.r = cfg.shuffle_ratio
        self.proj = nn.Linear(d_vis * self.r**2, d_llm, bias=False)

    @staticmethod
    def num_tokens(cfg: ProjectorConfig, num_patches: int) -> int:
        return num_patches // cfg.shuffle_ratio**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_shuffle(x, self.r))


def pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """Idefics3's space-to-depth: (B, N, C) → (B, N / r², C r²), in its exact element order."""
    b, n, c = x.shape
    side = math.isqrt(n)
    x = x.reshape(b, side, side // r, c * r)
    x = x.permute(0, 2, 1, 3).reshape(b, side // r, side // r, c * r * r)
    return x.permute(0, 2, 1, 3).reshape(b, n // (r * r), c * r * r)


def build_projector(cfg: ProjectorConfig, d_vis: int, d_llm: int) -> nn.Module:
    return PROJECTORS[cfg.kind](cfg, d_vis, d_llm)


def projector_tokens(cfg: ProjectorConfig, num_patches: int) -> int:
    return PROJECTORS[cfg.kind].num_tokens(cfg, num_patches)
