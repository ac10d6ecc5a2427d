"""Named model presets: one builder, and each preset a few lines with its numbers and source.

Tiny presets keep the real image geometry (336 px, patch 14: 576 patches, 144 tokens after LDP / LDPv2) and
shrink only widths and depths, because runtimes hard-code geometry (llama.cpp's LDPv2 graph assumes 24 x 24
patches). Their LLM vocabulary is the locally trained `shapes` tokenizer's.
"""

from __future__ import annotations

from typing import Callable

from edgevlm.config import LLMConfig, ProjectorConfig, VisionConfig, VLMConfig
from edgevlm.data.tokenizer import SHAPES_VOCAB
from edgevlm.registry import Registry

PRESETS: Registry[Callable[[], VLMConfig]] = Registry("preset")


def preset(name: str):
    return PRESETS.register(name)


def tiny_vlm(family: str, projector: str, **projector_kw) -> VLMConfig:
    """The tiny shape every family's test twin shares: CLIP-336/14 geometry, a 4-layer 128-wide Llama."""
    return VLMConfig(
        family=family,
        template="edgevlm",
        vision=VisionConfig(hidden_size=96, intermediate_size=384, num_layers=4, num_heads=3),
        projector=ProjectorConfig(kind=projector, **projector_kw),
        llm=LLMConfig(
            arch="llama", vocab_size=SHAPES_VOCAB, hidden_size=128, intermediate_size=384, num_layers=4,
            num_heads=4, num_kv_heads=4, max_position_embeddings=512, rms_norm_eps=1e-6,
        ),
    )


@preset("mobilevlm-tiny")
def mobilevlm_tiny() -> VLMConfig:
    """MobileVLM (arXiv:2312.16886) geometry with LDP: 576 patches → 144 tokens."""
    return tiny_vlm("mobilevlm", "ldp")


@preset("mobilevlm-v2-tiny")
def mobilevlm_v2_tiny() -> VLMConfig:
    """MobileVLM V2 (arXiv:2402.03766) geometry with LDPv2: 576 patches → 144 tokens."""
    return tiny_vlm("mobilevlm", "ldpv2")


def mobilevlm(projector: str) -> VLMConfig:
    """CLIP ViT-L/14-336 + MobileLLaMA-1.4B (hidden 2048, 24 layers, 16 heads, FFN 5632, 32k vocab)."""
    return VLMConfig(
        family="mobilevlm",
        template="vicuna_v1",
        vision=VisionConfig(),  # the defaults are CLIP ViT-L/14-336's
        projector=ProjectorConfig(kind=projector),
        llm=LLMConfig(arch="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_layers=24,
                      num_heads=16, num_kv_heads=16, max_position_embeddings=2048),
    )


@preset("mobilevlm-1.7b")
def mobilevlm_1_7b() -> VLMConfig:
    """mtgv/MobileVLM-1.7B: openai/clip-vit-large-patch14-336 + LDP + mtgv/MobileLLaMA-1.4B-Chat."""
    return mobilevlm("ldp")


@preset("mobilevlm-v2-1.7b")
def mobilevlm_v2_1_7b() -> VLMConfig:
    """mtgv/MobileVLM_V2-1.7B: openai/clip-vit-large-patch14-336 + LDPv2 + MobileLLaMA-1.4B-Chat."""
    return mobilevlm("ldpv2")


def get_preset(name: str) -> VLMConfig:
    return PRESETS[name]()
