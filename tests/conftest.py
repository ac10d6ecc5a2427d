"""Shared fixtures: tiny models and data the tests write themselves (no network, fixed seeds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgevlm.data.shapes import write_shapes
from edgevlm.models.factory import create


@pytest.fixture(scope="session")
def shapes_train(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("data") / "train", 24, seed=3, split="train")


@pytest.fixture(scope="session")
def shapes_eval(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("data") / "eval", 6, seed=3, split="eval")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "mobilevlm-v2-tiny"
    create("mobilevlm-v2-tiny", seed=0).save_pretrained(out)
    return out


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return create("mobilevlm-v2-tiny", seed=0)
