"""Real-size vocabularies (padded tokenizer), the smoke verification mode, and the bench's time split.

A tiny LLM with MobileLLaMA's 32000-token vocabulary stands in for a real-size model: the vocabulary is what
the padding is about, and the widths keep the export to seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from edgevlm.bench.report import markdown
from edgevlm.bench.rounds import schedule
from edgevlm.bench.runner import DEFAULT_PROMPT, BenchConfig, bench
from edgevlm.bench.weights import decode_bytes_per_token, kv_bytes_per_token
from edgevlm.bundle.manifest import open_bundle
from edgevlm.bench.worker import time_split
from edgevlm.bundle.image import load_image
from edgevlm.bundle.tokenizer import TextTokenizer
from edgevlm.data.tokenizer import SHAPES_VOCAB, train_shapes_tokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.export import ExportConfig, export
from edgevlm.models.factory import create_from_config, vocabulary
from edgevlm.models.presets import get_preset, tiny_vlm
from edgevlm.runtimes import load_runtime
from edgevlm.runtimes.base import PHASES

REAL_VOCAB = 32000
GOLDEN_BUNDLES = Path(__file__).parent / "goldens" / "bundles"


def test_tiny_presets_keep_the_shapes_vocabulary():
    size, tok = vocabulary(SHAPES_VOCAB)
    assert size == len(tok) == SHAPES_VOCAB
    ref = train_shapes_tokenizer()
    assert tok.encode("What is in the top left? red circle") == ref.encode("What is in the top left? red circle")


def test_real_size_vocabulary_is_padded_with_placeholders(tmp_path):
    size, tok = vocabulary(get_preset("mobilevlm-v2-1.7b").llm.vocab_size)
    assert size == len(tok) == REAL_VOCAB
    text = "What is in the top left? The answer: 3 blue squares."
    ids = tok.encode(text)
    assert max(ids) < SHAPES_VOCAB  # ordinary text never lands on a placeholder
    assert tok.decode(ids + [SHAPES_VOCAB, REAL_VOCAB - 1]) == tok.decode(ids)  # placeholders decode to nothing
    tok.save(tmp_path / "tokenizer.json")
    loaded = TextTokenizer.load(tmp_path / "tokenizer.json")
    assert len(loaded) == REAL_VOCAB and loaded.encode(text) == ids
    with pytest.raises(EdgeVLMError, match="cannot pad"):
        tok.pad_to(100)


@pytest.fixture(scope="module")
def big_vocab_bundle(tmp_path_factory):
    cfg = tiny_vlm("mobilevlm", "ldpv2")
    cfg.llm.vocab_size = REAL_VOCAB
    model = create_from_config(cfg, seed=0)
    out = tmp_path_factory.mktemp("bench") / "gguf-q8_0"
    result = export(model, ExportConfig("gguf", "q8_0", verify="smoke", threads=1), out, progress=False)
    return model, result


def test_gguf_token_list_has_one_entry_per_embedding_row(big_vocab_bundle):
    model, result = big_vocab_bundle
    assert model.cfg.llm.vocab_size == len(model.tokenizer) == REAL_VOCAB
    reader = gguf.GGUFReader(str(result.path / result.manifest["runtime"]["text_model"]))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    rows = next(t for t in reader.tensors if t.name == "token_embd.weight").shape[-1]
    assert len(tokens.data) == rows == REAL_VOCAB
    loaded = TextTokenizer.load(result.path / "tokenizer.json")
    assert len(loaded) == REAL_VOCAB


def test_smoke_verification_records_what_it_checked(big_vocab_bundle):
    _, result = big_vocab_bundle
    v = json.loads((result.path / "manifest.json").read_text())["verification"]
    assert v["mode"] == "smoke"
    assert 0 < len(v["generated_ids"]) <= 4 and all(0 <= i < REAL_VOCAB for i in v["generated_ids"])
    with pytest.raises(ValueError):
        ExportConfig("gguf", "q8_0", verify="quick")


# The split's engine time is our clock around each engine call; the engines' own clocks check it (ONNX Runtime's
# session profile, ExecuTorch's ETDump, llama.cpp's perf counters; mtmd keeps none for the image), run by run:
# `PHASE_engine_unseen_ms` is the median over runs of ours − theirs. Measured 2026-12-02 on the tiny bundles
# below (2 cores at load 5-6): ours exceeds the engine's by 0.01-0.06 ms per call (the bindings' argument
# handling), 0.1-0.25 ms for the image's one call (its input copy: 1.3 MB of floats for ONNX, a uint8 tensor for
# ExecuTorch); llama.cpp's clock runs on past a decode until the logits are read, so it exceeds ours by ~0.02 ms
# per call. ~5 % of runs are preempted inside that margin; the median over 5 runs absorbs them. The bounds: the
# unseen time within -10 % .. +10 % of ours, plus 0.1 ms per call above. A phase that leaves an engine call out,
# or counts the preprocessing as engine time, falls outside; work of a few microseconds does not.
SPANS_INSIDE_OURS = {"onnx", "executorch"}  # the engine's span lies inside our timed call: ours can only be longer
PER_CALL_MS = 0.1
RUNS = 5


def check_against_own_clock(split: dict, fmt: str) -> None:
    own = [p for p in PHASES if f"{p}_engine_self_ms" in split]
    assert own == (["prefill", "decode"] if fmt == "gguf" else list(PHASES))
    for phase in PHASES:
        assert split[f"{phase}_outside_ms"] >= 0 and split[f"{phase}_engine_calls"] > 0
    for phase in own:
        ours, unseen = split[f"{phase}_engine_ms"], split[f"{phase}_engine_unseen_ms"]
        calls = split[f"{phase}_engine_calls"]
        where = (f"{fmt} {phase}: ours {ours:.3f} ms, of which the engine's own clock does not see {unseen:.3f} ms "
                 f"({calls} calls)")
        assert split[f"{phase}_engine_self_ms"] > 0, where
        assert -0.1 * ours <= unseen <= 0.1 * ours + PER_CALL_MS * calls, where
        if fmt in SPANS_INSIDE_OURS:
            assert unseen >= 0, where


def check_rounds(report: dict, bundles: list) -> None:
    """Interleaved rounds: rotated order, a bandwidth reading beside each measurement, and each round's roofline
    and ratios from that round's own figures (a ratio of medians would pass for two rounds only by chance)."""
    assert [r["order"] for r in report["rounds"]] == [[str(b) for b in bundles], [str(b) for b in bundles[::-1]]]
    first, second = report["results"]
    for b, row in enumerate(report["results"]):
        assert [r["position"] for r in row["rounds"]] == [b, 1 - b]
        for r, rnd in enumerate(row["rounds"]):
            bandwidth = report["rounds"][r]["bandwidth_bytes_s"][rnd["position"]]
            assert bandwidth > 0 and rnd["bandwidth_bytes_s"] == bandwidth
            bound = bandwidth / (row["decode_weight_bytes"] + row["decode_kv_bytes"])
            assert rnd["roofline_pct"] == pytest.approx(100 * rnd["decode_tok_s"] / bound)
        assert row["decode_tok_s"]["rounds"] == 2 and row["roofline_pct"] == row["roofline"]["pct"]["median"]
    per_round = [s["decode_tok_s"] / f["decode_tok_s"] for f, s in zip(first["rounds"], second["rounds"])]
    assert second["ratios"]["decode_vs_first"]["median"] == pytest.approx(sum(per_round) / 2)
    assert first["ratios"]["decode_vs_first"]["median"] == 1
    assert min(r["ratios"]["ttft_vs_best"]["min"] for r in report["results"]) == pytest.approx(1)
    assert "decode ÷ first" in markdown(report)


def test_schedule_rotates_every_bundle_through_every_position():
    order = schedule(3, 3)
    assert order == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert all(sorted(col) == [0, 1, 2] for col in zip(*order))


def test_bench_engine_time_agrees_with_the_engines_own_clock(big_vocab_bundle):
    _, result = big_vocab_bundle
    bundles = [result.path, GOLDEN_BUNDLES / "onnx-fp32"]
    report = bench(bundles, BenchConfig(new_tokens=8, runs=RUNS, threads=1, self_timing=True, rounds=2),
                   progress=False)
    check_rounds(report, bundles)
    assert "AVX" in report["results"][0]["engine_build"]  # llama.cpp's system info: the build's CPU kernels
    gguf = report["results"][0]
    assert gguf["image_tokens"] == 144 and gguf["projector"] == "ldpv2"
    for r in report["results"]:
        check_against_own_clock(r["split"], r["format"])
        s = r["split"]
        assert s["token_engine_ms"] * r["decode_tokens"] == pytest.approx(s["decode_engine_ms"])


def test_executorch_engine_time_agrees_with_its_etdump():
    """In this process (the bench's worker would import torch and ExecuTorch again: ~10 s), through the
    worker's own `time_split`."""
    runtime = load_runtime(GOLDEN_BUNDLES / "executorch-fp32", threads=1, self_timing=True)
    image = load_image(GOLDEN_BUNDLES.parent / "images" / "exact-336x336.png")
    runs = [runtime.profile(image, DEFAULT_PROMPT, 8) for _ in range(RUNS)]
    check_against_own_clock(time_split(runs, runtime.engine_self_ms()), "executorch")


def test_self_timing_with_a_device_is_refused():
    from edgevlm.bench.devices import open_device

    with pytest.raises(EdgeVLMError, match="--self-timing"):
        bench([GOLDEN_BUNDLES / "onnx-fp32"], BenchConfig(self_timing=True), progress=False,
              device=open_device("local"))


def test_kv_bytes_per_token_follow_the_cache_layout(big_vocab_bundle):
    """Every layer's keys and values, F32 (our caches), at the decoded tokens' mean position; the same layout
    read from each format's files of one model."""
    model, result = big_vocab_bundle
    llm = model.cfg.llm
    per_position = llm.num_layers * 2 * llm.num_kv_heads * (llm.hidden_size // llm.num_heads) * 4
    kv, source = kv_bytes_per_token(open_bundle(result.path), 150, 8)
    assert kv == per_position * (150 + 4) and source.startswith(f"kv: {llm.num_layers} layers")
    goldens = {kv_bytes_per_token(open_bundle(GOLDEN_BUNDLES / b), 150, 8)
               for b in ("gguf-f16", "onnx-fp32", "executorch-fp32")}
    assert len(goldens) == 1


def test_executorch_decoder_bytes_are_read_from_the_program():
    """fp32: the text decoder's parameters × 4 bytes (the program adds a few small constants); int4: within a few
    % of the scheme's effective bits. The vision encoder's and the embedding table's bytes are not counted."""
    fp32 = open_bundle(GOLDEN_BUNDLES / "executorch-fp32")
    params = fp32.manifest["parameters"]["decoder_per_token"]
    weight_bytes, source = decode_bytes_per_token(fp32)
    assert source == "program" and weight_bytes == pytest.approx(4 * params, rel=0.01)
    int4 = open_bundle(GOLDEN_BUNDLES / "executorch-int4")
    bits = int4.manifest["quantization"]["bits"]
    assert decode_bytes_per_token(int4)[0] == pytest.approx(params * bits / 8, rel=0.03)


def test_native_vs_python_ratios_are_paired_within_rounds():
    """A machine twice as fast in round 2 moves both sides: the paired ratio stays, the ratio of medians would not."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "native_vs_python.py"
    spec = importlib.util.spec_from_file_location("native_vs_python", path)
    nvp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nvp)

    def row(decode: float, ttft_ms: float) -> dict:
        one = lambda v: {"median": v}  # noqa: E731
        return {"decode_tok_s": one(decode), "ttft_ms": one(ttft_ms), "image_ms": one(ttft_ms / 2),
                "prefill_tok_s": one(100.0), "peak_rss_bytes": 2e9, "runtime": "x"}

    sides = {"python": [row(20, 6000), row(40, 3000), row(20, 6000)],
             "native": [row(21, 5700), row(42, 2850), row(21, 5700)]}
    assert nvp._paired(sides, "decode_tok_s") == "1.05× [1.05–1.05]"
    assert nvp._paired(sides, "ttft_s") == "0.95× [0.95–0.95]"
    drifting = {"python": sides["python"][:2] + [row(40, 3000)], "native": sides["native"]}
    assert nvp._paired(drifting, "decode_tok_s").startswith("1.05×")  # medians alone would read 0.525×


def test_onnx_decode_ops_groups_the_profiled_kernels(tmp_path):
    """benchmarks/onnx_decode_ops.py on the golden int4 bundle: the decode steps' kernels by operator type, each
    weight-reading type with its bytes (the int4 GEMVs read the graph's MatMulNBits weights once per token)."""
    import subprocess
    import sys

    import onnx

    out = tmp_path / "ops.json"
    bundle = GOLDEN_BUNDLES / "onnx-int4"
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "onnx_decode_ops.py"),
                    str(bundle), "--prompt", "8", "--steps", "5", "--threads", "1", "--json", str(out)],
                   check=True, capture_output=True)
    report = json.loads(out.read_text())
    assert report["tokens"] == 4  # the prefill and the first step are left out
    ops = report["ops"]
    graph = onnx.load(bundle / "decoder.onnx", load_external_data=False).graph
    assert ops["GroupQueryAttention"]["nodes"] == sum(n.op_type == "GroupQueryAttention" for n in graph.node)
    packed = {n.input[1] for n in graph.node if n.op_type == "MatMulNBits"}  # the int4 weights (scales beside)
    packed_bytes = sum(int({e.key: e.value for e in t.external_data}.get("length", len(t.raw_data)))
                       for t in graph.initializer if t.name in packed)
    assert packed_bytes > 0 and ops["MatMulNBits"]["weight_mb"] * 1e6 >= packed_bytes
    assert all(r["ms_per_token"] > 0 for r in ops.values())


def test_onnx_vision_split_cuts_the_graph_at_the_towers_weights(tmp_path):
    """benchmarks/onnx_vision_split.py on the golden int4 bundle: every profiled kernel lands in the tower or the
    projector, the tower holding every node that reads a tower weight, the projector the ones after it."""
    import subprocess
    import sys

    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from onnx_vision_split import tower_nodes

    out = tmp_path / "split.json"
    bundle = GOLDEN_BUNDLES / "onnx-int4"
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "onnx_vision_split.py"),
                    str(bundle), "--runs", "2", "--threads", "1", "--json", str(out)], check=True, capture_output=True)
    parts = json.loads(out.read_text())["parts"]
    assert all(p["nodes"] > 0 and sum(p["ms_per_image"].values()) > 0 for p in parts.values()), parts
    graph = onnx.load(bundle / "vision.onnx", load_external_data=False).graph
    tower = tower_nodes(bundle / "vision.onnx")
    reading = {n.name for n in graph.node if any(i.startswith("vision.tower.") for i in n.input)}
    projector = {n.name for n in graph.node if any(i.startswith("projector.") for i in n.input)}
    assert reading and reading <= tower and projector and not projector & tower



def test_et_vision_split_methods_are_the_encoder_and_its_tower(tmp_path):
    """benchmarks/et_vision_split.py: its `vision_encoder` is the bundle's encoder (8da8w, XNNPACK) and its `tower`
    the same program without the projector: each matches PyTorch on the same image within 8-bit rounding."""
    import sys

    import torch
    from executorch.runtime import Runtime

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from et_vision_split import split_program, time_methods

    from edgevlm.models.factory import create

    model = create("mobilevlm-v2-tiny", seed=0)
    (tmp_path / "split.pte").write_bytes(split_program(model, "int4"))
    rgb = load_image(GOLDEN_BUNDLES.parent / "images" / "exact-336x336.png")
    image = torch.from_numpy(model.preprocess.resized(rgb)).permute(2, 0, 1)[None].contiguous()
    program = Runtime.get().load_program(tmp_path / "split.pte")
    got = {name: program.load_method(name).execute([image])[0] for name in ("vision_encoder", "tower")}
    with torch.no_grad():
        tower = model.vision(model.pixel_values(rgb))
        want = {"tower": tower, "vision_encoder": model.projector(tower)}
    for name, w in want.items():
        assert got[name].shape == w.shape, name
        cos = torch.nn.functional.cosine_similarity(got[name].flatten(), w.flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))
    assert got["tower"].shape != got["vision_encoder"].shape  # 576 patches, 144 image tokens
    times = time_methods(tmp_path / "split.pte", image, threads=1, runs=2)
    assert all(len(t) == 2 and min(t) > 0 for t in times.values())


def test_et_ab_times_the_same_method_of_each_bundle(tmp_path):
    """benchmarks/et_ab.py on the golden ExecuTorch bundles: both phases of the decoder timed for each bundle,
    the first bundle's output equal to itself, the fp32 one's near the int4 one's (the same model)."""
    import subprocess
    import sys

    out = tmp_path / "ab.json"
    bundles = [str(GOLDEN_BUNDLES / "executorch-int4"), str(GOLDEN_BUNDLES / "executorch-fp32")]
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "et_ab.py"), *bundles,
                    "--method", "text_decoder", "--runs", "2", "--threads", "1", "--prefill", "150",
                    "--json", str(out)], check=True, capture_output=True)
    first, second = json.loads(out.read_text())["results"]
    for phase in ("prefill", "decode step"):
        assert first[phase]["ratio"] == 1.0 and first[phase]["max_diff"] == 0.0
        assert 0 < second[phase]["median_ms"] and 0 < second[phase]["max_diff"] < 1.0, second
