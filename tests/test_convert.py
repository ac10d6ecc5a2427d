"""`edgevlm convert`: tiny checkpoints written in each upstream layout (config schema, tensor names, file kinds,
tokenizer files), converted, and checked against a direct re-implementation from the upstream tensors run with
transformers' own CLIP / SigLIP / LM classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, PhiConfig,
                          PhiForCausalLM, SiglipVisionConfig, SiglipVisionModel)

from cli_errors import fails
from edgevlm.cli import main
from edgevlm.convert import convert, detect, load
from edgevlm.errors import EdgeVLMError
from edgevlm.load import load_model
from edgevlm.models.vlm import EdgeVLM

VOCAB = 300
QUESTION = "What is in the top left?"
CORPUS = ["A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. USER: What is in the top left? ASSISTANT: red"] * 20


def _tokenizer(d: Path, llama: bool) -> None:
    """Llama-style (<s> </s> <unk>, BOS added by the post-processor) or Phi-2-style (<|endoftext|>, no BOS)."""
    specials = ["<unk>", "<s>", "</s>"] if llama else ["<|endoftext|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=VOCAB - 10, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    if llama:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        meta = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
                "add_bos_token": True, "tokenizer_class": "LlamaTokenizer"}
    else:
        meta = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "tokenizer_class": "CodeGenTokenizer"}
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(meta))


def _clip(seed=1):
    torch.manual_seed(seed)
    return CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                            num_attention_heads=2, image_size=336, patch_size=14)).eval()


def _siglip(seed=1):
    torch.manual_seed(seed)
    return SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                                num_attention_heads=2, image_size=384, patch_size=14)).eval()


def _llama(seed=2):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                                        rms_norm_eps=1e-6)).eval()


def _phi(seed=2):
    torch.manual_seed(seed)
    return PhiForCausalLM(PhiConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, partial_rotary_factor=0.4, resid_pdrop=0.1,
                                    max_position_embeddings=2048)).eval()


def _prefixed(module, prefix: str) -> dict[str, torch.Tensor]:
    """The module's tensors as an upstream file names them (CLIP / SigLIP: `vision_model.*`, transformers 4)."""
    return {prefix + k: v.clone() for k, v in module.state_dict().items()}


def _mlp(d_in: int, d_out: int, prefix: str, seed=3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"0.weight": (d_out, d_in), "0.bias": (d_out,), "2.weight": (d_out, d_out), "2.bias": (d_out,)}
    return {prefix + k: torch.randn(s, generator=g) * 0.2 for k, s in shapes.items()}


def _config(d: Path, cfg: dict) -> None:
    (d / "config.json").write_text(json.dumps(cfg))


def _tower_dir(d: Path, tower) -> Path:
    d.mkdir()
    tower.config.save_pretrained(str(d))
    return d


# ---- the layouts ------------------------------------------------------------------------------------------------
def _write_mobilevlm_v2(root: Path, tower) -> tuple:
    """MobileVLM V2: Llama + LDPv2 (`model.mm_projector.mlp.mlp.*`, `peg.peg.*`), CLIP inside, safetensors."""
    src, llm = root / "ckpt", _llama()
    src.mkdir()
    g = torch.Generator().manual_seed(4)
    tensors = {**_prefixed(llm, ""), **_prefixed(tower, "model.vision_tower.vision_tower.vision_model."),
               **_mlp(32, 64, "model.mm_projector.mlp.mlp."),
               "model.mm_projector.peg.peg.0.weight": torch.randn(64, 1, 3, 3, generator=g) * 0.2,
               "model.mm_projector.peg.peg.0.bias": torch.randn(64, generator=g) * 0.2}
    save_file(tensors, str(src / "model.safetensors"))
    _config(src, {**llm.config.to_dict(), "model_type": "mobilevlm", "architectures": ["MobileLlamaForCausalLM"],
                  "mm_projector_type": "ldpnetv2", "mm_vision_tower": str(_tower_dir(root / "clip", tower)),
                  "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_hidden_size": 32,
                  "vision_tower_type": "clip", "mm_use_im_start_end": False, "mm_use_im_patch_token": False})
    _tokenizer(src, llama=True)
    return src, tower, llm, tensors


@pytest.fixture(scope="module")
def mobilevlm_v2(tmp_path_factory):
    return _write_mobilevlm_v2(tmp_path_factory.mktemp("mobilevlm_v2"), _clip())


@pytest.fixture(scope="module")
def mobilevlm_v1(tmp_path_factory):
    """MobileVLM V1: Llama + LDP (`model.mm_projector.model.*`), the CLIP tower in its own dir, pytorch_model.bin."""
    root = tmp_path_factory.mktemp("mobilevlm_v1")
    src, tower, llm = root / "ckpt", _clip(), _llama()
    src.mkdir()
    g = torch.Generator().manual_seed(5)
    ldp = {"mlp.1.weight": (64, 32), "mlp.1.bias": (64,), "mlp.3.weight": (64, 64), "mlp.3.bias": (64,)}
    for i in (1, 2):
        ldp |= {f"mb_block.{i}.block.0.0.weight": (64, 1, 3, 3), f"mb_block.{i}.block.0.1.weight": (64,),
                f"mb_block.{i}.block.0.1.bias": (64,), f"mb_block.{i}.block.1.fc1.weight": (16, 64, 1, 1),
                f"mb_block.{i}.block.1.fc1.bias": (16,), f"mb_block.{i}.block.1.fc2.weight": (64, 16, 1, 1),
                f"mb_block.{i}.block.1.fc2.bias": (64,), f"mb_block.{i}.block.2.0.weight": (64, 64, 1, 1),
                f"mb_block.{i}.block.2.1.weight": (64,), f"mb_block.{i}.block.2.1.bias": (64,)}
    tensors = {**_prefixed(llm, ""), **{f"model.mm_projector.model.{k}": torch.randn(s, generator=g) * 0.2
                                        for k, s in ldp.items()}}
    torch.save(tensors, src / "pytorch_model.bin")
    tower_dir = _tower_dir(root / "clip-vit-large-patch14-336", tower)
    save_file(_prefixed(tower, "vision_model."), str(tower_dir / "model.safetensors"))
    cfg = {**llm.config.to_dict(), "model_type": "mobilevlm", "mm_projector_type": "ldpnet",
           "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_vision_select_layer": -2, "mm_hidden_size": 32}
    _config(src, cfg)
    _tokenizer(src, llama=True)
    return src, tower_dir, tower, tensors


@pytest.fixture(scope="module")
def bunny(tmp_path_factory):
    """Bunny: Phi-2 (`bunny-phi`) + mlp2x_gelu + SigLIP (with its pooling head) inside, safetensors."""
    root = tmp_path_factory.mktemp("bunny")
    src, tower, llm = root / "ckpt", _siglip(), _phi()
    src.mkdir()
    tensors = {**_prefixed(llm, ""), **_prefixed(tower, "model.vision_tower.vision_tower.vision_model."),
               **_mlp(32, 64, "model.mm_projector.")}
    save_file(tensors, str(src / "model.safetensors"))
    _config(src, {**llm.config.to_dict(), "model_type": "bunny-phi", "architectures": ["BunnyPhiForCausalLM"],
                  "mm_projector_type": "mlp2x_gelu", "mm_vision_tower": str(_tower_dir(root / "siglip", tower)),
                  "mm_hidden_size": 32, "use_mm_proj": True})
    _tokenizer(src, llama=False)
    return src, tower, llm, tensors


@pytest.fixture(scope="module")
def tinyllava(tmp_path_factory):
    """TinyLLaVA_Factory: `language_model.*`, `vision_tower._vision_tower.*`, `connector._connector.*`."""
    src, tower, llm = tmp_path_factory.mktemp("tinyllava"), _siglip(), _phi()
    tensors = {**_prefixed(llm, "language_model."), **_prefixed(tower, "vision_tower._vision_tower.vision_model."),
               **_mlp(32, 64, "connector._connector.")}
    save_file(tensors, str(src / "model.safetensors"))
    _config(src, {"model_type": "tinyllava", "architectures": ["TinyLlavaForConditionalGeneration"],
                  "connector_type": "mlp2x_gelu", "text_config": llm.config.to_dict(),
                  "vision_config": tower.config.to_dict(), "vision_feature_layer": -2,
                  "vision_feature_select_strategy": "patch", "llm_model_name_or_path": "microsoft/phi-2",
                  "vision_model_name_or_path": "google/siglip-so400m-patch14-384", "hidden_size": 64,
                  "vocab_size": VOCAB})
    _tokenizer(src, llama=False)
    return src, tower, llm, tensors


# ---- reference computations from the raw upstream tensors -------------------------------------------------------
def _pixels(size: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(7))


def _mlp_ref(x, t, prefix):
    return F.linear(F.gelu(F.linear(x, t[prefix + "0.weight"], t[prefix + "0.bias"])), t[prefix + "2.weight"],
                    t[prefix + "2.bias"])


def _logits_ref(model: EdgeVLM, llm, image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ours vs the upstream LM (transformers, its own weights) on the same spliced prompt."""
    ids = model.prompt_ids(QUESTION)
    at = ids.index(-200)
    emb = llm.get_input_embeddings()
    x = torch.cat([emb(torch.tensor(ids[:at])), image_tokens[0], emb(torch.tensor(ids[at + 1:]))])[None]
    ours = model.splice(ids, model.encode_image(_pixels(model.cfg.vision.image_size))[0])[None]
    return model.llm(inputs_embeds=ours).logits, llm(inputs_embeds=x).logits


def _ldpv2_ref(tower, t, size: int) -> torch.Tensor:
    """MobileVLM V2's image path from the raw tensors: patch features, MLP, TokenDownLayer, PosInjectLayer."""
    feats = tower(_pixels(size), output_hidden_states=True).hidden_states[-2][:, 1:]  # LLaVA "patch" features
    x = _mlp_ref(feats, t, "model.mm_projector.mlp.mlp.")  # (1, N, 64)
    side = size // 14
    grid = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(1, 64, side, side), (12, 12))  # TokenDownLayer
    grid = F.conv2d(grid, t["model.mm_projector.peg.peg.0.weight"], t["model.mm_projector.peg.peg.0.bias"],
                    padding=1, groups=64) + grid  # PosInjectLayer
    return grid.flatten(2).transpose(1, 2)


@torch.no_grad()
def test_mobilevlm_v2_equals_upstream_computation(mobilevlm_v2):
    src, tower, llm, t = mobilevlm_v2
    model = load(src)
    ref = _ldpv2_ref(tower, t, 336)
    torch.testing.assert_close(model.encode_image(_pixels(336)), ref, rtol=1e-5, atol=1e-5)
    ours, theirs = _logits_ref(model, llm, ref)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert model.cfg.projector.kind == "ldpv2" and model.num_image_tokens == 144 and model.cfg.template == "vicuna_v1"
    assert model.prompt_ids(QUESTION)[0] == model.tokenizer.tok.token_to_id("<s>")  # Llama adds BOS


@torch.no_grad()
def test_ldpv2_off_the_24_grid_pools_adaptively_like_upstream(tmp_path):
    """A 224-px tower (16 x 16 patches): upstream's adaptive pool still gives 144 tokens (overlapping windows).
    ONNX runs it (the contract's vision encoder, as the exporters trace it, in onnxruntime); llama.cpp's graph
    pools 2 x 2 on a fixed 24 x 24 grid, so GGUF export refuses."""
    import onnxruntime as ort

    from edgevlm.export.gguf import check_exportable
    from edgevlm.export.contract import VisionEncoder
    from edgevlm.export.onnx import OPSET, quiet

    torch.manual_seed(1)
    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                             num_attention_heads=2, image_size=224, patch_size=14)).eval()
    src, tower, _, t = _write_mobilevlm_v2(tmp_path, tower)
    model = load(src)
    ref = _ldpv2_ref(tower, t, 224)
    assert model.num_image_tokens == 144 and ref.shape == (1, 144, 64)
    torch.testing.assert_close(model.encode_image(_pixels(224)), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(EdgeVLMError, match="llama.cpp's ldpv2 graph needs a 24x24 patch grid, this tower has 16x16"):
        check_exportable(model)
    encoder = VisionEncoder(model.vision, model.projector).eval()  # the graph ONNX / ExecuTorch / CoreML trace
    with quiet():
        program = torch.onnx.export(encoder, (_pixels(224),), dynamo=True, opset_version=OPSET,
                                    input_names=["pixel_values"], verbose=False)
    vision = ort.InferenceSession(program.model_proto.SerializeToString())
    got = vision.run(None, {"pixel_values": _pixels(224).numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), ref, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_bunny_equals_upstream_computation(bunny):
    src, tower, llm, t = bunny
    model = load_model(src)  # recognises the upstream layout by itself
    feats = tower(_pixels(384), output_hidden_states=True).hidden_states[-2]  # all 729 SigLIP patches
    ref = _mlp_ref(feats, t, "model.mm_projector.")
    torch.testing.assert_close(model.encode_image(_pixels(384)), ref, rtol=1e-5, atol=1e-5)
    ours, theirs = _logits_ref(model, llm, ref)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert model.num_image_tokens == 729 and model.cfg.llm.arch == "phi" and model.cfg.template == "bunny"
    assert model.cfg.llm.extra["partial_rotary_factor"] == pytest.approx(0.4)
    eot = model.tokenizer.tok.token_to_id("<|endoftext|>")
    assert model.tokenizer.eos_id == eot and eot not in model.prompt_ids(QUESTION)  # Phi-2 adds no BOS


@torch.no_grad()
def test_tinyllava_factory_equals_upstream_computation(tinyllava):
    src, tower, llm, t = tinyllava
    model = load(src)
    feats = tower(_pixels(384), output_hidden_states=True).hidden_states[-2][:, 1:]  # Factory "patch": 728
    ref = _mlp_ref(feats, t, "connector._connector.")
    torch.testing.assert_close(model.encode_image(_pixels(384)), ref, rtol=1e-5, atol=1e-5)
    ours, theirs = _logits_ref(model, llm, ref)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert model.num_image_tokens == 728 and ref.shape[1] == 728


def test_mobilevlm_v1_tower_from_its_own_dir(mobilevlm_v1, tmp_path, capsys):
    src, tower_dir, tower, t = mobilevlm_v1
    assert main(["convert", "--from", "mobilevlm", str(src), "--out", str(tmp_path / "m"),
                 "--vision-tower", str(tower_dir)]) == 0
    assert "converted mobilevlm" in capsys.readouterr().out
    model = EdgeVLM.from_pretrained(tmp_path / "m")
    assert model.cfg.projector.kind == "ldp" and model.num_image_tokens == 144
    ours = model.state_dict()
    for k, v in t.items():  # every upstream tensor lands, unchanged, under its renamed name
        name = k.replace("model.mm_projector.model.", "projector.") if "mm_projector" in k else \
            ("llm." + k)
        assert torch.equal(ours[name], v), k
    with torch.no_grad():
        feats = tower(_pixels(336), output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(model.vision(_pixels(336)), feats, rtol=1e-5, atol=1e-5)


def test_converted_dir_round_trips(bunny, tmp_path):
    src = bunny[0]
    first = convert(src, tmp_path / "m")
    again = EdgeVLM.from_pretrained(tmp_path / "m")
    assert again.cfg == first.cfg and again.tokenizer.add_bos is False
    a, b = first.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert detect(src) == "bunny"


# ---- errors -----------------------------------------------------------------------------------------------------
def _broken_copy(src: Path, dst: Path, edit) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.pop("model.mm_projector.2.bias"), "missing tensors: projector.mlp.2.bias"),
    (lambda t: t.__setitem__("extra_head.weight", torch.zeros(2)), "unexpected tensors: extra_head.weight"),
    (lambda t: t.__setitem__("model.mm_projector.0.weight", torch.zeros(64, 7)),
     "mis-shaped tensors: projector.mlp.0.weight (expected (64, 32), got (64, 7))"),
])
def test_bad_tensors_are_listed(bunny, tmp_path, capsys, edit, needle):
    bad = _broken_copy(bunny[0], tmp_path / "bad", edit)
    line = fails(["convert", "--from", "bunny", str(bad), "--out", str(tmp_path / "m")], capsys, needle)
    assert "model.safetensors" in line and not (tmp_path / "m").exists()


def test_hub_id_tower_without_weights_names_the_flag(mobilevlm_v1, tmp_path, capsys):
    line = fails(["convert", "--from", "mobilevlm", str(mobilevlm_v1[0]), "--out", str(tmp_path / "m")], capsys,
                 "--vision-tower DIR")
    assert "openai/clip-vit-large-patch14-336" in line


def test_wrong_family_and_unknown_layout(bunny, tmp_path, capsys):
    fails(["convert", "--from", "tinyllava", str(bunny[0]), "--out", str(tmp_path / "m")], capsys,
          "is not a tinyllava checkpoint")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(EdgeVLMError, match="neither an edgevlm model config nor a known upstream layout"):
        load_model(tmp_path / "x")
    with pytest.raises(EdgeVLMError, match="not an edgevlm model config"):  # the bare model reads its own only
        EdgeVLM.from_pretrained(tmp_path / "x")


def test_sentencepiece_only_tokenizer_is_converted_or_named(bunny, tmp_path, capsys):
    bad = _broken_copy(bunny[0], tmp_path / "spm", lambda t: None)
    (bad / "tokenizer.json").unlink()
    (bad / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    fails(["convert", "--from", "bunny", str(bad), "--out", str(tmp_path / "m")], capsys,
          "no tokenizer.json, and transformers could not convert tokenizer.model offline")


# ---- upstream layouts edgevlm's own classes do not write -----------------------------------------------------------
@torch.no_grad()
def test_phi_head_without_bias_is_read_as_a_zero_bias(bunny, tmp_path):
    """BunnyPhiForCausalLM / MoELLaVAPhiForCausalLM build Phi's lm_head with bias=False: their files have no
    `lm_head.bias`. Upstream's bias-free head and ours (zero bias) give the same logits; other tensors stay strict."""
    src, tower, llm, t = bunny
    upstream = PhiForCausalLM(llm.config).eval()
    upstream.load_state_dict(llm.state_dict())
    upstream.lm_head = torch.nn.Linear(64, VOCAB, bias=False)  # as Bunny builds it
    upstream.lm_head.weight.copy_(llm.lm_head.weight)
    assert "lm_head.bias" not in upstream.state_dict()
    bad = _broken_copy(src, tmp_path / "nobias", lambda x: (x.pop("lm_head.bias"),
                                                            x.update(_prefixed(upstream, ""))))
    model = load(bad)
    assert not model.llm.lm_head.bias.any()
    ref = _mlp_ref(tower(_pixels(384), output_hidden_states=True).hidden_states[-2], t, "model.mm_projector.")
    ours, theirs = _logits_ref(model, upstream, ref)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    worse = _broken_copy(bad, tmp_path / "worse", lambda x: x.pop("model.final_layernorm.bias"))
    with pytest.raises(EdgeVLMError, match=r"missing tensors: llm\.model\.final_layernorm\.bias$"):
        load(worse)


def _transformers5_tower(tower, d: Path) -> dict[str, torch.Tensor]:
    """The tower saved by transformers 5 (the pinned version): tensor names without `vision_model.`."""
    tower.save_pretrained(str(d))
    names = load_file(str(d / "model.safetensors"))
    assert not any(n.startswith("vision_model.") for n in names) and "embeddings.patch_embedding.weight" in names
    return names


@pytest.mark.parametrize("layout,prefix", [("mobilevlm_v2", "model.vision_tower.vision_tower."),
                                           ("bunny", "model.vision_tower.vision_tower."),
                                           ("tinyllava", "vision_tower._vision_tower.")])
def test_tower_saved_by_transformers_5_inside_the_checkpoint(layout, prefix, request, tmp_path):
    """The same checkpoint with its CLIP / SigLIP tower in transformers 5's names converts to the same model."""
    src, tower = request.getfixturevalue(layout)[:2]
    new = {prefix + k: v for k, v in _transformers5_tower(tower, tmp_path / "tower").items()}

    def swap(x):
        for k in [k for k in x if k.startswith(prefix)]:
            del x[k]
        x.update(new)

    a, b = load(src).state_dict(), load(_broken_copy(src, tmp_path / "t5", swap)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tower_saved_by_transformers_5_from_vision_tower_flag(mobilevlm_v1, tmp_path, capsys):
    src, _, tower, _ = mobilevlm_v1
    t5 = tmp_path / "clip-t5"
    _transformers5_tower(tower, t5)
    assert main(["convert", "--from", "mobilevlm", str(src), "--out", str(tmp_path / "m"),
                 "--vision-tower", str(t5)]) == 0
    model = EdgeVLM.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        feats = tower(_pixels(336), output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(model.vision(_pixels(336)), feats, rtol=1e-5, atol=1e-5)
    cfg = json.loads((t5 / "config.json").read_text())
    (t5 / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    line = fails(["convert", "--from", "mobilevlm", str(src), "--out", str(tmp_path / "m2"),
                  "--vision-tower", str(t5)], capsys, "the checkpoint holds 3 vision blocks, the config says 2")
    assert str(t5 / "model.safetensors") in line  # the file it read, not the LLaVA checkpoint
