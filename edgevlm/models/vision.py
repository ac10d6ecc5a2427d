"""Vision towers: transformers' CLIP / SigLIP vision models, run up to LLaVA's feature layer.

Only the blocks up to `feature_layer` run (hidden_states[-2] needs n-1 of n blocks), the way LLaVA selects
features and llama.cpp's clip graph runs them; CLIP's class token is dropped ("patch" features).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from edgevlm.config import VisionConfig, VisionKind
from edgevlm.models.llm import ATTENTION
from edgevlm.registry import Registry

TOWERS: Registry = Registry("vision tower")


def _hf_kwargs(cfg: VisionConfig) -> dict:
    return dict(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_act=cfg.hidden_act,
        attn_implementation=ATTENTION,
    )


@TOWERS.register(VisionKind.CLIP.value)
def _clip(cfg: VisionConfig) -> nn.Module:
    return CLIPVisionModel(CLIPVisionConfig(**_hf_kwargs(cfg)))


@TOWERS.register(VisionKind.SIGLIP.value)
def _siglip(cfg: VisionConfig) -> nn.Module:
    return SiglipVisionModel(SiglipVisionConfig(**_hf_kwargs(cfg), vision_use_head=False))


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.tower = TOWERS[cfg.kind.value](cfg)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → patch features (B, N_patches, D_vis) from hidden_states[feature_layer]."""
        h = self.tower.embeddings(pixel_values)  # (B, [1 +] N, D_vis)
        if hasattr(self.tower, "pre_layrnorm"):
            h = self.tower.pre_layrnorm(h)
        for layer in self.tower.encoder.layers[: self.cfg.layers_used]:
            h = layer(h, None)
        if self.cfg.drop_first_token:
            h = h[:, 1:]  # CLIP's class token (or, TinyLLaVA's rule, SigLIP's first patch)
        return h


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) 2-D sin-cos position codes: a quarter of the channels each for sin / cos of the row and
    of the column, at frequencies doubling from a quarter period across the grid (so the lowest ones rise
    monotonically across the image and "which half" is a linear read-out); channels left over are zero."""
    q = dim // 4
    freqs = (math.pi / (2 * grid)) * 2.0 ** torch.arange(q, dtype=torch.float64)
    rows = torch.arange(grid, dtype=torch.float64).repeat_interleave(grid)[:, None] * freqs
    cols = torch.arange(grid, dtype=torch.float64).repeat(grid)[:, None] * freqs
    codes = torch.cat([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=1)
    return F.pad(codes, (0, dim - codes.shape[1])).float()


@torch.no_grad()
def init_positions_for_scratch(tower: VisionTower) -> None:
    """A from-scratch tower starts with 2-D sin-cos position embeddings at unit scale, not transformers' N(0,
    0.02): with those the patch content (std ~0.75) drowns the position, and after minutes of training a
    linear probe still reads a token's image cell only 0.37 of the time, so the LLM cannot find "the top
    left"; with sin-cos codes a where-head learns it within 40 steps. Pre-trained towers keep their own."""
    emb = tower.tower.embeddings.position_embedding.weight
    grid = tower.cfg.grid
    emb[-grid * grid :] = sincos_2d(grid, emb.shape[1]).to(emb.dtype)  # CLIP's class position (row 0) stays
