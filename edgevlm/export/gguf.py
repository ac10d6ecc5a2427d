"""GGUF export for llama.cpp: the LLM as a text model, the vision tower + projector as an mmproj file.

llama.cpp splits a VLM in two GGUF files (format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
- `model-<quant>.gguf`: the causal LM as the llama.cpp architecture of its family (`TEXT_ARCHS`: llama, phi2,
  stablelm, phi3, qwen2), written the way llama.cpp's convert_hf_to_gguf.py writes the transformers model
  (conversion/{llama,phi,stablelm,qwen}.py): tensor names from the gguf package's name map (Phi-3's fused
  qkv_proj / gate_up_proj stay fused: llama.cpp's phi3 graph splits them), q/k rows permuted to the rotary
  layout of llama.cpp's `llama` graph (the others rotate halves, as transformers does), the same hyperparameter
  keys (layer-norm or RMS-norm epsilon, rotary dims for partial rotary), the byte-level BPE tokenizer as
  `gpt2` / `gpt-2`, plus `add_bos_token` and our prompt template as `tokenizer.chat_template`.
  MoE-LLaVA LMs (edgevlm.models.moe) are written where llama.cpp has a graph for them: a Llama body as
  Mixtral is (`llama` with `ffn_gate_inp` + stacked `ffn_{gate,up,down}_exps`, softmax top-k renormalised,
  MoE-LLaVA's routing for k >= 2). llama.cpp's llama graph is MoE in every layer or none, so each dense layer
  is written as E identical copies of its FFN behind an all-zero router: uniform gate, renormalised top-k
  weights summing to one, output exactly the dense FFN's (at E times that layer's FFN bytes on disk). No
  llama.cpp MoE graph has a StableLM or Phi-2 layer (LayerNorm, partial rotary; phimoe, qwen2moe, olmoe, …
  use RMSNorm or do not renormalise), so those are refused in one line. Quantized
  schemes are made by llama.cpp's own quantizer (`llama_model_quantize`, its standard Q8_0 / Q4_0 / Q4_K_M
  mixes) from a float32 file; each tensor it had to give another type because its rows do not fit the type's
  block (Q4_K needs rows that are a multiple of 256) is read from its log into the manifest.
- `mmproj-<quant>.gguf`: see edgevlm/export/gguf_vision.py.
"""

from __future__ import annotations

import ctypes
import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from edgevlm.bundle.tokenizer import TextTokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.export.decoder import arch_spec, head_dim, rotary_dims
from edgevlm.export.gguf_vision import clip_projector, write_mmproj
from edgevlm.models.checkpoint import unique_state
from edgevlm.models.moe import MoE, decoder_layers
from edgevlm.registry import Registry

F32, F16, Q8_0 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0
FT = gguf.LlamaFileType


@dataclass(frozen=True)
class GGUFQuant:
    """What `--format gguf --quant NAME` writes."""

    text_ftype: FT  # llama.cpp file type of the text model (anything but F16 goes through llama_model_quantize)
    vision: gguf.GGMLQuantizationType  # type of the mmproj's weight matrices


QUANTS: Registry[GGUFQuant] = Registry("GGUF quantization")
QUANTS.register("f16")(GGUFQuant(FT.MOSTLY_F16, F16))
QUANTS.register("q8_0")(GGUFQuant(FT.MOSTLY_Q8_0, Q8_0))
QUANTS.register("q4_0")(GGUFQuant(FT.MOSTLY_Q4_0, Q8_0))
QUANTS.register("q4_k")(GGUFQuant(FT.MOSTLY_Q4_K_M, Q8_0))



@dataclass(frozen=True)
class TextArch:
    """How one of our LLM architectures is written as a llama.cpp architecture."""

    arch: gguf.MODEL_ARCH
    rms_norm: bool  # RMSNorm (`layer_norm_rms_epsilon`) or LayerNorm (`layer_norm_epsilon`)
    activations: tuple[str, ...]  # transformers `hidden_act` values the llama.cpp graph computes (it fixes one)
    permute_qk: bool = False  # llama's graph rotates interleaved pairs (rope type NORM); the rest halves (NEOX)
    moe: bool = False  # its graph runs routed experts with MoE-LLaVA's routing

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]


TEXT_ARCHS: Registry[TextArch] = Registry("LLM architecture for llama.cpp (GGUF)")
TEXT_ARCHS.register("llama")(TextArch(gguf.MODEL_ARCH.LLAMA, True, ("silu",), permute_qk=True, moe=True))
TEXT_ARCHS.register("qwen2")(TextArch(gguf.MODEL_ARCH.QWEN2, True, ("silu",)))
TEXT_ARCHS.register("phi3")(TextArch(gguf.MODEL_ARCH.PHI3, True, ("silu",)))
TEXT_ARCHS.register("phi")(TextArch(gguf.MODEL_ARCH.PHI2, False, ("gelu_new", "gelu_pytorch_tanh")))  # ggml_gelu: tanh
TEXT_ARCHS.register("stablelm")(TextArch(gguf.MODEL_ARCH.STABLELM, False, ("silu",)))


def write(model, scheme, out_dir: Path) -> dict:
    """Write `model-<quant>.gguf` + `mmproj-<quant>.gguf` into `out_dir`; return the manifest's runtime fields."""
    q = QUANTS[scheme.name]
    check_exportable(model)
    text, mmproj = f"model-{scheme.name}.gguf", f"mmproj-{scheme.name}.gguf"
    if q.text_ftype == FT.MOSTLY_F16:
        write_text_model(model, out_dir / text, f16=True)
        fallbacks: list[dict] = []
    else:
        master = out_dir / f".{text}.f32"
        write_text_model(model, master, f16=False)
        fallbacks = quantize_text_model(master, out_dir / text, q.text_ftype)
        master.unlink()
    vision_types, vision_fallbacks = write_mmproj(model, out_dir / mmproj, q.vision)
    return {
        "text_model": text,
        "mmproj": mmproj,
        "architecture": TEXT_ARCHS[model.cfg.llm.arch].name,
        "projector_type": clip_projector(model.cfg).projector_type,
        "text_file_type": q.text_ftype.name,
        "tensor_types": {text: file_tensor_types(out_dir / text), mmproj: vision_types},
        "fallbacks": fallbacks + vision_fallbacks,
        "max_context": model.cfg.llm.max_position_embeddings,
    }


def check_exportable(model) -> None:
    """Refuse, in one line, a model llama.cpp cannot run (before anything is written)."""
    cfg = model.cfg
    if cfg.llm.arch not in TEXT_ARCHS:
        raise EdgeVLMError(f"GGUF export writes LLM architectures {', '.join(TEXT_ARCHS)}; "
                           f"this model's is {cfg.llm.arch!r}")
    spec, hf = TEXT_ARCHS[cfg.llm.arch], model.llm.config
    arch_spec(hf, cfg.llm.arch)  # what the export decoder refuses (qk norms, sliding windows) llama.cpp gets wrong too
    if hf.hidden_act not in spec.activations:
        raise EdgeVLMError(f"llama.cpp's {spec.name} graph computes {' / '.join(spec.activations)}, this model's "
                           f"FFN uses {hf.hidden_act!r}")
    if cfg.moe.num_experts and not spec.moe:
        raise EdgeVLMError(f"llama.cpp has no MoE graph with a {cfg.llm.arch} layer (its MoE architectures use "
                           f"RMSNorm or unnormalised top-k); export this MoE model to onnx, executorch or coreml")
    if cfg.moe.num_experts and cfg.moe.top_k < 2:
        raise EdgeVLMError("llama.cpp renormalises top-1 routing weights to 1, MoE-LLaVA's top-1 keeps the "
                           "probability; export this top-1 MoE model to onnx, executorch or coreml")
    clip_projector(cfg)


# ---- the text model ---------------------------------------------------------------------------------------------
def text_tensors(model) -> dict[str, np.ndarray]:
    """llama.cpp name → float32 array, q/k permuted as convert_hf_to_gguf.py's LlamaModel does."""
    cfg = model.cfg.llm
    spec = TEXT_ARCHS[cfg.arch]
    names = gguf.get_tensor_name_map(spec.arch, cfg.num_layers)
    out = {}
    for key, t in unique_state(model.llm).items():
        if model.cfg.moe.num_experts and ".mlp." in key:
            continue  # every layer's FFN is written as experts, below
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise EdgeVLMError(f"LLM tensor {key!r} has no llama.cpp name")
        data = t.float().numpy()
        if spec.permute_qk and key.endswith("q_proj.weight"):
            data = rotary_permute(data, cfg.num_heads)
        elif spec.permute_qk and key.endswith("k_proj.weight"):
            data = rotary_permute(data, cfg.num_kv_heads)
        out[name] = data
    if model.cfg.moe.num_experts:
        out.update(expert_tensors(model.llm, model.cfg.moe.num_experts))
    return out


def expert_tensors(llm, num_experts: int) -> dict[str, np.ndarray]:
    """Each layer's router (E, D) and stacked SwiGLU experts (E, F, D) / (E, D, F), Mixtral's layout in llama.cpp;
    a dense layer as `num_experts` copies of its FFN behind a zero router (see the module docstring)."""
    T, out = gguf.MODEL_TENSOR, {}
    for i, layer in enumerate(decoder_layers(llm)):
        mlp = layer.mlp
        experts = list(mlp.experts) if isinstance(mlp, MoE) else [mlp] * num_experts
        router = mlp.deepspeed_moe.gate.wg.weight if isinstance(mlp, MoE) else \
            torch.zeros(num_experts, llm.config.hidden_size)
        out[gguf.TENSOR_NAMES[T.FFN_GATE_INP].format(bid=i) + ".weight"] = router.detach().float().numpy()
        for proj, tensor in (("gate_proj", T.FFN_GATE_EXP), ("up_proj", T.FFN_UP_EXP), ("down_proj", T.FFN_DOWN_EXP)):
            stacked = torch.stack([getattr(e, proj).weight.detach().float() for e in experts])  # (E, out, in)
            out[gguf.TENSOR_NAMES[tensor].format(bid=i) + ".weight"] = stacked.numpy()
    return out


def rotary_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' rotate-half rotary layout → llama.cpp's interleaved pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_text_model(model, path: Path, f16: bool) -> None:
    cfg, spec = model.cfg.llm, TEXT_ARCHS[model.cfg.llm.arch]
    w = gguf.GGUFWriter(str(path), spec.name)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"edgevlm {model.cfg.family} LM")
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    if spec.rms_norm:
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    else:
        w.add_layer_norm_eps(cfg.rms_norm_eps)
    hd = head_dim(model.llm.config)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(rotary_dims(model.llm.config))
    if model.cfg.moe.num_experts:
        w.add_expert_count(model.cfg.moe.num_experts)
        w.add_expert_used_count(model.cfg.moe.top_k)
    w.add_file_type(FT.MOSTLY_F16 if f16 else FT.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_tokenizer(w, model.tokenizer, cfg.vocab_size, model.template.chat_template())
    for name, data in text_tensors(model).items():
        matrix = data.ndim >= 2 and not name.endswith(("_norm.weight", "ffn_gate_inp.weight"))  # router: F32
        qtype = F16 if f16 and matrix else F32
        w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_tokenizer(w: gguf.GGUFWriter, tok: TextTokenizer, vocab_size: int, chat_template: str) -> None:
    """Byte-level BPE as llama.cpp's `gpt2` tokenizer model (what convert_hf_to_gguf.py's _set_vocab_gpt2 writes)."""
    spec = json.loads(tok.tok.to_str())
    if spec["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise EdgeVLMError("GGUF export writes byte-level BPE tokenizers only")
    by_id = {i: t for t, i in tok.tok.get_vocab(with_added_tokens=True).items()}
    special = {a["id"] for a in spec["added_tokens"] if a["special"]}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    types = [gguf.TokenType.CONTROL if i in special else
             gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(chat_template)


# ---- quantization by llama.cpp ----------------------------------------------------------------------------------
_FALLBACK = re.compile(r"warning: (\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\)"
                       r".*?-> falling back to\s+(\S+)", re.S)


def quantize_text_model(src: Path, dst: Path, ftype: FT, threads: int = 0) -> list[dict]:
    """llama.cpp's quantizer on `src` → `dst`; returns the per-tensor fallbacks it logged."""
    import llama_cpp

    from edgevlm.runtimes.llamacpp import llama_log

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = threads
    with llama_log() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise EdgeVLMError(f"llama.cpp's quantizer failed ({log.last_error() or f'code {rc}'})", dst)
    return [{"file": dst.name, "tensor": m[0], "wanted": m[3].upper(), "got": m[4].upper(),
             "reason": f"{m[1]} columns not divisible by {m[2]}"} for m in _FALLBACK.findall(log.text(warnings=True))]


def file_tensor_types(path: Path) -> dict[str, str]:
    """Tensor name → GGML type, as written in a GGUF file."""
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
