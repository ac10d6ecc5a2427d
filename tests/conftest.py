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


@pytest.fixture(scope="session")
def parity_eval(tmp_path_factory) -> Path:
    """A `shapes` eval slice with >= 100 questions, for bundle-vs-PyTorch parity tests."""
    return write_shapes(tmp_path_factory.mktemp("data") / "parity", 16, seed=0, split="eval")


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, shapes_train, tiny_model_dir) -> Path:
    """The tiny MobileVLM V2 briefly fine-tuned on `shapes`: confident (peaked) answers, so greedy parity
    between a bundle and PyTorch tests the export, not near-ties of a random model."""
    from edgevlm.train.config import TrainConfig
    from edgevlm.train.trainer import train

    out = tmp_path_factory.mktemp("models") / "trained"
    cfg = TrainConfig(stage="finetune", epochs=100, max_steps=120, batch_size=8, lr=3e-3, seed=0)
    return train(tiny_model_dir, shapes_train, out, cfg, progress=False).out


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and PyTorch threads spinning against a runtime's own
    thread pool in the same process (verification runs both in turn) slow both several-fold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
