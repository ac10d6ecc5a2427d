"""GGUF export for llama.cpp: the LLM as a text model, the vision tower + projector as an mmproj file.

llama.cpp splits a VLM in two GGUF files (format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
- `model-<quant>.gguf`: the causal LM as llama.cpp's `llama` architecture, written the way llama.cpp's
  convert_hf_to_gguf.py writes a transformers Llama: tensor names from the gguf package's name map, q/k rows
  permuted to llama.cpp's rotary layout, the same hyperparameter keys, the byte-level BPE tokenizer as
  `gpt2` / `gpt-2`, plus `add_bos_token` and our prompt template as `tokenizer.chat_template`. Quantized
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

from edgevlm.data.tokenizer import TextTokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.export.gguf_vision import clip_projector, write_mmproj
from edgevlm.models.checkpoint import unique_state
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

# our LLMConfig.arch → the llama.cpp architecture written, and whether q/k get the rotary permutation
TEXT_ARCHS = {"llama": (gguf.MODEL_ARCH.LLAMA, True)}


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
        "architecture": TEXT_ARCHS[model.cfg.llm.arch][0].name.lower(),
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
        raise EdgeVLMError(f"GGUF export writes LLM architectures {', '.join(sorted(TEXT_ARCHS))}; "
                           f"this model's is {cfg.llm.arch!r}")
    if cfg.moe.num_experts:
        raise EdgeVLMError("GGUF export does not write MoE LLMs yet")
    clip_projector(cfg)


# ---- the text model ---------------------------------------------------------------------------------------------
def text_tensors(model) -> dict[str, np.ndarray]:
    """llama.cpp name → float32 array, q/k permuted as convert_hf_to_gguf.py's LlamaModel does."""
    cfg = model.cfg.llm
    arch, permute = TEXT_ARCHS[cfg.arch]
    names = gguf.get_tensor_name_map(arch, cfg.num_layers)
    out = {}
    for key, t in unique_state(model.llm).items():
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise EdgeVLMError(f"LLM tensor {key!r} has no llama.cpp name")
        data = t.float().numpy()
        if permute and key.endswith("q_proj.weight"):
            data = rotary_permute(data, cfg.num_heads)
        elif permute and key.endswith("k_proj.weight"):
            data = rotary_permute(data, cfg.num_kv_heads)
        out[name] = data
    return out


def rotary_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' rotate-half rotary layout → llama.cpp's interleaved pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_text_model(model, path: Path, f16: bool) -> None:
    cfg = model.cfg.llm
    w = gguf.GGUFWriter(str(path), TEXT_ARCHS[cfg.arch][0].name.lower())
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"edgevlm {model.cfg.family} LM")
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    head_dim = cfg.hidden_size // cfg.num_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(FT.MOSTLY_F16 if f16 else FT.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_tokenizer(w, model.tokenizer, cfg.vocab_size, model.template.chat_template())
    for name, data in text_tensors(model).items():
        matrix = data.ndim >= 2 and not name.endswith("_norm.weight")
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
