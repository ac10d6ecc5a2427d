"""Training: exact resume, loss falls through the CLI, stages train what they should, LoRA end to end."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from edgevlm.cli import main
from edgevlm.load import load_model
from edgevlm.models.vlm import EdgeVLM
from edgevlm.train.config import TrainConfig
from edgevlm.train.trainer import Trainer, checkpoint_root, train


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("stage,extra", [("finetune", {"train_vision": True}), ("vision", {}),
                                         ("vision", {"vision_window": 10})])
def test_resume_equals_uninterrupted(tiny_model_dir, shapes_train, tmp_path, monkeypatch, stage, extra):
    cfg = TrainConfig(stage=stage, max_steps=6, batch_size=4, lr=1e-3, save_every=3, **extra)
    whole = train(tiny_model_dir, shapes_train, tmp_path / "whole", cfg, progress=False)

    previous = shutil.copytree(tiny_model_dir, tmp_path / "resumed")  # an earlier model dir at --out
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    real_checkpoint = Trainer._checkpoint

    def checkpoint_then_die(self, *a, **kw):
        real_checkpoint(self, *a, **kw)
        raise Interrupted  # the process is killed right after its first checkpoint

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_die)
    with pytest.raises(Interrupted):
        train(tiny_model_dir, shapes_train, tmp_path / "resumed", cfg, progress=False)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before  # previous output intact
    assert (checkpoint_root(tmp_path / "resumed") / "step-0000003").is_dir()
    monkeypatch.setattr(Trainer, "_checkpoint", real_checkpoint)

    resumed = train(tiny_model_dir, shapes_train, tmp_path / "resumed", cfg, resume=True, progress=False)
    assert resumed.losses == whole.losses
    a = EdgeVLM.from_pretrained(whole.out).state_dict()
    b = EdgeVLM.from_pretrained(resumed.out).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not checkpoint_root(tmp_path / "resumed").exists()


def test_stages_train_only_their_parts(tiny_model_dir, shapes_train):
    model = EdgeVLM.from_pretrained(tiny_model_dir)
    t = Trainer(model, "unused", TrainConfig(stage="pretrain", max_steps=1), progress=False)
    assert t.items is None and t.features is None  # construction reads nothing
    t.setup(shapes_train)
    trainable = {n.split(".")[0] for n, p in t.model.named_parameters() if p.requires_grad}
    assert trainable == {"projector"} and t.features is not None  # frozen tower: features cached once
    t = Trainer(EdgeVLM.from_pretrained(tiny_model_dir), "unused",
                TrainConfig(stage="finetune", method="lora", max_steps=1), progress=False).setup(shapes_train)
    names = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert all(n.startswith("projector") or "lora_" in n for n in names) and any("lora_" in n for n in names)
    t = Trainer(EdgeVLM.from_pretrained(tiny_model_dir), "unused",
                TrainConfig(stage="finetune", freeze_projector=True, max_steps=1), progress=False)
    t.setup(shapes_train)
    assert {n.split(".")[0] for n, p in t.model.named_parameters() if p.requires_grad} == {"llm"}
    assert t.features.shape[1:] == (144, t.model.cfg.llm.hidden_size)  # image embeddings cached once


def test_vision_warmup_phases_share_their_head(tiny_model_dir, shapes_train, tmp_path):
    windows = train(tiny_model_dir, shapes_train, tmp_path / "w",
                    TrainConfig(stage="vision", vision_window=10, max_steps=2, batch_size=4), progress=False)
    assert (windows.out / "vision_head.safetensors").is_file()
    model = EdgeVLM.from_pretrained(windows.out)  # the head is not part of the model
    t = Trainer(model, tmp_path / "f", TrainConfig(stage="vision", max_steps=1), progress=False)
    t.setup(shapes_train, head_from=windows.out)
    saved = load_file(windows.out / "vision_head.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in t.head.state_dict().items())


def test_cli_train_then_eval_loss_falls(tiny_model_dir, shapes_train, shapes_eval, tmp_path, capsys):
    out = tmp_path / "trained"
    rc = main(["train", "--model", str(tiny_model_dir), "--data", str(shapes_train), "--out", str(out),
               "--stage", "finetune", "--epochs", "6", "--batch-size", "4", "--lr", "3e-3"])
    assert rc == 0
    losses = json.loads((out / "train_log.json").read_text())["losses"]
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    rc = main(["eval", "--model", str(out), "--data", str(shapes_eval), "--json", str(tmp_path / "eval.json")])
    assert rc == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n"] == len(json.loads((shapes_eval / "data.json").read_text()))
    assert set(result["per_kind"]) <= {"what", "color", "count", "digit", "where", "exists", "caption"}
    assert "| **overall** |" in capsys.readouterr().out



@pytest.mark.parametrize("keep", [False, True])
def test_lora_training_merges_unless_kept(tiny_model_dir, shapes_train, tmp_path, keep):
    cfg = TrainConfig(stage="finetune", method="lora", lora_r=4, keep_adapter=keep, max_steps=2, batch_size=4)
    out = train(tiny_model_dir, shapes_train, tmp_path / "m", cfg, progress=False).out
    assert (out / "adapter").is_dir() == keep
    model = load_model(out)
    assert any("lora_" in n for n, _ in model.named_parameters()) == keep


def test_window_encoding_equals_the_window_of_the_full_patch_grid():
    """The warm-up embeds only a window's pixels: the same tokens as slicing the window out of the whole
    image's patch embedding, position embeddings of the window's own grid cells added."""
    from edgevlm.models.factory import create
    from edgevlm.train.warmup import encode_windows, window_boxes

    torch.manual_seed(0)
    model = create("mobilevlm-v2-tiny", seed=0).eval()
    images = torch.randn(2, 3, 336, 336)
    windows, w = [(0, 0), (7, 14)], 10
    boxes, side = window_boxes(model, windows, w)
    crops = torch.stack([im[:, t : t + side, l : l + side] for im, (t, l) in zip(images, boxes)])
    tower, grid = model.vision.tower, model.cfg.vision.grid
    emb = tower.embeddings
    full = emb.patch_embedding(images)  # (2, D, 24, 24)
    pos = emb.position_embedding.weight[1:].reshape(grid, grid, -1)
    rows = [torch.cat([(emb.class_embedding + emb.position_embedding.weight[0])[None],
                       full[b, :, r : r + w, c : c + w].flatten(1).T + pos[r : r + w, c : c + w].reshape(w * w, -1)])
            for b, (r, c) in enumerate(windows)]
    h = tower.pre_layrnorm(torch.stack(rows))
    for layer in tower.encoder.layers[: model.cfg.vision.layers_used]:
        h = layer(h, None)
    with torch.no_grad():
        torch.testing.assert_close(encode_windows(model, crops, windows, w), model.projector(h[:, 1:]))


# `edgevlm train`'s flags, as they have always been spelled: field -> (argv, the value TrainConfig gets)
TRAIN_FLAGS = {
    "stage": (["--stage", "vision"], "vision"), "method": (["--method", "lora"], "lora"),
    "epochs": (["--epochs", "2.5"], 2.5), "max_steps": (["--max-steps", "7"], 7),
    "batch_size": (["--batch-size", "3"], 3), "lr": (["--lr", "0.5"], 0.5),
    "warmup_ratio": (["--warmup-ratio", "0.1"], 0.1), "weight_decay": (["--weight-decay", "0.2"], 0.2),
    "train_vision": (["--train-vision"], True), "freeze_projector": (["--freeze-projector"], True),
    "vision_window": (["--vision-window", "10"], 10), "lora_r": (["--lora-r", "4"], 4),
    "lora_alpha": (["--lora-alpha", "8"], 8), "keep_adapter": (["--keep-adapter"], True),
    "experts": (["--experts", "8"], 8), "top_k": (["--top-k", "1"], 1),
    "aux_loss_coef": (["--aux-loss", "0.5"], 0.5), "save_every": (["--save-every", "5"], 5),
    "precision": (["--precision", "bf16"], "bf16"), "seed": (["--seed", "3"], 3),
    "nproc": (["--nproc", "2"], 2), "parallel": (["--parallel", "fsdp"], "fsdp"),
}


def test_train_flags_are_the_config_fields():
    """The train command is generated from TrainConfig: every field has a flag with the field's default, and
    each flag (old names kept: --aux-loss) sets its field and nothing else."""
    import argparse
    from dataclasses import fields

    from edgevlm.cli import _add_train, _train_config

    parser = argparse.ArgumentParser(allow_abbrev=False)  # exact names: --aux-loss is no prefix of a new flag
    _add_train(parser)
    base = ["--model", "m", "--data", "d", "--out", "o"]
    assert {f.name for f in fields(TrainConfig)} == set(TRAIN_FLAGS)  # a new field: add its flag above
    assert _train_config(parser.parse_args(base)) == TrainConfig()
    for name, (argv, value) in TRAIN_FLAGS.items():
        got = _train_config(parser.parse_args(base + argv)).to_dict()
        assert got == {**TrainConfig().to_dict(), name: value}, name
    for bad in (["--precision", "fp16"], ["--stage", "warmup"], ["--method", "qlora"], ["--experts", "two"]):
        with pytest.raises(SystemExit):
            parser.parse_args(base + bad)
