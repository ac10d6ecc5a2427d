"""The native runner (native/, `edgevlm-run`) against the goldens and the Python runtime, on x86 and arm64
(under qemu-aarch64), and `edgevlm bench --device` for each target.

scripts/setup builds the runners (build/native, build/native-aarch64); pytest builds nothing, and a missing
runner fails here. The adb target runs against a stand-in adb (`fake_phone`): a directory on this host plus
qemu-aarch64 for the phone, so our side of the protocol (pushes, sha256 skips, the run, device facts) is
exercised end to end; what only a real phone can show is listed in docs/device-bench.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevlm.bench.devices import AdbDevice, native_runner, open_device
from edgevlm.bench.report import markdown
from edgevlm.bench.runner import BenchConfig, bench
from edgevlm.bundle.image import ImagePreprocess, load_image
from edgevlm.errors import EdgeVLMError
from edgevlm.runtimes import load_runtime

GOLDENS = Path(__file__).parent / "goldens"
VECTORS = json.loads((GOLDENS / "vectors.json").read_text())
GGUF = ["gguf-f16", "gguf-q4_0"]
EXECUTORCH = ["executorch-fp32", "executorch-int4"]  # the x86_64 runner only (the wheel's libraries)
IMAGES = [i["file"] for i in VECTORS["images"]]
QUESTION = "Describe the image."
HOST = platform.machine()


def native(*args, arch: str = HOST, check: bool = True) -> dict:
    """One edgevlm-run call (arm64 under qemu-aarch64-static): its JSON line."""
    prefix = ["qemu-aarch64-static"] if arch == "aarch64" and HOST != "aarch64" else []
    done = subprocess.run([*prefix, str(native_runner(arch)), *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if check:
        assert done.returncode == 0, out
    return out


def golden(bundle: str, image: str) -> dict:
    return next(b for b in VECTORS["bundles"] if b["dir"] == f"bundles/{bundle}" and b["image"] == image)


def traced(bundle: str, image: str, arch: str = HOST) -> dict:
    return native("--bundle", GOLDENS / "bundles" / bundle, "--image", GOLDENS / image, "--prompt", QUESTION,
                  "--new-tokens", VECTORS["new_tokens"], "--runs", 1, "--warmup", 0, "--threads", 2, "--trace",
                  arch=arch)


# ---- the spec's client-side parts, bit for bit ------------------------------------------------------------------
@pytest.mark.parametrize("image", VECTORS["images"], ids=lambda i: Path(i["file"]).stem)
def test_preprocess_matches_goldens(image):
    out = native("preprocess", GOLDENS / "bundles/gguf-f16", GOLDENS / image["file"])
    assert (out["width"], out["height"]) == (image["width"], image["height"])
    assert out["rgb_sha256"] == image["rgb_sha256"]
    assert out["resized_sha256"] == image["resized_sha256"]
    assert out["pixel_values_sha256"] == image["pixel_values_sha256"]


@pytest.mark.parametrize("width, height, mode", [(37, 23, "RGB"), (517, 389, "RGB"), (336, 100, "RGB"),
                                                 (13, 336, "L"), (700, 701, "RGBA"), (1000, 3, "P")])
def test_preprocess_matches_pillow(tmp_path, width, height, mode):
    """Beyond the goldens: noise at odd sizes, and grey / alpha / palette PNGs converted as Pillow converts."""
    from PIL import Image

    from edgevlm.bundle.manifest import open_bundle

    rng = np.random.default_rng(width * height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    image.save(tmp_path / "noise.png")
    pre = open_bundle(GOLDENS / "bundles/gguf-f16", check_files=False).preprocess
    out = native("preprocess", GOLDENS / "bundles/gguf-f16", tmp_path / "noise.png")
    rgb = load_image(tmp_path / "noise.png")
    assert out["rgb_sha256"] == hashlib.sha256(np.asarray(rgb).tobytes()).hexdigest()
    assert out["resized_sha256"] == hashlib.sha256(pre.resized(rgb).tobytes()).hexdigest()
    assert out["pixel_values_sha256"] == hashlib.sha256(pre(rgb).astype("<f4").tobytes()).hexdigest()


@pytest.mark.parametrize("name", ["gguf-q4_0", "executorch-fp32"])
def test_text_and_prompt_ids_match_goldens(name):
    """llama.cpp's tokenizer from the GGUF, and the runner's own byte-level BPE from tokenizer.json."""
    bundle = GOLDENS / "bundles" / name
    for t in VECTORS["text"]:
        assert native("tokenize", bundle, t["text"])["ids"] == t["ids"], t["text"]
    for p in VECTORS["prompts"]:
        assert native("prompt", bundle, p["question"])["ids"] == p["ids"], p["question"]


# ---- same answers as Python ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bundle", GGUF + EXECUTORCH)
def test_native_ids_equal_python_runtime(bundle):
    """Every golden image: native greedy ids == the Python runtime's == the goldens'; logits and image
    embeddings agree to the goldens' 1e-4 (the same engine libraries underneath; ExecuTorch's two LLM ops are
    the runner's own, native/src/et_llama_ops.cpp)."""
    runtime = load_runtime(GOLDENS / "bundles" / bundle, threads=2)
    for image in IMAGES:
        out, want = traced(bundle, image), golden(bundle, image)
        python = runtime.trace(load_image(GOLDENS / image), QUESTION, VECTORS["new_tokens"])
        trace = out["trace"]
        assert trace["greedy_ids"] == out["generated_ids"] == python.tokens == want["greedy_ids"], image
        assert trace["prompt_positions"] == python.prompt_positions == want["prompt_positions"]
        assert [i for i, _ in trace["top5"]] == [i for i, _ in want["top5"]]
        np.testing.assert_allclose([v for _, v in trace["top5"]], np.sort(python.logits[0])[::-1][:5], rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(trace["image_embeds"]["sum"], float(python.image_embeds.sum(dtype=np.float64)),
                                   rtol=1e-4)
        assert out["text"] == runtime.decode(python.tokens)


def test_generate_stops_at_eos_as_python():
    bundle, image = GOLDENS / "bundles/gguf-f16", GOLDENS / IMAGES[0]
    out = native("generate", bundle, image, QUESTION, 32)
    ids = load_runtime(bundle, threads=2).generate_many(load_image(image), [QUESTION], 32)[0]
    assert out["ids"] == ids and len(ids) < 32  # the golden model ends its caption with EOS
    assert out["text"] == load_runtime(bundle).decode(ids)


def test_c_api_from_c(tmp_path):
    """The C API compiled as C (what JNI and Swift call): a file and the same pixels passed raw answer alike."""
    image = GOLDENS / VECTORS["images"][1]["file"]
    pixels = load_image(image)
    raw = tmp_path / "image.rgb"
    raw.write_bytes(pixels.tobytes())
    done = subprocess.run([str(native_runner(HOST).parent / "evr-c-api-test"), str(GOLDENS / "bundles/gguf-q4_0"),
                           str(image), str(raw), str(pixels.width), str(pixels.height), QUESTION],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from_file, from_rgb, error = [json.loads(line) for line in done.stdout.splitlines()]
    want = golden("gguf-q4_0", VECTORS["images"][1]["file"])["greedy_ids"]
    assert from_file["ids"] == from_rgb["ids"] and from_file["ids"][:8] == want
    assert error["error"] == "/nonexistent/bundle: bundle directory not found"


@pytest.mark.parametrize("bundle", ["gguf-f16", "gguf-q4_0"])
def test_c_api_stepwise_equals_goldens(tmp_path, bundle):
    """evr_prefill + evr_decode + evr_n_vocab (what the Android core's JNI backend calls): the client's own
    greedy loop over the resized image and the prompt ids gives the goldens' 8 greedy ids."""
    b, image = GOLDENS / "bundles" / bundle, VECTORS["images"][1]["file"]
    pre = json.loads((b / "manifest.json").read_text())["image"]
    size = pre["size"]
    resized = tmp_path / "resized.rgb"
    levels = ImagePreprocess(size=size, mean=tuple(pre["mean"]), std=tuple(pre["std"])).resized(load_image(GOLDENS / image))
    resized.write_bytes(np.ascontiguousarray(levels, dtype=np.uint8).tobytes())
    ids = native("prompt", b, QUESTION)["ids"]
    at = ids.index(-200)
    before, after = ",".join(map(str, ids[:at])), ",".join(map(str, ids[at + 1:])) or "-"
    pixels = load_image(GOLDENS / image)
    raw = tmp_path / "image.rgb"
    raw.write_bytes(pixels.tobytes())
    done = subprocess.run([str(native_runner(HOST).parent / "evr-c-api-test"), str(b), str(GOLDENS / image), str(raw),
                           str(pixels.width), str(pixels.height), QUESTION, str(resized), str(size), before, after],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    step = json.loads(done.stdout.splitlines()[0])
    want = golden(bundle, image)
    print(bundle, "stepwise", step["stepwise"])
    assert step["stepwise"] == want["greedy_ids"]
    assert step["positions"] == int(want["prompt_positions"])


# ---- bad input: one line naming the file ------------------------------------------------------------------------
def _broken(tmp_path: Path, how: str) -> tuple[Path, str]:
    b = tmp_path / "gguf-q4_0"
    shutil.copytree(GOLDENS / "bundles/gguf-q4_0", b)
    manifest = json.loads((b / "manifest.json").read_text())
    model = b / "model-q4_0.gguf"
    if how == "modified":
        data = bytearray(model.read_bytes())
        data[-1] ^= 1
        model.write_bytes(bytes(data))
        return b, f"{model}: sha256 differs from manifest.json: the file was modified"
    if how == "truncated":
        model.write_bytes(model.read_bytes()[:-1])
        return b, f"{model}: size {model.stat().st_size} differs from manifest.json"
    if how == "outside":
        manifest["files"]["../secret"] = {"sha256": "0" * 64, "bytes": 1}
        expect = "file name '../secret' leaves the bundle"
    elif how == "version":
        manifest["spec_version"] = "2.0"
        expect = "spec_version '2.0' is not one this edgevlm reads"
    else:  # a field of the wrong type
        manifest["prompt"]["image_tokens"] = "144"
        expect = "prompt.image_tokens: expected"
    (b / "manifest.json").write_text(json.dumps(manifest))
    return b, f"{b / 'manifest.json'}: {expect}"


@pytest.mark.parametrize("how", ["modified", "truncated", "outside", "version", "type"])
def test_bad_bundle_is_one_line_naming_the_file(tmp_path, how):
    bundle, expect = _broken(tmp_path, how)
    done = subprocess.run([str(native_runner(HOST)), "check", str(bundle)], capture_output=True, text=True)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert json.loads(done.stdout)["error"].startswith(expect), done.stdout


# ---- arm64 ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bundle", GGUF)
def test_qemu_aarch64_same_ids_as_x86(bundle):
    """The static arm64 runner under qemu-aarch64: the goldens' ids and preprocessing (correctness only)."""
    image = IMAGES[0]
    out = traced(bundle, image, arch="aarch64")
    assert out["device"]["arch"] == "aarch64"
    assert out["generated_ids"] == traced(bundle, image)["generated_ids"] == golden(bundle, image)["greedy_ids"]
    pre = native("preprocess", GOLDENS / "bundles" / bundle, GOLDENS / VECTORS["images"][1]["file"], arch="aarch64")
    assert pre["pixel_values_sha256"] == VECTORS["images"][1]["pixel_values_sha256"]


# ---- edgevlm bench --device --------------------------------------------------------------------------------------
def _config() -> BenchConfig:
    return BenchConfig(image=GOLDENS / IMAGES[0], prompt=QUESTION, new_tokens=VECTORS["new_tokens"], runs=1,
                       threads=2)


def test_bench_device_local_keeps_the_report():
    bundles = [GOLDENS / "bundles" / b for b in GGUF]
    report = bench(bundles, _config(), progress=False, device=open_device("local"))
    host = bench(bundles[:1], _config(), progress=False)  # the Python worker, for its keys
    # the runner's JSON has no equivalent of llama.cpp's system info (the Python worker's `engine_build`), nor of
    # the Python runtimes' engine knobs (`settings`)
    assert set(host["results"][0]) - {"split", "engine_build", "settings"} <= set(report["results"][0])
    for b, r in zip(GGUF, report["results"]):
        assert r["generated_ids"] == golden(b, IMAGES[0])["greedy_ids"]
        assert r["runtime"] == "llama.cpp (native)" and r["decode_tok_s"]["median"] > 0 and r["roofline_tok_s"] > 0
    assert report["machine"]["device"] == "local" and report["bandwidth_bytes_s"] > 0
    assert "llama.cpp (native)" in markdown(report)


def test_bench_device_qemu_reports_no_speed():
    report = bench([GOLDENS / "bundles/gguf-q4_0"], _config(), progress=False, device=open_device("qemu-aarch64"))
    r = report["results"][0]
    assert r["generated_ids"] == golden("gguf-q4_0", IMAGES[0])["greedy_ids"]
    assert r["emulated"] and r["decode_tok_s"] is None and r["roofline_tok_s"] is None
    assert report["machine"]["emulated"] and "Emulated target" in markdown(report)


STANDIN_ADB = '''\
"""Stand-in adb for tests: the "phone" is a directory ($FAKE_PHONE standing for /) and qemu-aarch64."""
import json, os, shutil, subprocess, sys
root, args = os.environ["FAKE_PHONE"], sys.argv[1:]
serial = args[1] if args[:1] == ["-s"] else None
args = args[2:] if serial else args
with open(os.path.join(root, "adb.log"), "a") as log:
    log.write(json.dumps({"serial": serial, "args": args}) + "\\n")
PROPS = {"ro.product.model": "Stand-in 1", "ro.soc.manufacturer": "QEMU", "ro.soc.model": "aarch64",
         "ro.product.cpu.abi": "arm64-v8a", "ro.build.version.release": "15"}
here = lambda text: text.replace("/data/local/tmp", root + "/data/local/tmp")
if args[0] == "push":
    shutil.copyfile(args[1], here(args[2]))
elif args[0] == "shell" and args[1].startswith("getprop "):
    print(PROPS.get(args[1].split()[1], ""))
elif args[0] == "shell":
    cmd = here(" ".join(args[1:])).replace("./edgevlm-run", "qemu-aarch64-static ./edgevlm-run")
    done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
    print(done.stdout.replace(root + "/data/local/tmp", "/data/local/tmp"), end="")  # the phone's own paths
    print(done.stderr, end="", file=sys.stderr)
    sys.exit(done.returncode)
'''


@pytest.fixture
def fake_phone(tmp_path, monkeypatch):
    (tmp_path / "data/local/tmp").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(f"#!{sys.executable}\n{STANDIN_ADB}")
    (bin_dir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PHONE", str(tmp_path))
    return tmp_path


def _adb_log(phone: Path) -> list[dict]:
    return [json.loads(line) for line in (phone / "adb.log").read_text().splitlines()]


def test_bench_device_adb_pushes_once_and_reports_the_phone(fake_phone):
    device = open_device("adb:SERIAL123")
    bundle = GOLDENS / "bundles/gguf-q4_0"
    first = bench([bundle], _config(), progress=False, device=device)
    pushed = [e["args"][2] for e in _adb_log(fake_phone) if e["args"][0] == "push"]
    assert f"{AdbDevice.root}/edgevlm-run" in pushed and f"{AdbDevice.root}/bundles/gguf-q4_0/model-q4_0.gguf" in pushed
    assert all(e["serial"] == "SERIAL123" for e in _adb_log(fake_phone))
    r = first["results"][0]
    assert r["generated_ids"] == golden("gguf-q4_0", IMAGES[0])["greedy_ids"]
    assert r["device_bundle"] == f"{AdbDevice.root}/bundles/gguf-q4_0" and r["bundle"] == str(bundle)
    m = first["machine"]
    assert (m["model"], m["cpu"], m["arch"], m["system"]) == ("Stand-in 1", "QEMU aarch64", "arm64-v8a", "Android 15")

    (fake_phone / "adb.log").unlink()
    bench([bundle], _config(), progress=False, device=device)
    assert [e["args"][2] for e in _adb_log(fake_phone) if e["args"][0] == "push"] == [f"{AdbDevice.root}/request.json"]


def test_device_names_are_checked(monkeypatch):
    with pytest.raises(EdgeVLMError, match="unknown bench device 'phone'; known: adb, local, qemu-aarch64"):
        open_device("phone")
    with pytest.raises(EdgeVLMError, match="takes no serial"):
        open_device("local:123")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(EdgeVLMError, match="adb not found"):
        open_device("adb")
