"""The golden vectors (tests/goldens/): the committed files are consistent and small, and regenerating them
(`edgevlm goldens`) gives the same files: bytes where the export is byte-deterministic, values otherwise.

The regeneration trains the golden model (~15 s) and exports six bundles (ExecuTorch lowering is most of it:
2-4 minutes on the shared 2 cores, 119 s when measured). It is one module-scoped fixture, so `--durations`
shows its whole cost on the setup of `test_goldens_regenerate_identical`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from edgevlm.bundle.image import load_image
from edgevlm.bundle.manifest import open_bundle, sha256_file
from edgevlm.bundle.tokenizer import IMAGE_TOKEN_INDEX, TextTokenizer
from edgevlm.goldens import BUNDLES, VECTORS, write_goldens
from edgevlm.io import read_json

GOLDENS = Path(__file__).parent / "goldens"
LIMIT_BYTES = 5_000_000
# floats a runtime computed (logits, embeddings, gaps): equal between two regenerations on one machine; the
# tolerance leaves room for another CPU's kernels, never for a changed model or export
RTOL = ATOL = 1e-4
# files whose bytes differ between two runs of the same export (their vectors are compared instead)
NOT_BYTE_IDENTICAL: set[str] = set()

pytestmark = pytest.mark.timeout(1200)


def files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def committed() -> dict:
    if not (GOLDENS / VECTORS).is_file():
        pytest.fail(f"no goldens at {GOLDENS}: run `edgevlm goldens --out tests/goldens`")
    return read_json(GOLDENS / VECTORS)


def test_goldens_under_5mb(committed):
    total = sum(p.stat().st_size for p in files(GOLDENS).values())
    assert 0 < total < LIMIT_BYTES, f"tests/goldens holds {total} bytes"


def test_goldens_bundles_and_tokenizer(committed):
    """Every bundle opens with its files' sha256 checked and carries the shared tokenizer; all answer alike."""
    shared = sha256_file(GOLDENS / committed["tokenizer"])
    assert sorted({b["dir"] for b in committed["bundles"]}) == sorted(f"bundles/{f}-{q}" for f, q in BUNDLES)
    for fmt, quant in BUNDLES:
        bundle = open_bundle(GOLDENS / "bundles" / f"{fmt}-{quant}")
        assert (bundle.format, bundle.manifest["quantization"]["name"]) == (fmt, quant)
        assert sha256_file(bundle.path / "tokenizer.json") == shared
    reference = {r["image"]: r["greedy_ids"] for r in committed["reference"]}
    for b in committed["bundles"]:
        assert b["greedy_ids"] == reference[b["image"]], b["dir"]
        assert len(b["greedy_ids"]) == committed["new_tokens"] and b["min_top2_gap"] > 1.0, b["dir"]


def test_goldens_text_prompts_images(committed):
    """The tokenizer, prompt and image vectors, recomputed from the committed files by the bundle package."""
    bundle = open_bundle(GOLDENS / "bundles" / "onnx-fp32")
    tok = TextTokenizer.load(GOLDENS / committed["tokenizer"])
    for case in committed["text"]:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
        if not any(special in case["text"] for special in ("<s>", "</s>", "<pad>")):  # decoding drops those
            assert tok.decode(case["ids"]) == case["text"]
    for case in committed["prompts"]:
        assert bundle.template.prompt(case["question"]) == case["prompt"]
        assert bundle.prompt_ids(case["question"]) == case["ids"]
        assert case["ids"][case["image_index"]] == IMAGE_TOKEN_INDEX == committed["image_token_index"]
    for case in committed["images"]:
        rgb = np.asarray(load_image(GOLDENS / case["file"]))
        assert rgb.shape == (case["height"], case["width"], 3)
        resized = bundle.preprocess.resized(rgb)
        pixels = bundle.preprocess.normalize(resized)
        assert _sha(rgb) == case["rgb_sha256"]
        assert _sha(resized) == case["resized_sha256"] and _sha(pixels) == case["pixel_values_sha256"]
        assert all(resized[y, x, c] == v for y, x, c, v in case["resized_samples"])
        assert all(pixels[c, y, x] == np.float32(v) for c, y, x, v in case["pixel_values_samples"])


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    return write_goldens(tmp_path_factory.mktemp("goldens") / "goldens", progress=False)


def test_goldens_regenerate_identical(regenerated, committed):
    """Slow (2-4 min): every committed file again, byte for byte (NOT_BYTE_IDENTICAL: same vectors instead)."""
    new, old = files(regenerated), files(GOLDENS)
    assert sorted(new) == sorted(old)
    differ = [name for name in old if name not in NOT_BYTE_IDENTICAL and name != VECTORS
              and sha256_file(new[name]) != sha256_file(old[name])]
    assert not differ, f"regenerated goldens differ from the committed ones in {differ}"
    assert_close(read_json(new[VECTORS]), committed)


def assert_close(got, want, where: str = VECTORS) -> None:
    """Ints, strings, hashes and structure exactly; floats within RTOL / ATOL."""
    if isinstance(want, float) or isinstance(got, float):
        assert math.isclose(got, want, rel_tol=RTOL, abs_tol=ATOL), f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys differ"
        for k in want:
            assert_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{where}[{i}]")
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def _sha(a: np.ndarray) -> str:
    """sha256 of the array's raw bytes, C order, little-endian (as vectors.json hashes them)."""
    return hashlib.sha256(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()).hexdigest()
