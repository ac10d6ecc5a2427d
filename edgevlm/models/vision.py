"""Vision towers: transformers' CLIP / SigLIP vision models, run up to LLaVA's feature layer.

Only the blocks up to `feature_layer` run (hidden_states[-2] needs n-1 of n blocks), the way LLaVA selects
features and llama.cpp's clip graph runs them; CLIP's class token is dropped ("patch" features).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from edgevlm.config import VisionConfig, VisionKind
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
        attn_implementation="sdpa",
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
        if self.cfg.kind is VisionKind.CLIP:
            h = h[:, 1:]  # drop the class token
        return h
