"""Every command that writes: a missing input, an unwritable --out, an --out that already holds something.

An existing --out is replaced only when it is an edgevlm output of the command's kind (edgevlm.io.check_out),
or with --force; a user's directory (a thesis.txt) or a plain file survives every refused command byte for
byte. Also the trainer's checkpoints on --resume: corrupt, mismatched, from another config; a damaged LoRA dir.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_errors import fails
from edgevlm.cli import main

GOLDEN_BUNDLE = Path(__file__).parent / "goldens" / "bundles" / "onnx-int4"
GOLDEN_IMAGE = Path(__file__).parent / "goldens" / "images" / "upscale-37x23.png"


@pytest.fixture
def upstream(tmp_path) -> Path:
    d = tmp_path / "upstream"
    d.mkdir()
    return d


def writers(model: Path, data: Path, upstream: Path) -> dict[str, list[str]]:
    """Each writing command's argv, without --out (appended by the tests)."""
    return {
        "data": ["data", "shapes", "--images", "2"],
        "create": ["create", "--preset", "mobilevlm-v2-tiny"],
        "train": ["train", "--model", str(model), "--data", str(data), "--max-steps", "1"],
        "export": ["export", "--model", str(model), "--format", "onnx", "--quant", "fp32", "--verify-limit", "0"],
        "convert": ["convert", str(upstream), "--from", "mobilevlm"],
        "goldens": ["goldens"],
    }


COMMANDS = ["data", "create", "train", "export", "convert", "goldens"]


def _user_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.txt").write_text("four years of work")
    return path


@pytest.mark.parametrize("cmd", COMMANDS)
def test_out_holding_a_users_directory_is_refused(cmd, tiny_model_dir, shapes_eval, upstream, tmp_path, capsys):
    out = _user_dir(tmp_path / "mine")
    argv = writers(tiny_model_dir, shapes_eval, upstream)[cmd] + ["--out", str(out)]
    fails(argv, capsys, f"{out}: --out is a directory that is not an edgevlm")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"]
    assert (out / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["mine", "upstream"])  # no temporaries left


@pytest.mark.parametrize("cmd", COMMANDS)
def test_out_that_is_a_plain_file_is_refused(cmd, tiny_model_dir, shapes_eval, upstream, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    fails(writers(tiny_model_dir, shapes_eval, upstream)[cmd] + ["--out", str(out)], capsys,
          f"{out}: --out is a file that is not an edgevlm")
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_unwritable_out(cmd, tiny_model_dir, shapes_eval, upstream, tmp_path, capsys):
    """Under a plain file: no user, root included, can create it."""
    (tmp_path / "file").write_text("x")
    fails(writers(tiny_model_dir, shapes_eval, upstream)[cmd] + ["--out", str(tmp_path / "file" / "out")], capsys,
          "cannot write here: a parent of --out is a file")


@pytest.mark.parametrize("flag", ["--json", "--md", "--plot"])
def test_report_file_outputs_refuse_a_directory(flag, tmp_path, capsys):
    target = _user_dir(tmp_path / "mine")
    argv = ["bench", str(GOLDEN_BUNDLE), "--image", str(GOLDEN_IMAGE), "--runs", "1", "--rounds", "1",
            "--new-tokens", "2", flag, str(target)]
    fails(argv, capsys, f"{target}: is a directory")
    assert sorted(p.name for p in target.iterdir()) == ["thesis.txt"]


def test_eval_json_into_a_directory_is_refused(tmp_path, shapes_eval, capsys):
    target = _user_dir(tmp_path / "mine")
    fails(["eval", "--bundle", str(GOLDEN_BUNDLE), "--data", str(shapes_eval), "--limit", "1", "--json", str(target)],
          capsys, f"{target}: is a directory")


def test_same_kind_is_replaced_and_force_replaces_anything(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["create", "--preset", "mobilevlm-v2-tiny", "--out", str(out), "--seed", "1"]) == 0
    first = (out / "model.safetensors").read_bytes()
    assert main(["create", "--preset", "mobilevlm-v2-tiny", "--out", str(out), "--seed", "2"]) == 0  # a model dir
    assert (out / "model.safetensors").read_bytes() != first
    mine = _user_dir(tmp_path / "mine")
    assert main(["create", "--preset", "mobilevlm-v2-tiny", "--out", str(mine), "--force"]) == 0
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "shapes", "--images", "1", "--out", str(empty)]) == 0  # an empty dir is free to use
    capsys.readouterr()


def test_quickstart_refuses_a_users_directory_in_its_way(tmp_path, capsys):
    _user_dir(tmp_path / "qs" / "data" / "train")
    fails(["quickstart", "--out", str(tmp_path / "qs")], capsys, "is a directory that is not an edgevlm data")
    assert (tmp_path / "qs" / "data" / "train" / "thesis.txt").read_text() == "four years of work"
    fails(["quickstart", "--out", str(tmp_path / "qs2"), "--threads", "0"], capsys, "--threads must be >= 1, got 0")
    assert not (tmp_path / "qs2").exists()


@pytest.mark.parametrize("argv,needle", [
    (["generate", "--model", "{missing}", "--image", str(GOLDEN_IMAGE), "--prompt", "q"], "model directory not found"),
    (["export", "--model", "{missing}", "--format", "onnx", "--quant", "fp32", "--out", "{tmp}/b"],
     "model directory not found"),
    (["run", "--bundle", "{missing}", "--image", str(GOLDEN_IMAGE), "--prompt", "q"], "bundle directory not found"),
    (["run", "--bundle", str(GOLDEN_BUNDLE), "--image", "{missing}", "--prompt", "q"], "image not found"),
    (["bench", "{missing}", "--runs", "1"], "bundle directory not found"),
    (["convert", "{missing}", "--from", "mobilevlm", "--out", "{tmp}/m"], "checkpoint directory not found"),
    (["eval", "--bundle", str(GOLDEN_BUNDLE), "--data", "{missing}"], "data directory not found"),
    (["info", "--model", "{missing}"], "model directory not found"),
], ids=["generate", "export", "run-bundle", "run-image", "bench", "convert", "eval", "info"])
def test_missing_input_path(argv, needle, tmp_path, capsys):
    missing = tmp_path / "missing"
    argv = [a.replace("{missing}", str(missing)).replace("{tmp}", str(tmp_path)) for a in argv]
    fails(argv, capsys, f"{missing}: {needle}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---- checkpoints and --resume -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpointed(tiny_model_dir, shapes_train, tmp_path_factory) -> Path:
    """A training run's --out whose checkpoint dir holds step 2 (of 4): the run 'died' after it."""
    from edgevlm.train.config import TrainConfig
    from edgevlm.train.trainer import Trainer, checkpoint_root, train

    out = tmp_path_factory.mktemp("ckpt") / "out"

    class Died(Exception):
        pass

    real = Trainer._checkpoint

    def then_die(self, *a, **kw):
        real(self, *a, **kw)
        raise Died

    Trainer._checkpoint = then_die
    try:
        with pytest.raises(Died):
            train(tiny_model_dir, shapes_train, out, TrainConfig(max_steps=4, save_every=2, batch_size=4),
                  progress=False)
    finally:
        Trainer._checkpoint = real
    assert (checkpoint_root(out) / "step-0000002").is_dir()
    return out


def _resume(checkpointed: Path, tmp_path: Path, damage, model: Path, data: Path, extra=()) -> tuple[list, Path]:
    out = tmp_path / "out"
    ck = shutil.copytree(checkpointed.with_name("out.checkpoints"), tmp_path / "out.checkpoints") / "step-0000002"
    damage(ck)
    return ["train", "--model", str(model), "--data", str(data), "--out", str(out), "--max-steps", "4",
            "--save-every", "2", "--batch-size", "4", "--resume", *extra], ck


@pytest.mark.parametrize("damage,file,needle", [
    (lambda ck: (ck / "trainer.json").write_text('{"step": 2, "loss'), "trainer.json", "not valid JSON"),
    (lambda ck: (ck / "trainer.json").write_text('{"step": "two"}'), "trainer.json", "--resume: not a trainer checkpoint"),
    (lambda ck: (ck / "optimizer.pt").write_bytes((ck / "optimizer.pt").read_bytes()[:100]), "optimizer.pt",
     "--resume: unreadable or mismatched optimizer state"),
    (lambda ck: __import__("torch").save({"optimizer": {"state": {}, "param_groups": []}, "scheduler": {},
                                          "rng": __import__("torch").get_rng_state()}, ck / "optimizer.pt"),
     "optimizer.pt", "--resume: unreadable or mismatched optimizer state"),
    (lambda ck: (ck / "weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"),
     "weights.safetensors", "not a valid safetensors file"),
], ids=["trainer-json-corrupt", "trainer-json-mistyped", "optimizer-truncated", "optimizer-mismatched",
        "weights-corrupt"])
def test_resume_from_a_damaged_checkpoint(checkpointed, damage, file, needle, tiny_model_dir, shapes_train, tmp_path,
                                          capsys):
    argv, ck = _resume(checkpointed, tmp_path, damage, tiny_model_dir, shapes_train)
    fails(argv, capsys, f"{ck / file}: {needle}")
    assert not (tmp_path / "out").exists()


def test_resume_with_a_different_config(checkpointed, tiny_model_dir, shapes_train, tmp_path, capsys):
    argv, ck = _resume(checkpointed, tmp_path, lambda ck: None, tiny_model_dir, shapes_train, ["--lr", "0.5"])
    fails(argv, capsys, f"{ck}: --resume: the checkpoint was made with a different training config")


def test_damaged_lora_adapter_dir(tiny_model_dir, shapes_eval, tmp_path, capsys):
    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (model / "adapter").mkdir()
    (model / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": "eight"')
    fails(["eval", "--model", str(model), "--data", str(shapes_eval), "--limit", "1"], capsys,
          f"{model / 'adapter'}: not a loadable LoRA adapter")


def test_failed_train_leaves_the_previous_model_dir(tiny_model_dir, shapes_train, tmp_path, capsys):
    """A model dir at --out survives a train that fails (here on a corrupt data set) byte for byte."""
    out = shutil.copytree(tiny_model_dir, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    data = shutil.copytree(shapes_train, tmp_path / "d")
    (data / "data.json").write_text(json.dumps([{"image": "images/none.png", "conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]))
    fails(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--max-steps", "1"],
          capsys, "image not found")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
