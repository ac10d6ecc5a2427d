"""Creating a model from a preset: random weights plus the tokenizer the preset's vocabulary comes from."""

from __future__ import annotations

import torch

from edgevlm.data.tokenizer import train_shapes_tokenizer
from edgevlm.models.presets import get_preset
from edgevlm.models.vlm import EdgeVLM


def create(preset: str, seed: int = 0) -> EdgeVLM:
    cfg = get_preset(preset)
    tokenizer = train_shapes_tokenizer(cfg.llm.vocab_size)
    cfg.llm.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    return EdgeVLM(cfg, tokenizer).eval()
