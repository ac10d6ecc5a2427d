"""The CLI: every command's bad input is one line naming the file, a non-zero exit, and no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edgevlm.cli import main
from cli_errors import fails as _fails


@pytest.fixture
def broken(tmp_path, tiny_model_dir, shapes_train):
    """Copies of a good model dir and data dir, to break one file each."""
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    data = shutil.copytree(shapes_train, tmp_path / "data")
    return model, data


def test_unknown_preset(tmp_path, capsys):
    err = _fails(["create", "--preset", "mobilevlm-huge", "--out", str(tmp_path / "m")], capsys, "mobilevlm-huge")
    assert "known: " in err and "mobilevlm-v2-tiny" in err
    assert not (tmp_path / "m").exists()


def test_missing_model_dir(tmp_path, shapes_eval, capsys):
    missing = tmp_path / "nope"
    _fails(["eval", "--model", str(missing), "--data", str(shapes_eval)], capsys, f"{missing}: model directory not found")
    _fails(["info", "--model", str(missing)], capsys, str(missing))


def test_missing_data_dir(tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "nodata"
    _fails(["train", "--model", str(tiny_model_dir), "--data", str(missing), "--out", str(tmp_path / "o")], capsys,
           f"{missing}: data directory not found")


def test_corrupt_safetensors(broken, shapes_eval, capsys):
    model, _ = broken
    (model / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    _fails(["eval", "--model", str(model), "--data", str(shapes_eval)], capsys,
           f"{model / 'model.safetensors'}: not a valid safetensors file")


def test_corrupt_config_and_tokenizer(broken, shapes_eval, capsys):
    model, _ = broken
    (model / "tokenizer.json").write_text("{not json")
    _fails(["eval", "--model", str(model), "--data", str(shapes_eval)], capsys, str(model / "tokenizer.json"))
    (model / "config.json").write_text(json.dumps({"family": "x"}))
    _fails(["eval", "--model", str(model), "--data", str(shapes_eval)], capsys, "invalid config")


def test_malformed_data_json(broken, tmp_path, capsys):
    model, data = broken
    (data / "data.json").write_text('[{"image": "images/000000.png", "conversations": [')
    _fails(["train", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o")], capsys,
           f"{data / 'data.json'}: not valid JSON")
    (data / "data.json").write_text('[{"image": "images/000000.png"}]')
    _fails(["eval", "--model", str(model), "--data", str(data)], capsys, "record 0 lacks")


def test_unreadable_image(broken, tmp_path, capsys):
    model, data = broken
    image = data / "images" / "000001.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _fails(["train", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o")], capsys,
           f"{image}: cannot read image")
    _fails(["generate", "--model", str(model), "--image", str(image), "--prompt", "hi"], capsys, str(image))
    _fails(["generate", "--model", str(model), "--image", str(tmp_path / "x.png"), "--prompt", "hi"], capsys,
           "image not found")


def test_resume_without_checkpoint(tiny_model_dir, shapes_train, tmp_path, capsys):
    _fails(["train", "--model", str(tiny_model_dir), "--data", str(shapes_train), "--out", str(tmp_path / "o"),
            "--resume"], capsys, "no checkpoint to resume from")


def test_console_script_prints_no_traceback(tmp_path):
    exe = shutil.which("edgevlm") or f"{sys.executable} -m edgevlm.cli"
    r = subprocess.run([*exe.split(), "eval", "--model", str(tmp_path / "none"), "--data", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"edgevlm eval: error: {tmp_path / 'none'}: model directory not found"]


def test_data_shapes_dense(tmp_path, capsys):
    """`--dense` writes a training set with more questions on the same images, and refuses an eval split."""
    base = ["data", "shapes", "--images", "4", "--seed", "2"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "dense"), "--dense"]) == 0
    plain, dense = (json.loads((tmp_path / d / "data.json").read_text()) for d in ("plain", "dense"))
    assert len(dense) > len(plain) and all(r in dense for r in plain)
    assert json.loads((tmp_path / "dense" / "scenes.json").read_text())["dense"] is True
    capsys.readouterr()
    _fails([*base, "--out", str(tmp_path / "e"), "--split", "eval", "--dense"], capsys, "evaluation data")
    assert not (tmp_path / "e").exists()


def test_data_shapes_and_generate(tmp_path, tiny_model_dir, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path / "d"), "--images", "3", "--seed", "1", "--split",
                 "eval"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    image = tmp_path / "d/images/000000.png"
    assert main(["generate", "--model", str(tiny_model_dir), "--image", str(image),
                 "--prompt", "What is in the top left?", "--max-new-tokens", "4"]) == 0
    from edgevlm.bundle.image import load_image
    from edgevlm.load import load_model

    expected = load_model(tiny_model_dir).answer(load_image(image), "What is in the top left?", max_new_tokens=4)
    assert capsys.readouterr().out == expected + "\n"  # the model's own greedy answer, printed as is
    data = json.loads((tmp_path / "d" / "data.json").read_text())
    assert len({r["id"] for r in data}) == 3 and all((tmp_path / "d" / r["image"]).is_file() for r in data)
