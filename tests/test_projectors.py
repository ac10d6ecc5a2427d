"""Projectors: token counts, shapes, the strict registry, and Idefics3's exact pixel-shuffle order."""

from __future__ import annotations

import pytest
import torch

from edgevlm.config import ProjectorConfig
from edgevlm.errors import EdgeVLMError
from edgevlm.models.projectors import (PROJECTORS, adaptive_avg_pool, build_projector, pixel_shuffle,
                                       projector_tokens)
from edgevlm.registry import Registry


@pytest.mark.parametrize("kind,tokens", [("mlp2x_gelu", 576), ("ldp", 144), ("ldpv2", 144), ("pixel_shuffle", 144)])
def test_token_counts_and_shapes(kind, tokens):
    cfg = ProjectorConfig(kind=kind)
    proj = build_projector(cfg, 96, 128)
    out = proj(torch.randn(2, 576, 96))
    assert out.shape == (2, tokens, 128)
    assert projector_tokens(cfg, 576) == tokens


def test_pixel_shuffle_ratio_3():
    cfg = ProjectorConfig(kind="pixel_shuffle", shuffle_ratio=3)
    assert build_projector(cfg, 32, 64)(torch.randn(1, 576, 32)).shape == (1, 64, 64)


def test_pixel_shuffle_matches_idefics3_order():
    """The reference is Idefics3Connector.pixel_shuffle, step by step."""
    x = torch.randn(2, 576, 8)
    bsz, seq, dim = x.shape
    h = w = 24
    r = 2
    ref = x.view(bsz, h, w, dim).view(bsz, h, w // r, dim * r).permute(0, 2, 1, 3)
    ref = ref.reshape(bsz, w // r, h // r, dim * r * r).permute(0, 2, 1, 3).reshape(bsz, seq // 4, dim * 4)
    assert torch.equal(pixel_shuffle(x, 2), ref)


@pytest.mark.parametrize("side", [24, 16, 27, 36, 8])
def test_ldpv2_pool_is_mobilevlm_v2s_adaptive_pool(side):
    """MobileVLM V2's TokenDownLayer is AdaptiveAvgPool2d((12, 12)) for any grid; on 24 x 24 ours is exactly the
    2 x 2 average pool llama.cpp's graph runs, elsewhere the same overlapping windows as matrices."""
    grid = torch.randn(2, 8, side, side)
    ours = adaptive_avg_pool(grid, 12)
    torch.testing.assert_close(ours, torch.nn.functional.adaptive_avg_pool2d(grid, 12), rtol=0, atol=1e-6)
    if side == 24:
        assert torch.equal(ours, torch.nn.functional.avg_pool2d(grid, 2))
    cfg = ProjectorConfig(kind="ldpv2")
    assert build_projector(cfg, 8, 16)(torch.randn(1, side * side, 8)).shape == (1, 144, 16)
    assert projector_tokens(cfg, side * side) == 144


def test_registry_is_strict():
    with pytest.raises(EdgeVLMError, match="unknown projector 'mlp'; known: ldp, ldpv2, mlp2x_gelu, pixel_shuffle"):
        PROJECTORS["mlp"]
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)
