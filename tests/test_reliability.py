"""Hostile inputs, each through the real command: one error line naming the file, non-zero exit, nothing lost.

docs/reliability.md is the table of these cases; each row names its test here (or in test_bundle.py /
test_cli.py, whose cases it reuses). Bundles are copies of the goldens (tests/goldens/bundles: tiny, real
engine files); images are written here with Pillow.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_errors import fails
from edgevlm.bundle.image import load_image
from edgevlm.bundle.manifest import MANIFEST, sha256_file
from edgevlm.cli import main

GOLDENS = Path(__file__).parent / "goldens"
FORMATS = {"onnx": "onnx-int4", "executorch": "executorch-int4", "gguf": "gguf-q4_0"}
WEIGHTS = {"onnx": "weights.bin", "executorch": "model.pte", "gguf": "model-q4_0.gguf"}
# two files of the bundle swapped; ExecuTorch's single program swapped with a foreign (ONNX) program instead
SWAP = {"onnx": ("vision.onnx", "decoder.onnx"), "executorch": ("model.pte", "../onnx-int4/vision.onnx"),
        "gguf": ("model-q4_0.gguf", "mmproj-q4_0.gguf")}
QUESTION = "What is in the top left?"


def golden(fmt: str, tmp_path: Path) -> Path:
    return shutil.copytree(GOLDENS / "bundles" / FORMATS[fmt], tmp_path / FORMATS[fmt])


def rehash(bundle: Path) -> None:
    """Make manifest.json agree with the files again (size, sha256): the damage then reaches the engine."""
    m = json.loads((bundle / MANIFEST).read_text())
    for name, entry in m["files"].items():
        entry.update(bytes=(bundle / name).stat().st_size, sha256=sha256_file(bundle / name))
    (bundle / MANIFEST).write_text(json.dumps(m))


def image_file(tmp_path: Path) -> Path:
    return tmp_path / "img.png" if (tmp_path / "img.png").exists() else _save(tmp_path / "img.png")


def _save(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


def run(bundle: Path, image: Path, prompt: str = QUESTION) -> list[str]:
    return ["run", "--bundle", str(bundle), "--image", str(image), "--prompt", prompt, "--max-new-tokens", "3"]


# ---- bundles: damaged weight files, per format -----------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("damage,needle", [
    (lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), "truncated or replaced"),
    (lambda f: f.write_bytes(bytes(b ^ 0x5A for b in f.read_bytes())), "sha256 differs"),
], ids=["truncated", "corrupt"])
def test_damaged_weights_per_format(fmt, damage, needle, tmp_path, capsys):
    bundle = golden(fmt, tmp_path)
    damage(bundle / WEIGHTS[fmt])
    assert needle in fails(run(bundle, image_file(tmp_path)), capsys, f"{bundle / WEIGHTS[fmt]}: ")


@pytest.mark.parametrize("fmt", FORMATS)
def test_swapped_files_with_matching_manifest_fail_in_the_engine(fmt, tmp_path, capsys):
    """Two of the bundle's files swapped and the manifest re-hashed to match: the engine refuses them, as one
    line naming the bundle, never a crash or a wrong answer."""
    bundle = golden(fmt, tmp_path)
    if fmt == "executorch":
        golden("onnx", tmp_path)  # where the foreign program comes from
    a, b = (bundle / n for n in SWAP[fmt])
    a.rename(tmp_path / "a")
    b.rename(a)
    (tmp_path / "a").rename(b)
    rehash(bundle)
    fails(run(bundle, image_file(tmp_path)), capsys, str(bundle))


def test_tokenizer_that_does_not_parse(tmp_path, capsys):
    bundle = golden("onnx", tmp_path)
    (bundle / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    rehash(bundle)
    fails(run(bundle, image_file(tmp_path)), capsys, f"{bundle / 'tokenizer.json'}: not a valid tokenizer.json")


def test_tokenizer_lacking_its_special_tokens(tmp_path, capsys):
    bundle = golden("gguf", tmp_path)
    (bundle / "tokenizer.json").write_text((bundle / "tokenizer.json").read_text().replace('"</s>"', '"</x>"'))
    rehash(bundle)
    fails(run(bundle, image_file(tmp_path)), capsys, "tokenizer lacks one of the special tokens")


# ---- images ------------------------------------------------------------------------------------------------------
def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


RGB = Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8))


def _exif_rotated() -> bytes:
    exif = RGB.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display", what a phone held upright writes
    return _encoded(RGB, "JPEG", exif=exif)


def _animated() -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in ((200, 0, 0), (0, 200, 0))]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])


GOOD_IMAGES = {
    "1x1": lambda: _encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
    "10000x10": lambda: _encoded(Image.new("RGB", (10000, 10), (9, 9, 9)), "PNG"),
    "16-bit": lambda: _encoded(Image.fromarray((np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)), "PNG"),
    "cmyk": lambda: _encoded(RGB.convert("CMYK"), "JPEG"),
    "palette-transparency": lambda: _encoded(RGB.convert("P"), "PNG", transparency=0),
    "animated-gif": _animated,
    "exif-rotated": _exif_rotated,
}
BAD_IMAGES = {
    "truncated-png": (lambda: _encoded(RGB, "PNG")[:100], "cannot read image"),
    "truncated-jpeg": (lambda: _encoded(RGB, "JPEG")[:300], "cannot read image"),
    "zero-byte": (lambda: b"", "cannot read image"),
    "decompression-bomb": (lambda: _encoded(Image.new("1", (12000, 12000)), "PNG"), "refused as a decompression bomb"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    for name, make in GOOD_IMAGES.items():
        (d / f"{name}.img").write_bytes(make())
    for name, (make, _) in BAD_IMAGES.items():
        (d / f"{name}.img").write_bytes(make())
    return d


@pytest.mark.parametrize("name", GOOD_IMAGES)
def test_odd_images_load_as_rgb(images, name):
    im = load_image(images / f"{name}.img")
    assert im.mode == "RGB" and min(im.size) >= 1


def test_exif_rotation_is_applied():
    """Decided: images are loaded upright (Pillow's exif_transpose), in training and every runtime alike."""
    d = Path(__import__("tempfile").mkdtemp())
    (d / "plain.jpg").write_bytes(_encoded(RGB, "JPEG"))
    (d / "rotated.jpg").write_bytes(_exif_rotated())
    plain, rotated = (np.asarray(load_image(d / f)) for f in ("plain.jpg", "rotated.jpg"))
    assert rotated.shape == (32, 24, 3)
    assert np.array_equal(rotated, np.rot90(plain, k=-1))


def test_16_bit_levels_scale_to_8_bits(images):
    levels = np.asarray(load_image(images / "16-bit.img"))[..., 0]
    assert levels.min() == 0 and levels.max() == 255  # not clipped to white


def test_animated_gif_is_its_first_frame(images):
    assert tuple(np.asarray(load_image(images / "animated-gif.img"))[0, 0]) == (200, 0, 0)


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_image_through_run(images, name, tmp_path, capsys):
    needle = BAD_IMAGES[name][1]
    path = images / f"{name}.img"
    fails(run(golden("onnx", tmp_path), path), capsys, f"{path}: {needle}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_odd_images_through_run(images, fmt, tmp_path, capsys):
    bundle = golden(fmt, tmp_path)
    for name in GOOD_IMAGES:
        assert main(run(bundle, images / f"{name}.img")) == 0, name
    capsys.readouterr()


def _data_with(images_dir: Path, names: list[str], out: Path) -> Path:
    (out / "images").mkdir(parents=True)
    recs = []
    for i, name in enumerate(names):
        shutil.copy(images_dir / f"{name}.img", out / "images" / f"{name}.img")
        recs.append({"id": str(i), "image": f"images/{name}.img", "kind": "x", "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": "a red circle"}]})
    (out / "data.json").write_text(json.dumps(recs))
    return out


def test_odd_images_through_eval_and_train(images, tiny_model_dir, tmp_path, capsys):
    data = _data_with(images, list(GOOD_IMAGES), tmp_path / "data")
    assert main(["eval", "--bundle", str(golden("gguf", tmp_path)), "--data", str(data)]) == 0
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "m"),
                 "--max-steps", "1", "--batch-size", "2"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("name", ["truncated-jpeg", "decompression-bomb", "missing"])
def test_bad_image_through_eval_and_train(images, name, tiny_model_dir, tmp_path, capsys):
    data = _data_with(images, ["1x1", "truncated-jpeg" if name == "missing" else name], tmp_path / "data")
    bad = data / "images" / f"{name}.img"
    if name == "missing":
        (data / "images" / "truncated-jpeg.img").rename(bad.with_name("elsewhere"))
        data.joinpath("data.json").write_text(data.joinpath("data.json").read_text().replace("truncated-jpeg", name))
    needle = "image not found" if name == "missing" else BAD_IMAGES[name][1]
    fails(["eval", "--bundle", str(golden("onnx", tmp_path)), "--data", str(data)], capsys, f"{bad}: {needle}")
    fails(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "m"),
           "--max-steps", "1"], capsys, f"{bad}: {needle}")
    assert not (tmp_path / "m").exists()


# ---- prompts, on every runtime and the PyTorch model ---------------------------------------------------------------
PROMPTS = {
    "two-image-markers": ("<image> left <image> right?", "exactly one image placeholder <image>, got 2"),
    "over-the-context": ("word " * 300, "not fit the"),
    "invalid-utf8": (b"caf\xe9?".decode("utf-8", "surrogateescape"), "the prompt is not valid UTF-8"),
    "special-token-text": ("What is </s> in the top left?", "special token text </s>"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", PROMPTS)
def test_bad_prompt_per_runtime(fmt, case, tmp_path, capsys):
    prompt, needle = PROMPTS[case]
    fails(run(golden(fmt, tmp_path), image_file(tmp_path), prompt), capsys, needle)


@pytest.mark.parametrize("case", PROMPTS)
def test_bad_prompt_pytorch(case, tiny_model_dir, tmp_path, capsys):
    prompt, needle = PROMPTS[case]
    prompt = "word " * 600 if case == "over-the-context" else prompt  # the tiny LM's context is 512
    fails(["generate", "--model", str(tiny_model_dir), "--image", str(image_file(tmp_path)), "--prompt", prompt,
           "--max-new-tokens", "2"], capsys, needle)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_prompt_is_a_question_about_the_image_alone(fmt, tmp_path, capsys):
    """Decided: an empty prompt is valid (the template puts the image before it) and answers like any other."""
    bundle = golden(fmt, tmp_path)
    assert main(run(bundle, image_file(tmp_path), "")) == 0
    assert "error" not in capsys.readouterr().err


def test_context_fills_up_to_the_limit_then_stops(tiny_model):
    """The PyTorch model generates until its context is full, like the runtimes, instead of running past it."""
    import torch

    limit = tiny_model.cfg.llm.max_position_embeddings
    emb = tiny_model.encode_image(tiny_model.pixel_values(np.zeros((8, 8, 3), np.uint8)))
    ids = tiny_model.prompt_ids("")
    filler = [tiny_model.tokenizer.encode(" a")[0]] * (limit - len(ids) - emb.shape[1] - 2)
    with torch.no_grad():
        out = tiny_model.generate(emb, ids + filler, max_new_tokens=50)
    assert len(out) <= 3  # positions left: 3 (generation stops at EOS earlier)


# ---- data sets ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,needle", [
    ('{"image": "a.png"}', "expected a JSON list"),
    ('[{"image": 3, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]',
     "record 0: 'image' must be a relative path string"),
    ('[{"image": "a.png", "conversations": [{"from": "human", "value": 1}, {"from": "gpt", "value": "a"}]}]',
     "record 0: turn values must be strings"),
    ('[{"image": "a.png", "conversations": [{"from": "gpt", "value": "q"}, {"from": "human", "value": "a"}]}]',
     "record 0: turns must alternate human/gpt"),
    ("[]", "no question/answer pairs"),
    ("[" * 100000, "not valid JSON"),
], ids=["not-a-list", "image-not-a-string", "value-not-a-string", "wrong-turn-order", "empty", "nested-deeply"])
def test_malformed_data_json(raw, needle, tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data.json").write_text(raw)
    fails(["eval", "--bundle", str(golden("onnx", tmp_path)), "--data", str(tmp_path / "d")], capsys,
          f"{tmp_path / 'd' / 'data.json'}: {needle}")


def test_answers_outside_the_shapes_vocabulary_train(images, tiny_model_dir, tmp_path, capsys):
    """Byte-level BPE: any text encodes (as bytes when no merge covers it), so such answers train and round-trip."""
    from edgevlm.load import load_model

    data = _data_with(images, ["1x1", "cmyk"], tmp_path / "data")
    data.joinpath("data.json").write_text(data.joinpath("data.json").read_text().replace("a red circle",
                                                                                         "ein Einhorn 🦄 独角兽"))
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "m"),
                 "--max-steps", "1"]) == 0
    tok = load_model(tmp_path / "m").tokenizer
    assert tok.decode(tok.encode("ein Einhorn 🦄 独角兽")) == "ein Einhorn 🦄 独角兽"
    capsys.readouterr()
