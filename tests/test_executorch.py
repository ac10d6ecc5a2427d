"""ExecuTorch bundles: parity with PyTorch in our runtime, KV-cache decoding inside the .pte, quantized
accuracy, the same answers from ExecuTorch's own MultimodalRunner, and one-line errors for bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")

from cli_errors import fails as _fails  # noqa: E402
from edgevlm.bundle.image import load_image  # noqa: E402
from edgevlm.data.llava import read_llava  # noqa: E402
from edgevlm.errors import EdgeVLMError  # noqa: E402
from edgevlm.export import ExportConfig, export  # noqa: E402
from edgevlm.bundle.manifest import open_bundle  # noqa: E402
from edgevlm.models.vlm import EdgeVLM  # noqa: E402
from edgevlm.runtimes import load_runtime  # noqa: E402
from edgevlm.runtimes.executorch import RUNTIME, to_uint8  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """PyTorch's reference generation slows down ~100x with 2 threads on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(trained_model_dir):
    return EdgeVLM.from_pretrained(trained_model_dir)


@pytest.fixture(scope="module")
def bundle(trained, parity_eval, tmp_path_factory):
    """quant → its exported bundle (ExportResult), verified on the parity slice; each exported once."""
    done = {}

    def get(quant: str):
        if quant not in done:
            cfg = ExportConfig("executorch", quant, verify_data=parity_eval, verify_limit=200)
            done[quant] = export(trained, cfg, tmp_path_factory.mktemp("et") / quant, progress=False)
        return done[quant]

    return get


def _records(data_dir, n: int):
    return read_llava(data_dir)[:n]


def test_fp32_answers_identical_to_pytorch(bundle):
    r = bundle("fp32")
    v = r.manifest["verification"]
    print(f"\nexecutorch fp32: {r.bytes / 1e6:.2f} MB, n={v['n']}, identical {v['answers_identical']}, "
          f"accuracy {v['accuracy']} (PyTorch {v['reference_accuracy']})")
    assert v["n"] >= 100 and v["answers_identical"] == 1.0
    assert set(r.manifest["runtime"]["metadata_methods"]) >= {"get_max_seq_len", "get_eos_ids", "get_bos_id"}


@torch.no_grad()
def test_fp32_logits_and_cached_decoding(bundle, trained, parity_eval):
    """Image embeddings and logits within 1e-4 of PyTorch; decoding token by token through the program's KV
    cache equals recomputing the whole sequence, in the program and in PyTorch."""
    rt = load_runtime(bundle("fp32").path)
    rec = _records(parity_eval, 1)[0]
    image = load_image(rec.image)
    img = rt.encode_image(image)  # (N_img, D)
    ref_img = trained.encode_image(trained.pixel_values(image))[0]
    np.testing.assert_allclose(img, ref_img.numpy(), atol=1e-4, rtol=0)
    embeds = rt.prefill_embeds(img, rec.question)  # (T, D)
    steps = [rt.text_decoder(embeds, 0)]
    for pos in range(len(embeds), len(embeds) + 6):
        tok = int(np.argmax(steps[-1]))
        embeds = np.concatenate([embeds, rt.token_embedding(np.asarray([tok], dtype=np.int64))])
        steps.append(rt.text_decoder(embeds[pos:], pos))  # one position, the cache holds the rest
    full = trained.llm(inputs_embeds=torch.from_numpy(embeds)[None]).logits[0].numpy()  # (T + 6, V)
    np.testing.assert_allclose(np.stack(steps), full[-7:], atol=1e-4, rtol=0)
    recomputed = [rt.text_decoder(embeds[: len(embeds) - 6 + i], 0) for i in range(7)]
    np.testing.assert_allclose(np.stack(steps), np.stack(recomputed), atol=1e-5, rtol=0)


def test_int8_accuracy_within_one_point(bundle):
    r = bundle("int8")
    v = r.manifest["verification"]
    print(f"\nexecutorch int8: {r.bytes / 1e6:.2f} MB, n={v['n']}, identical {v['answers_identical']}, "
          f"accuracy {v['accuracy']} (PyTorch {v['reference_accuracy']})")
    assert v["n"] >= 100 and abs(v["accuracy"] - v["reference_accuracy"]) <= 0.01
    assert r.bytes < 0.5 * bundle("fp32").bytes


def test_int4_accuracy_within_three_points(bundle, trained, trained_model_dir):
    r = bundle("int4")
    v = r.manifest["verification"]
    print(f"\nexecutorch int4: {r.bytes / 1e6:.2f} MB, n={v['n']}, identical {v['answers_identical']}, "
          f"accuracy {v['accuracy']} (PyTorch {v['reference_accuracy']})")
    assert v["n"] >= 100 and v["accuracy"] >= v["reference_accuracy"] - 0.03
    assert r.bytes < bundle("int8").bytes
    saved = EdgeVLM.from_pretrained(trained_model_dir).state_dict()
    assert all(torch.equal(t, saved[k]) for k, t in trained.state_dict().items()), "export modified the model"


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_multimodal_runner_gives_the_same_answers(bundle, parity_eval, quant):
    """ExecuTorch's own multimodal runner (the one behind its Android / iOS demo apps) runs the same .pte with
    the bundle's tokenizer.json: BOS as a token (it adds none for a tokenizer.json), the text around the image,
    the image as uint8 RGB."""
    from executorch.extension.llm.runner import (
        GenerationConfig, MultimodalRunner, make_image_input, make_text_input, make_token_input)

    path = bundle(quant).path
    rt = load_runtime(path)
    runner = MultimodalRunner(str(path / "model.pte"), str(path / "tokenizer.json"))
    for rec in _records(parity_eval, 8):
        image = load_image(rec.image)
        pixels = to_uint8(rt.bundle.preprocess, rt.bundle.preprocess(image)[None])  # (1, 3, S, S)
        before, after = rt.bundle.template.prompt(rec.question).split("<image>")
        inputs = [make_token_input([rt.bundle.tokenizer.bos_id]), make_text_input(before),
                  make_image_input(torch.from_numpy(pixels)), make_text_input(after)]
        text = runner.generate_text(inputs, GenerationConfig(echo=False, max_new_tokens=24, temperature=0.0))
        runner.reset()
        ours = rt.answer(image, rec.question, max_new_tokens=24)
        print(f"{quant} runner {text!r} ours {ours!r}")
        assert text.removesuffix("</s>").strip() == ours


def test_bad_input_is_one_line_error(bundle, parity_eval, tmp_path, capsys):
    path = bundle("fp32").path
    image = str(_records(parity_eval, 1)[0].image)
    _fails(["run", "--bundle", str(path), "--image", image, "--prompt", "shape " * 600], capsys, "context of 512")
    rt = load_runtime(path)
    with pytest.raises(EdgeVLMError, match=r"the program takes \[1, 3, 336, 336\]"):
        rt.vision_encoder(np.zeros((1, 3, 224, 224), dtype=np.float32))
    bad = tmp_path / "truncated"
    shutil.copytree(path, bad)
    pte = bad / "model.pte"
    pte.write_bytes(pte.read_bytes()[: pte.stat().st_size // 2])
    _fails(["run", "--bundle", str(bad), "--image", image, "--prompt", "what?"], capsys, "truncated")
    with pytest.raises(EdgeVLMError, match="ExecuTorch cannot load the program"):
        RUNTIME(open_bundle(bad, check_files=False))


@pytest.mark.parametrize("kv_heads", [4, 2])  # multi-head and grouped-query attention
@torch.no_grad()
def test_custom_ops_decoder_equals_the_llm(kv_heads):
    """The text_decoder on llama::update_cache / custom_sdpa, eager: a prefill, then one position at a time
    through its cache, equals the transformers LM on the whole sequence."""
    from edgevlm.config import LLMConfig
    from edgevlm.export.executorch import TextDecoder
    from edgevlm.models.llm import build_llm

    torch.manual_seed(0)
    cfg = LLMConfig(arch="llama", vocab_size=64, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                    num_kv_heads=kv_heads, max_position_embeddings=32)
    llm = build_llm(cfg).eval()
    decoder = TextDecoder(llm, "llama", 32).eval()
    x = torch.randn(1, 9, 64)
    ref = llm(inputs_embeds=x).logits[0]  # (9, V)
    steps = [decoder(x[:, :7], torch.tensor([0]))] + [decoder(x[:, p : p + 1], torch.tensor([p])) for p in (7, 8)]
    torch.testing.assert_close(torch.cat(steps), ref[6:], atol=1e-5, rtol=0)


@torch.no_grad()
def test_matmul_mean_layer_norm_is_layer_norm():
    from edgevlm.export.executorch import MatmulMeanLayerNorm

    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(96, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = 3 * torch.randn(2, 17, 96) + 1
    torch.testing.assert_close(MatmulMeanLayerNorm(norm)(x), norm(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["mobilevlm-v2-tiny", "tinyllava-tiny"])  # a CLIP and a SigLIP tower
@torch.no_grad()
def test_vision_encoder_lowers_to_one_xnnpack_delegate(preset):
    """Layer norms as matmuls and no-op expands removed, nothing between the tower's layers runs in ExecuTorch's
    single-threaded portable kernels: before, every layer norm and batched matmul cut the tower into another
    XNNPACK partition (docs/benchmarks.md, ExecuTorch: the tower's layer norms)."""
    from edgevlm.export import executorch as et
    from edgevlm.models.factory import create

    model = create(preset)
    encoder = et.contract(model, 64)["vision_encoder"]
    size = model.cfg.vision.image_size
    image = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pixels = torch.from_numpy(model.preprocess.normalize(image[0].permute(1, 2, 0).numpy()))[None]
    torch.testing.assert_close(encoder(image), model.encode_image(pixels), atol=1e-5, rtol=1e-5)
    edge = et.to_edge({"vision_encoder": torch.export.export(encoder, (image,), strict=False)})
    ops = Counter(str(n.target) for n in edge.exported_program("vision_encoder").graph.nodes
                  if n.op == "call_function")
    assert ops["executorch_call_delegate"] == 1, ops
    assert not [op for op in ops if "layer_norm" in op], ops


def test_cli_run_prints_the_answer_and_nothing_else(bundle, parity_eval):
    """By default the terminal shows edgevlm's output only; --verbose adds ExecuTorch's native log lines."""
    path, rec = bundle("fp32").path, read_llava(parity_eval)[0]
    argv = [sys.executable, "-m", "edgevlm.cli", "run", "--bundle", str(path), "--image", str(rec.image),
            "--prompt", rec.question]
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    expected = load_runtime(path).answer(load_image(rec.image), rec.question)
    assert quiet.returncode == 0 and quiet.stdout == expected + "\n" and quiet.stderr == "", quiet.stderr
    verbose = subprocess.run(argv[:3] + ["--verbose"] + argv[3:], capture_output=True, text=True, timeout=300)
    assert verbose.stdout == quiet.stdout and "cpuinfo" in verbose.stderr
