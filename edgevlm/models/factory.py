"""Creating a model from a preset: random weights plus the tokenizer the preset's vocabulary comes from.

Every preset uses the locally trained `shapes` tokenizer (nothing is downloaded). A tiny preset takes that
tokenizer's size as its vocabulary; a real-size preset keeps its published vocabulary (32000 for MobileLLaMA:
the LM head is a large share of the bytes each decoded token reads, so benchmarks need its real width) and the
tokenizer is padded with placeholder tokens to match it.
"""

from __future__ import annotations

import torch

from edgevlm.config import VLMConfig
from edgevlm.bundle.tokenizer import TextTokenizer
from edgevlm.data.tokenizer import SHAPES_VOCAB, train_shapes_tokenizer
from edgevlm.models.presets import get_preset
from edgevlm.models.vision import init_positions_for_scratch
from edgevlm.models.vlm import EdgeVLM


def create(preset: str, seed: int = 0) -> EdgeVLM:
    return create_from_config(get_preset(preset), seed)


def create_from_config(cfg: VLMConfig, seed: int = 0) -> EdgeVLM:
    """Random weights (seeded) for `cfg`, whose `llm.vocab_size` is fixed here as described above."""
    cfg.llm.vocab_size, tokenizer = vocabulary(cfg.llm.vocab_size)
    torch.manual_seed(seed)
    model = EdgeVLM(cfg, tokenizer).eval()
    init_positions_for_scratch(model.vision)
    return model


def vocabulary(wanted: int) -> tuple[int, TextTokenizer]:
    """(vocab size, tokenizer) for a preset asking for `wanted` entries."""
    tokenizer = train_shapes_tokenizer(min(wanted, SHAPES_VOCAB))
    if wanted > SHAPES_VOCAB:
        tokenizer.pad_to(wanted)
    return len(tokenizer), tokenizer
