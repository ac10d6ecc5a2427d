"""MoE-LLaVA: upcycling keeps the dense outputs, routing math, MoE-tuning end to end, the upstream layout."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from edgevlm.cli import main
from edgevlm.config import LLMConfig, MoEConfig
from edgevlm.models.llm import build_llm
from edgevlm.models.moe import aux_loss, moe_layers, moe_modules, route, upcycle
from edgevlm.models.vlm import EdgeVLM
from edgevlm.train.config import TrainConfig
from edgevlm.train.trainer import Trainer, checkpoint_root, train


def tiny_llm(arch: str, layers: int = 4):
    torch.manual_seed(0)
    return build_llm(LLMConfig(arch=arch, vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=layers,
                               num_heads=4, num_kv_heads=2, max_position_embeddings=64)).eval()


@pytest.mark.parametrize("arch", ["llama", "stablelm"])
def test_upcycled_model_equals_dense(arch):
    dense = tiny_llm(arch, layers=5)
    moe = copy.deepcopy(dense)
    assert upcycle(moe, MoEConfig(num_experts=4, top_k=2)) == [0, 2, 4]  # MoE-LLaVA "sparse": every second
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = dense(ids).logits, moe(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the routers did route: the experts saw 2 x 9 tokens x top-2 each, spread over more than one expert
    for m in moe_modules(moe):
        assert int(m.expert_counts.sum()) == 2 * 9 * 2 and int((m.expert_counts > 0).sum()) > 1
    moe.train()
    moe(ids).logits.sum().backward()  # aux_loss now carries a graph: copies must still work (exporters copy)
    assert all(m.aux_loss is None for m in moe_modules(copy.deepcopy(moe)))


def test_tensor_names_follow_deepspeed_moe():
    llm = tiny_llm("llama")
    upcycle(llm, MoEConfig(num_experts=3, top_k=2))
    names = [k for k in llm.state_dict() if ".mlp." in k]
    assert "model.layers.0.mlp.deepspeed_moe.gate.wg.weight" in names
    assert llm.state_dict()["model.layers.2.mlp.deepspeed_moe.gate.wg.weight"].shape == (3, 32)
    for proj in ("gate_proj", "up_proj", "down_proj"):
        assert f"model.layers.2.mlp.deepspeed_moe.experts.deepspeed_experts.2.{proj}.weight" in names
        assert f"model.layers.1.mlp.{proj}.weight" in names  # odd layers stay dense
    assert not any("experts.deepspeed_experts.3" in n for n in names)
    assert moe_layers(24, MoEConfig(num_experts=4)) == list(range(0, 24, 2))
    assert moe_layers(24, MoEConfig()) == []


@pytest.mark.parametrize("k", [1, 2, 3])
def test_routing_weights(k):
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(k))
    weights, idx, probs = route(logits, k)
    torch.testing.assert_close(probs, torch.softmax(logits, -1))
    assert torch.equal(idx[:, 0], logits.argmax(-1))
    picked = probs.gather(1, idx)
    assert (picked[:, :-1] >= picked[:, 1:]).all()  # descending
    if k == 1:  # DeepSpeed top-1 keeps the raw probability
        torch.testing.assert_close(weights, picked)
    else:  # renormalised over the chosen experts
        torch.testing.assert_close(weights.sum(-1), torch.ones(50))
        torch.testing.assert_close(weights, picked / picked.sum(-1, keepdim=True))
    # exact ties go to the lower expert index
    _, tie_idx, _ = route(torch.zeros(1, 4), k)
    assert tie_idx.tolist() == [list(range(k))]


def test_aux_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.5, 0.0]])
    _, idx, probs = route(logits, 2)
    p = [[float(v) for v in row] for row in torch.softmax(logits, -1)]
    first = [0, 1, 2, 0]  # each token's largest logit
    s, e = len(p), 3
    me = [sum(p[t][j] for t in range(s)) / s for j in range(e)]
    ce = [sum(1 for t in range(s) if first[t] == j) / s for j in range(e)]
    want = e * sum(me[j] * ce[j] for j in range(e))  # DeepSpeed: mean(me * ce) * E * E
    assert abs(float(aux_loss(probs, idx)) - want) < 1e-6
    _, idx, probs = route(torch.eye(3) * 50, 2)  # one confident token per expert: balanced, the minimum 1
    assert abs(float(aux_loss(probs, idx)) - 1.0) < 1e-6


def test_dense_compute_variant_equals_sparse_dispatch():
    llm = tiny_llm("llama")
    upcycle(llm, MoEConfig(num_experts=4, top_k=2))
    layer = moe_modules(llm)[0]
    with torch.no_grad():
        for p in layer.experts.parameters():  # experts that differ, so routing matters
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(layer.forward_dense(x), layer(x), rtol=1e-5, atol=1e-6)
    rows = x.reshape(-1, 32)
    w, idx, _ = route(rows @ layer.deepspeed_moe.gate.wg.weight.T, 2)
    by_hand = torch.stack([sum(w[s, j] * layer.experts[int(idx[s, j])](rows[s]) for j in range(2))
                           for s in range(rows.shape[0])])
    torch.testing.assert_close(layer(x).reshape(-1, 32), by_hand, rtol=1e-5, atol=1e-6)


# ---- MoE-tuning --------------------------------------------------------------------------------------------


def test_train_moe_cli_round_trip(tiny_model_dir, shapes_train, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # tqdm cuts the bar to the terminal's width (xdist workers set 80)
    out = tmp_path / "moe"
    main(["train", "--model", str(tiny_model_dir), "--data", str(shapes_train), "--out", str(out),
          "--method", "moe", "--experts", "4", "--top-k", "2", "--aux-loss", "0.01", "--max-steps", "4",
          "--batch-size", "4", "--lr", "3e-3"])
    err = capsys.readouterr().err
    assert "aux=" in err and all(f"e{e}=" in err for e in range(4))  # routing statistics in the progress bar

    cfg = json.loads((out / "config.json").read_text())["moe"]
    assert cfg == {"num_experts": 4, "top_k": 2, "aux_loss_coef": 0.01, "every": 2}
    dense, saved = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert "llm.model.layers.2.mlp.deepspeed_moe.experts.deepspeed_experts.3.down_proj.weight" in saved
    changed = {k for k in saved if k not in dense or not torch.equal(saved[k], dense[k])}
    # MoE-LLaVA stage III trains every FFN (experts and the dense ones between) and the routers, nothing else
    assert changed and all(".mlp." in k for k in changed)
    assert any("layers.1.mlp.up_proj" in k for k in changed) and any(".gate.wg." in k for k in changed)

    model = EdgeVLM.from_pretrained(out)
    assert len(moe_modules(model)) == 2
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())  # bit-exact reload
    img = torch.zeros(1, 3, 336, 336)
    with torch.no_grad():
        emb = model.encode_image(img)
        again = EdgeVLM.from_pretrained(out)
        assert model.generate(emb, model.prompt_ids("What is in the top left?"), max_new_tokens=4) == \
            again.generate(emb, again.prompt_ids("What is in the top left?"), max_new_tokens=4)


def test_moe_loss_adds_the_weighted_aux_losses(tiny_model_dir, shapes_train):
    cfg = TrainConfig(method="moe", max_steps=1, batch_size=2, aux_loss_coef=0.5)
    t = Trainer(EdgeVLM.from_pretrained(tiny_model_dir), "unused", cfg, progress=False).setup(shapes_train)
    assert t.model.cfg.moe == MoEConfig(num_experts=4, top_k=2, aux_loss_coef=0.5, every=2)
    batch = t._batch_at(0)
    loss, stats = t._loss(batch)
    aux = [m.aux_loss for m in moe_modules(t.model)]
    assert abs(stats["aux"] - float(sum(aux).detach())) < 1e-6
    assert abs(sum(stats[f"e{e}"] for e in range(4)) - 1.0) < 1e-6
    t.model.cfg.moe.aux_loss_coef = 0.0
    lm_only, _ = t._loss(batch)
    torch.testing.assert_close(loss, lm_only + 0.5 * sum(aux))


def test_moe_rejects_mismatched_experts(tmp_path, tiny_model_dir, shapes_train):
    from edgevlm.errors import EdgeVLMError

    first = train(tiny_model_dir, shapes_train, tmp_path / "a",
                  TrainConfig(method="moe", experts=2, top_k=1, max_steps=1, batch_size=2), progress=False)
    with pytest.raises(EdgeVLMError, match="already has 2 experts"):
        Trainer(EdgeVLM.from_pretrained(first.out), "unused",
                TrainConfig(method="moe", experts=4, max_steps=1), progress=False).setup(shapes_train)
    with pytest.raises(EdgeVLMError, match="finetune"):
        TrainConfig(stage="pretrain", method="moe")


class Interrupted(Exception):
    pass


def test_moe_resume_equals_uninterrupted(tiny_model_dir, shapes_train, tmp_path, monkeypatch):
    cfg = TrainConfig(method="moe", max_steps=4, batch_size=4, lr=3e-3, save_every=2)
    whole = train(tiny_model_dir, shapes_train, tmp_path / "whole", cfg, progress=False)
    real_checkpoint = Trainer._checkpoint

    def checkpoint_then_die(self, *a, **kw):
        real_checkpoint(self, *a, **kw)
        raise Interrupted

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_die)
    with pytest.raises(Interrupted):
        train(tiny_model_dir, shapes_train, tmp_path / "resumed", cfg, progress=False)
    assert (checkpoint_root(tmp_path / "resumed") / "step-0000002").is_dir()
    monkeypatch.setattr(Trainer, "_checkpoint", real_checkpoint)
    resumed = train(tiny_model_dir, shapes_train, tmp_path / "resumed", cfg, resume=True, progress=False)
    assert resumed.losses == whole.losses
    a, b = load_file(whole.out / "model.safetensors"), load_file(resumed.out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- MoE-LLaVA's checkpoint layout -------------------------------------------------------------------------

L, D, F_, H, E = 4, 64, 96, 4, 4  # a tiny MoE-LLaVA-StableLM: layers, width, FFN, heads, experts
TOWER_CFG = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, image_size=336,
                 patch_size=14, layer_norm_eps=1e-5, hidden_act="quick_gelu")


def write_moe_llava(src, vocab):
    """A checkpoint dir in MoE-LLaVA-StableLM's exact layout (config keys, tensor names), random weights."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from edgevlm.models.factory import vocabulary

    src.mkdir()
    size, tok = vocabulary(vocab)
    tok.save(src / "tokenizer.json")
    names = {k: tok.tok.id_to_token(i) for k, i in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id))}
    (src / "tokenizer_config.json").write_text(json.dumps({**names, "add_bos_token": False}))
    (src / "clip-tiny").mkdir()
    (src / "clip-tiny" / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", **TOWER_CFG}))
    cfg = {
        "architectures": ["MoELLaVAStablelmForCausalLM"], "model_type": "moe_llava_stablelm",
        "vocab_size": size, "hidden_size": D, "intermediate_size": F_, "num_hidden_layers": L,
        "num_attention_heads": H, "num_key_value_heads": H, "hidden_act": "silu", "rope_pct": 0.25,
        "rope_theta": 10000, "max_position_embeddings": 1024, "norm_eps": 1e-5, "use_qkv_bias": True,
        "tie_word_embeddings": False, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "use_cache": False,
        "torch_dtype": "float32", "transformers_version": "4.36.2", "initializer_range": 0.02,
        "mm_image_tower": "clip-tiny", "mm_video_tower": None, "image_projector_type": "mlp2x_gelu",
        "video_projector_type": "linear", "mm_hidden_size": 48, "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad", "use_mm_proj": True, "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False, "router_aux_loss_coef": 0.01,
        "moe": {"moe_enable": True, "moe_mode": "sparse", "moe_layers_idx": [0, 2], "ep_size": 1,
                "num_experts": [E, E], "top_k_experts": 2, "capacity_factor": 1.5, "eval_capacity_factor": 2.0,
                "min_capacity": 0, "use_residual": False, "router_aux_loss_coef": 0.01,
                "train_modules": ["gate_proj", "up_proj", "down_proj", "wg"]},
    }
    (src / "config.json").write_text(json.dumps(cfg))

    g = torch.Generator().manual_seed(7)

    def rnd(*shape, scale=0.15):
        return torch.randn(*shape, generator=g) * scale

    t = {"model.embed_tokens.weight": rnd(size, D, scale=1.0), "lm_head.weight": rnd(size, D),
         "model.norm.weight": 1 + rnd(D), "model.norm.bias": rnd(D)}
    for i in range(L):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj"):
            t[p + f"self_attn.{n}.weight"], t[p + f"self_attn.{n}.bias"] = rnd(D, D), rnd(D)
        t[p + "self_attn.o_proj.weight"] = rnd(D, D)
        for n in ("input_layernorm", "post_attention_layernorm"):
            t[p + f"{n}.weight"], t[p + f"{n}.bias"] = 1 + rnd(D), rnd(D)
        t[p + "self_attn.rotary_emb.inv_freq"] = torch.ones(2)  # a non-persistent buffer older files carry
        mlps = [p + "mlp."] if i % 2 else [p + f"mlp.deepspeed_moe.experts.deepspeed_experts.{e}." for e in range(E)]
        if i % 2 == 0:
            t[p + "mlp.deepspeed_moe.gate.wg.weight"] = rnd(E, D, scale=1.0)
        for m in mlps:
            t[m + "gate_proj.weight"], t[m + "up_proj.weight"], t[m + "down_proj.weight"] = \
                rnd(F_, D), rnd(F_, D), rnd(D, F_)
    torch.manual_seed(3)
    tower = CLIPVisionModel(CLIPVisionConfig(**TOWER_CFG)).state_dict()
    t.update({"model.image_tower.image_tower.vision_model." + k: v for k, v in tower.items()})
    t["model.mm_projector.image_spatial_proj.0.weight"], t["model.mm_projector.image_spatial_proj.0.bias"] = \
        rnd(D, 48), rnd(D)
    t["model.mm_projector.image_spatial_proj.2.weight"], t["model.mm_projector.image_spatial_proj.2.bias"] = \
        rnd(D, D), rnd(D)
    save_file(t, str(src / "model.safetensors"))
    return t


def reference_image(t, pixels):
    """Upstream's image path from the raw tensors: CLIPVisionModel hidden_states[-2] minus CLS, then the MLP."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    pre = "model.image_tower.image_tower.vision_model."
    tower = CLIPVisionModel(CLIPVisionConfig(**TOWER_CFG)).eval()
    tower.load_state_dict({k[len(pre):]: v for k, v in t.items() if k.startswith(pre)})
    feats = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    p = "model.mm_projector.image_spatial_proj."
    h = F.gelu(feats @ t[p + "0.weight"].T + t[p + "0.bias"])
    return h @ t[p + "2.weight"].T + t[p + "2.bias"]


def reference_lm(t, x):
    """StableLM Epoch + DeepSpeed MoE (dropless, top-2, renormalised) from the raw tensors: (T, D) → logits."""
    import math

    T, hd = x.shape[0], D // H
    rot = int(hd * 0.25)
    inv = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    ang = torch.outer(torch.arange(T).float(), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(q):  # (H, T, hd): rotate the first `rot` dims, rotate_half style
        r, rest = q[..., :rot], q[..., rot:]
        half = torch.cat([-r[..., rot // 2:], r[..., : rot // 2]], -1)
        return torch.cat([r * cos + half * sin, rest], -1)

    def ln(v, name):
        return F.layer_norm(v, (D,), t[name + ".weight"], t[name + ".bias"], 1e-5)

    def mlp(v, p):
        return (F.silu(v @ t[p + "gate_proj.weight"].T) * (v @ t[p + "up_proj.weight"].T)) @ t[p + "down_proj.weight"].T

    causal = torch.full((T, T), float("-inf")).triu(1)
    for i in range(L):
        p = f"model.layers.{i}."
        h = ln(x, p + "input_layernorm")
        q, k, v = ((h @ t[p + f"self_attn.{n}_proj.weight"].T + t[p + f"self_attn.{n}_proj.bias"])
                   .reshape(T, H, hd).transpose(0, 1) for n in "qkv")
        att = torch.softmax(rope(q) @ rope(k).transpose(1, 2) / math.sqrt(hd) + causal, -1)
        x = x + (att @ v).transpose(0, 1).reshape(T, D) @ t[p + "self_attn.o_proj.weight"].T
        h = ln(x, p + "post_attention_layernorm")
        if i % 2:
            x = x + mlp(h, p + "mlp.")
            continue
        out = torch.zeros_like(h)
        for s in range(T):
            probs = torch.softmax(h[s] @ t[p + "mlp.deepspeed_moe.gate.wg.weight"].T, -1)
            top = sorted(range(E), key=lambda e: -float(probs[e]))[:2]
            norm = sum(probs[e] for e in top)
            for e in top:
                out[s] += probs[e] / norm * mlp(h[s], p + f"mlp.deepspeed_moe.experts.deepspeed_experts.{e}.")
        x = x + out
    return ln(x, "model.norm") @ t["lm_head.weight"].T


def test_moe_llava_checkpoint_converts_and_equals_reference(tmp_path):
    from edgevlm.convert import convert, detect

    t = write_moe_llava(tmp_path / "up", 384)
    assert detect(tmp_path / "up") == "moe-llava"
    model = convert(tmp_path / "up", tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert cfg["moe"] == {"num_experts": 4, "top_k": 2, "aux_loss_coef": 0.01, "every": 2}
    assert cfg["family"] == "moe-llava" and cfg["llm"]["arch"] == "stablelm"
    assert cfg["llm"]["extra"]["partial_rotary_factor"] == 0.25 and cfg["llm"]["extra"]["use_qkv_bias"]

    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    ids = model.prompt_ids("What is in the top left?")
    at = ids.index(-200) if -200 in ids else None
    with torch.no_grad():
        img = model.encode_image(pixels)
        torch.testing.assert_close(img, reference_image(t, pixels), rtol=1e-4, atol=1e-4)
        x = model.splice(ids, img[0])
        got = model.llm(inputs_embeds=x[None]).logits[0]
        want = reference_lm(t, x)
    assert at is not None and x.shape[0] == len(ids) - 1 + 576
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    routed = [m.expert_counts for m in moe_modules(model)]
    assert len(routed) == 2 and all(int((c > 0).sum()) > 2 for c in routed)  # the experts really differ in use
    again = EdgeVLM.from_pretrained(tmp_path / "ours")
    with torch.no_grad():
        assert torch.equal(again.llm(inputs_embeds=x[None]).logits[0], got)


@pytest.mark.parametrize("change,message", [
    (lambda c: c["moe"].update(use_residual=True), "use_residual"),
    (lambda c: c["moe"].update(moe_layers_idx=[0, 1]), "every n-th"),
    (lambda c: c["moe"].update(num_experts=[4, 2]), "same count"),
    (lambda c: c.update(model_type="moe_llava_qwen"), "Qwen-1"),
    (lambda c: c.update(image_projector_type="qformer4_36"), "qformer4_36"),
], ids=["residual", "layers", "experts", "qwen1", "projector"])
def test_moe_llava_refuses_what_it_cannot_run(tmp_path, change, message):
    from edgevlm.convert import convert
    from edgevlm.errors import EdgeVLMError

    write_moe_llava(tmp_path / "up", 384)
    cfg = json.loads((tmp_path / "up" / "config.json").read_text())
    change(cfg)
    (tmp_path / "up" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgeVLMError, match=message):
        convert(tmp_path / "up", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


def test_moe_llava_strict_tensor_check(tmp_path):
    from safetensors.torch import save_file

    from edgevlm.convert import convert
    from edgevlm.errors import EdgeVLMError

    t = write_moe_llava(tmp_path / "up", 384)
    del t["model.layers.2.mlp.deepspeed_moe.experts.deepspeed_experts.3.up_proj.weight"]
    t["model.layers.2.mlp.deepspeed_moe.gate.wg.weight"] = torch.zeros(3, D)
    save_file(t, str(tmp_path / "up" / "model.safetensors"))
    with pytest.raises(EdgeVLMError, match=r"missing tensors: .*deepspeed_experts\.3\.up_proj.*mis-shaped tensors: "
                                           r".*layers\.2\.mlp\.deepspeed_moe\.gate\.wg\.weight"):
        convert(tmp_path / "up", tmp_path / "ours")


def test_moe_llava_tower_saved_by_transformers_5(tmp_path):
    """The image tower in its own dir (`mm_image_tower`), saved by transformers 5 (no `vision_model.` level),
    converts to the same model as the tower inside the checkpoint in transformers 4's names."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from edgevlm.convert import load

    t = write_moe_llava(tmp_path / "up", 384)
    inside = load(tmp_path / "up").state_dict()
    torch.manual_seed(3)
    CLIPVisionModel(CLIPVisionConfig(**TOWER_CFG)).save_pretrained(str(tmp_path / "up" / "clip-tiny"))
    save_file({k: v for k, v in t.items() if not k.startswith("model.image_tower.")},
              str(tmp_path / "up" / "model.safetensors"))
    beside = load(tmp_path / "up").state_dict()
    assert inside.keys() == beside.keys() and all(torch.equal(inside[k], beside[k]) for k in inside)
