"""The bundle contract (docs/bundle-spec.md): manifests are checked — version, paths, schema, then every listed
file's size and sha256 — before a runtime sees anything, and each problem is one line naming the manifest."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from edgevlm.bundle.image import ImagePreprocess
from edgevlm.bundle.manifest import MANIFEST, SPEC_VERSION, open_bundle
from edgevlm.errors import EdgeVLMError
from edgevlm.export import ExportConfig, export
from edgevlm.models.factory import create
from cli_errors import fails


@pytest.fixture(scope="session")
def onnx_bundle(tmp_path_factory):
    """A real (tiny, random-weight) ONNX bundle, exported once; tests damage copies of it."""
    out = tmp_path_factory.mktemp("bundles") / "onnx-fp32"
    export(create("mobilevlm-v2-tiny", seed=0), ExportConfig("onnx", "fp32", verify_limit=0), out, progress=False)
    return out


@pytest.fixture
def bundle(tmp_path, onnx_bundle):
    return shutil.copytree(onnx_bundle, tmp_path / "bundle")


def edit(bundle, change) -> None:
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_manifest_round_trip(bundle, tiny_model):
    b = open_bundle(bundle)
    assert b.manifest["spec_version"] == SPEC_VERSION
    assert b.max_context == tiny_model.cfg.llm.max_position_embeddings and b.image_tokens == 144
    question = "<image>\nWhat is in the top left?"
    assert b.prompt_ids(question) == tiny_model.prompt_ids(question)
    assert b.preprocess == tiny_model.preprocess


def test_manifests_written_before_the_spec_still_open(bundle):
    edit(bundle, lambda m: m.pop("spec_version"))
    assert open_bundle(bundle).format == "onnx"


@pytest.mark.parametrize("damage, needle", [
    (lambda f: f.write_bytes(f.read_bytes()[:-1]), "truncated or replaced"),
    (lambda f: f.write_bytes(bytes(len(f.read_bytes()))), "sha256 differs"),
    (lambda f: f.unlink(), "missing"),
])
def test_damaged_file_is_named(bundle, damage, needle):
    damage(bundle / "tokenizer.json")
    with pytest.raises(EdgeVLMError, match=needle) as e:
        open_bundle(bundle)
    assert str(bundle / "tokenizer.json") in str(e.value)


def _entry(m):
    return next(iter(m["files"].values()))


def _symlink_out(m, bundle):
    outside = bundle.parent / "outside.bin"
    outside.write_bytes(b"secret")
    os.symlink(outside, bundle / "link.bin")
    m["files"]["link.bin"] = {"sha256": "0" * 64, "bytes": 6}


def _symlinked_dir_out(m, bundle):
    (bundle.parent / "elsewhere").mkdir()
    (bundle.parent / "elsewhere" / "w.bin").write_bytes(b"x")
    os.symlink(bundle.parent / "elsewhere", bundle / "sub")
    m["files"]["sub/w.bin"] = {"sha256": "0" * 64, "bytes": 1}


BAD_MANIFESTS = {
    # name: (change(manifest, bundle dir), what the error says)
    "path-traversal": (lambda m, b: m["files"].update({"../outside.bin": _entry(m)}), "leaves the bundle"),
    "deep-traversal": (lambda m, b: m["files"].update({"a/../../x": _entry(m)}), "leaves the bundle"),
    "absolute-path": (lambda m, b: m["files"].update({"/etc/hostname": _entry(m)}), "absolute path"),
    "windows-drive": (lambda m, b: m["files"].update({"C:/x.bin": _entry(m)}), "absolute path"),
    "backslash": (lambda m, b: m["files"].update({"..\\x.bin": _entry(m)}), "not a relative path"),
    "empty-segment": (lambda m, b: m["files"].update({"a//b.bin": _entry(m)}), "not normalized"),
    "symlink-escape": (_symlink_out, "outside the bundle"),
    "symlinked-dir-escape": (_symlinked_dir_out, "outside the bundle"),
    "missing-format": (lambda m, b: m.pop("format"), "'format' is a required property"),
    "missing-files": (lambda m, b: m.pop("files"), "'files' is a required property"),
    "missing-eos": (lambda m, b: m["prompt"].pop("eos_id"), "prompt: 'eos_id' is a required property"),
    "missing-image-size": (lambda m, b: m["image"].pop("size"), "image: 'size' is a required property"),
    "missing-template-field": (lambda m, b: m["prompt"]["template"].pop("assistant"), "'assistant' is a required"),
    "missing-kv-cache": (lambda m, b: m["runtime"].pop("kv_cache"), "runtime: 'kv_cache' is a required property"),
    "tokenizer-not-listed": (lambda m, b: m["files"].pop("tokenizer.json"), "'tokenizer.json' is a required property"),
    "max-context-string": (lambda m, b: m.update(max_context="512"), "max_context: '512' is not of type 'integer'"),
    "add-bos-string": (lambda m, b: m["prompt"].update(add_bos="yes"), "prompt.add_bos: 'yes' is not of type 'boolean'"),
    "mean-two-values": (lambda m, b: m["image"].update(mean=[0.5, 0.5]), "image.mean"),
    "std-zero": (lambda m, b: m["image"].update(std=[0.5, 0.0, 0.5]), "image.std.1"),
    "unknown-resize": (lambda m, b: m["image"].update(resize="lanczos"), "image.resize: 'lanczos' is not one of"),
    "bad-sha256": (lambda m, b: _entry(m).update(sha256="xyz"), "sha256: 'xyz' does not match"),
    "negative-bytes": (lambda m, b: _entry(m).update(bytes=-1), "bytes: -1 is less than the minimum"),
    "unknown-format": (lambda m, b: m.update(format="tflite"), "format: 'tflite' is not one of"),
    "unknown-spec-major": (lambda m, b: m.update(spec_version="2.0"), "spec_version '2.0' is not one this edgevlm reads"),
    "spec-version-number": (lambda m, b: m.update(spec_version=1), "spec_version 1 is not one this edgevlm reads"),
    "extra-top-level-key": (lambda m, b: m.update(surprise=1), "('surprise' was unexpected)"),
    "extra-key-in-image": (lambda m, b: m["image"].update(crop=True), "image: Additional properties are not allowed"),
    "extra-key-in-runtime": (lambda m, b: m["runtime"].update(exec="rm"), "runtime: Additional properties are not allowed"),
    "extra-key-in-file-entry": (lambda m, b: _entry(m).update(url="x"), "Additional properties are not allowed"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest_is_one_line_naming_the_manifest(bundle, case, capsys):
    change, needle = BAD_MANIFESTS[case]
    edit(bundle, lambda m: change(m, bundle))
    with pytest.raises(EdgeVLMError) as e:
        open_bundle(bundle)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(bundle / MANIFEST) + ": "), message
    assert needle in message, message
    # and through the CLI a user runs: one line, non-zero exit, no traceback
    image = bundle.parent / "image.png"
    Image.new("RGB", (8, 8)).save(image)
    fails(["run", "--bundle", str(bundle), "--image", str(image), "--prompt", "hi"], capsys, needle)


@pytest.mark.parametrize("raw, needle", [
    ("[1, 2]", "the top level is not a JSON object"),
    ("{\"format\": ", "not valid JSON"),
    ("", "not valid JSON"),
])
def test_manifest_that_is_not_a_manifest(bundle, raw, needle):
    (bundle / MANIFEST).write_text(raw)
    with pytest.raises(EdgeVLMError, match=needle):
        open_bundle(bundle)


def test_manifest_symlinked_from_outside(bundle):
    real = bundle.parent / "elsewhere.json"
    (bundle / MANIFEST).rename(real)
    os.symlink(real, bundle / MANIFEST)
    with pytest.raises(EdgeVLMError, match="outside the bundle"):
        open_bundle(bundle)


# ---- the spec's image arithmetic, written out from docs/bundle-spec.md section 4, against Pillow ------------------
def spec_resize_pass(levels: np.ndarray, out: int) -> np.ndarray:
    """One pass of section 4 along axis 0 of an (n, m, 3) uint8 array, integer arithmetic as the spec says."""
    n = levels.shape[0]
    scale = n / out
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale

    def cubic(x: float, a: float = -0.5) -> float:
        x = abs(x)
        if x < 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        return (((x - 5) * x + 8) * x - 4) * a if x < 2 else 0.0

    rows = []
    for i in range(out):
        center = (i + 0.5) * scale
        xmin = max(0, int(center - support + 0.5))
        count = min(n, int(center + support + 0.5)) - xmin
        w = [cubic((j + xmin - center + 0.5) / filterscale) for j in range(count)]
        total = sum(w)
        w = [v / total for v in w] if total != 0 else w
        k = np.array([int(v * (1 << 22) + (0.5 if v >= 0 else -0.5)) for v in w], dtype=np.int64)
        acc = (1 << 21) + np.tensordot(k, levels[xmin:xmin + count].astype(np.int64), axes=1)
        rows.append(np.clip(acc >> 22, 0, 255))
    return np.stack(rows).astype(np.uint8)


@pytest.mark.parametrize("width, height", [(37, 23), (517, 389), (336, 100), (13, 336), (700, 701)])
def test_spec_resize_arithmetic_equals_pillow(width, height):
    rng = np.random.default_rng(width * height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pre = ImagePreprocess(336, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    horizontal = spec_resize_pass(image.transpose(1, 0, 2), 336).transpose(1, 0, 2)  # W → S, 8-bit result
    both = spec_resize_pass(horizontal, 336)  # then H → S
    np.testing.assert_array_equal(both, pre.resized(image))
    levels = both.astype(np.float32) * np.float32(pre.rescale)
    normalized = (levels - np.float32(pre.mean)) / np.float32(pre.std)  # float32 throughout
    np.testing.assert_array_equal(normalized.transpose(2, 0, 1), pre(image))
