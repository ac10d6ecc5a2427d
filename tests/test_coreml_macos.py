"""CoreML prediction parity against PyTorch: needs Core ML, so macOS (14+ host for iOS 18 / macOS 15 programs:
macOS 15). Run there with `.venv/bin/python -m pytest -q tests/test_coreml_macos.py`; elsewhere every test
skips with that reason. Linux-side checks of the same bundles: tests/test_coreml.py."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(platform.system() != "Darwin", reason="CoreML prediction needs macOS")
ct = pytest.importorskip("coremltools")

from edgevlm.export import ExportConfig, export  # noqa: E402
from edgevlm.export.verify import verify  # noqa: E402
from edgevlm.models.vlm import EdgeVLM  # noqa: E402
from edgevlm.runtimes import load_runtime  # noqa: E402

# greedy answers identical to PyTorch on the parity slice: Core ML computes in fp16, so not always 1.0
MIN_IDENTICAL = {"fp16": 0.95, "int8": 0.85, "int4": 0.6}


@pytest.fixture(scope="module")
def trained(trained_model_dir):
    return EdgeVLM.from_pretrained(trained_model_dir)


@pytest.fixture(scope="module", params=["fp16", "int8", "int4"])
def runtime(request, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml") / request.param
    export(trained, ExportConfig("coreml", request.param, verify_limit=0), out, progress=False)
    return request.param, load_runtime(out)


def _close(a: np.ndarray, b: np.ndarray, rel: float) -> None:
    assert np.abs(a - b).max() <= rel * np.abs(b).max(), (np.abs(a - b).max(), np.abs(b).max())


def test_vision_encoder_matches_pytorch(runtime, trained):
    q, rt = runtime
    torch.manual_seed(0)
    pixels = torch.randn(1, 3, trained.cfg.vision.image_size, trained.cfg.vision.image_size)
    with torch.no_grad():
        ref = trained.encode_image(pixels)[0].numpy()  # (N_img, D)
    _close(rt.vision_encoder(pixels.numpy()), ref, {"fp16": 0.02, "int8": 0.1, "int4": 0.1}[q])


def test_cached_decode_equals_prefill(runtime, trained):
    """Prefill then one token at a time through the state gives the logits of one long prefill (the state's
    slice writes land), and both match PyTorch."""
    q, rt = runtime
    ids = np.asarray([i for i in trained.prompt_ids("what is in the image?") if i >= 0], dtype=np.int64)
    embeds = rt.token_embedding(ids)  # (T, D)
    with torch.no_grad():
        ref = trained.llm(inputs_embeds=torch.from_numpy(embeds)[None].float()).logits[0].numpy()  # (T, V)
    steps = []
    rt.reset()
    steps.append(rt.text_decoder(embeds[:-3], 0))
    for t in range(len(embeds) - 3, len(embeds)):
        steps.append(rt.text_decoder(embeds[t : t + 1], t))
    rt.reset()
    whole = rt.text_decoder(embeds, 0)
    tol = {"fp16": 0.03, "int8": 0.15, "int4": 0.3}[q]
    _close(steps[-1], whole, tol)
    _close(np.stack(steps), ref[len(embeds) - 4 :], tol)


def test_prediction_parity_on_eval_slice(runtime, trained, parity_eval):
    q, rt = runtime
    record = verify(rt, trained, parity_eval, limit=100, progress=False)
    print(q, record)
    assert record["n"] >= 100
    assert record["answers_identical"] >= MIN_IDENTICAL[q], record
