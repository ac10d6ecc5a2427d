"""GGUF export for llama.cpp: the LLM as a text model, the vision tower + projector as an mmproj file.

llama.cpp splits a VLM in two GGUF files (format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
- `model-<quant>.gguf`: the causal LM as the llama.cpp architecture its row of the architecture table names
  (edgevlm.models.archs: llama, phi2, stablelm, phi3, qwen2), written the way llama.cpp's convert_hf_to_gguf.py
  writes the transformers model (conversion/{llama,phi,stablelm,qwen}.py): tensor names from the gguf package's name map (Phi-3's fused
  qkv_proj / gate_up_proj stay fused: llama.cpp's phi3 graph splits them), q/k rows permuted to the rotary
  layout of llama.cpp's `llama` graph (the others rotate halves, as transformers does), the same hyperparameter
  keys (layer-norm or RMS-norm epsilon, rotary dims for partial rotary), the byte-level BPE tokenizer as
  `gpt2` / `gpt-2`, plus `add_bos_token` and our prompt template as `tokenizer.chat_template`.
  MoE-LLaVA LMs (edgevlm.models.moe) are written as the llama.cpp MoE graph their row's `GGUFSpec.moe` names,
  with `ffn_gate_inp` + stacked `ffn_{gate,up,down}_exps` (softmax, top-k renormalised: MoE-LLaVA's routing for
  k >= 2): a Llama body as Mixtral is (`llama`), a StableLM body as Phi-3.5-MoE is (`phimoe`). Both graphs are
  MoE in every layer or none, so each dense layer is written as E identical copies of its FFN behind an
  all-zero router: uniform gate, renormalised top-k weights summing to one, output exactly the dense FFN's (at
  E times that layer's FFN bytes on disk). phimoe's graph normalises with RMSNorm (+ bias) where StableLM has
  LayerNorm; the two agree on zero-mean input, and a pre-norm layer reads its residual stream only through
  norms (LayerNorm ignores the stream's mean), so every tensor that writes the stream (token embeddings,
  attention output, experts' down projections, and the mmproj's last linear layer for the image tokens) is
  written with its output mean subtracted: the same logits, computed by phimoe's graph. No llama.cpp MoE graph
  has Phi-2's layer (README: "GGUF: what llama.cpp cannot run"), so that is refused in one line. Quantized
  schemes are made by llama.cpp's own quantizer (`llama_model_quantize`, its standard Q8_0 / Q4_0 / Q4_K_M
  mixes) from a float32 file; each tensor it had to give another type because its rows do not fit the type's
  block (Q4_K needs rows that are a multiple of 256) is read from its log into the manifest. The accuracy guard
  (edgevlm/export/guard.py) keeps parts higher per tensor: the text parts through the quantizer's tensor-type
  overrides (`tt_overrides`, a name regex → type, as `llama-quantize --tensor-type` passes them) at Q8_0, the
  vision tower's mmproj matrices at F16; llama.cpp reads mixed-type files natively (Q4_K_M is one), so a guarded
  bundle runs in stock llama.cpp (`GGUFKeeper`).
- `mmproj-<quant>.gguf`: see edgevlm/export/gguf_vision.py.
"""

from __future__ import annotations

import ctypes
import json
import re
import tempfile
from pathlib import Path

import gguf
import numpy as np
import torch

from edgevlm.bundle.tokenizer import TextTokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.export.base import Exporter, Keeper
from edgevlm.export.decoder import arch_spec, head_dim, rotary_dims
from edgevlm.export.gguf_vision import clip_projector, write_mmproj
from edgevlm.models.archs import ARCHS, GGUFMoE, GGUFSpec, Norm
from edgevlm.models.checkpoint import ReleaseEvery, unique_state
from edgevlm.models.moe import MoE, decoder_layers
from edgevlm.quant.schemes import Scheme
from edgevlm.registry import Registry

F32, F16, Q8_0 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0
FT = gguf.LlamaFileType


# the format's quantizers, by the names the `gguf` rows of quant/schemes.py give: for the text model (token
# embedding and decoder, one file) a llama.cpp file type (anything but F16 goes through llama_model_quantize),
# for the mmproj (vision encoder) the type of its weight matrices
TEXT_FILE_TYPES: Registry[FT] = Registry("GGUF text model file type")
for _ft in (FT.MOSTLY_F16, FT.MOSTLY_Q8_0, FT.MOSTLY_Q4_0, FT.MOSTLY_Q4_K_M):
    TEXT_FILE_TYPES.register(_ft.name)(_ft)
MMPROJ_TYPES: Registry[gguf.GGMLQuantizationType] = Registry("GGUF mmproj tensor type")
for _t in (F16, Q8_0):
    MMPROJ_TYPES.register(_t.name)(_t)
LLAMA_CPP_ARCHS = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}  # architecture name → enum


def gguf_spec(arch: str) -> GGUFSpec:
    """How the architecture table's row `arch` is written for llama.cpp; refused if no llama.cpp graph has it."""
    spec = ARCHS[arch].gguf
    if spec is None:
        raise EdgeVLMError(f"GGUF export writes LLM architectures {', '.join(a for a in ARCHS if ARCHS[a].gguf)}; "
                           f"llama.cpp has no graph for {arch!r}")
    return spec


def moe_graph(model) -> GGUFMoE | None:
    """The llama.cpp MoE graph `model`'s LM is written as; None for a dense LM; refused where there is none."""
    arch = model.cfg.llm.arch
    if not model.cfg.moe.num_experts:
        return None
    moe = gguf_spec(arch).moe
    if moe is None:
        raise EdgeVLMError(f"llama.cpp has no MoE graph with a {arch} layer (README: \"GGUF: what llama.cpp "
                           f"cannot run\"); export this MoE model to onnx, executorch or coreml")
    return moe


def llama_cpp_arch(model) -> str:
    """The llama.cpp architecture of `model`'s text GGUF."""
    moe = moe_graph(model)
    return moe.arch if moe else gguf_spec(model.cfg.llm.arch).arch


def write(model, scheme: Scheme, out_dir: Path, keep: frozenset[str] = frozenset()) -> dict:
    """Write `model-<quant>.gguf` + `mmproj-<quant>.gguf` into `out_dir`; return the manifest's runtime fields.
    `keep`: guard parts (`GGUFKeeper.parts`) written at `TEXT_KEPT` / `MMPROJ_KEPT` instead of the scheme's type."""
    text_ftype = TEXT_FILE_TYPES[scheme.text_decoder.mechanism]
    vision_type = MMPROJ_KEPT if "vision_encoder" in keep else MMPROJ_TYPES[scheme.vision_encoder.mechanism]
    check_exportable(model)
    text, mmproj = f"model-{scheme.name}.gguf", f"mmproj-{scheme.name}.gguf"
    moe = moe_graph(model)
    vision_types, vision_fallbacks = write_mmproj(model, out_dir / mmproj, vision_type,
                                                  center_output=bool(moe and moe.layer_norm_as_rms))
    if text_ftype == FT.MOSTLY_F16:
        write_text_model(model, out_dir / text, f16=True)
        fallbacks: list[dict] = []
    else:
        master = out_dir / f".{text}.f32"
        write_text_model(model, master, f16=False)
        model.page_out_weights()  # the quantizer maps the float32 master: the model's weights need not stay too
        patterns = part_patterns(model.cfg.llm.num_layers)
        fallbacks = quantize_text_model(master, out_dir / text, text_ftype,
                                        overrides={patterns[p]: TEXT_KEPT for p in sorted(keep) if p in patterns})
        master.unlink()
    return {
        "text_model": text,
        "mmproj": mmproj,
        "architecture": llama_cpp_arch(model),
        "projector_type": clip_projector(model.cfg).projector_type,
        "text_file_type": text_ftype.name,
        "tensor_types": {text: file_tensor_types(out_dir / text), mmproj: vision_types},
        "fallbacks": fallbacks + vision_fallbacks,
        "max_context": model.cfg.llm.max_position_embeddings,
    }


def check_exportable(model) -> None:
    """Refuse, in one line, a model llama.cpp cannot run (before anything is written)."""
    cfg = model.cfg
    spec, hf = gguf_spec(cfg.llm.arch), model.llm.config
    arch_spec(hf, cfg.llm.arch)  # what the export decoder refuses (qk norms, sliding windows) llama.cpp gets wrong too
    if hf.hidden_act not in spec.activations:
        raise EdgeVLMError(f"llama.cpp's {spec.arch} graph computes {' / '.join(spec.activations)}, this model's "
                           f"FFN uses {hf.hidden_act!r}")
    moe = moe_graph(model)
    if moe and cfg.moe.top_k < 2:
        raise EdgeVLMError("llama.cpp renormalises top-1 routing weights to 1, MoE-LLaVA's top-1 keeps the "
                           "probability; export this top-1 MoE model to onnx, executorch or coreml")
    if moe and ARCHS[cfg.llm.arch].decoder.parallel(hf) != moe.parallel_residual:
        raise EdgeVLMError(f"llama.cpp's {moe.arch} graph runs attention and FFN "
                           f"{'in parallel' if moe.parallel_residual else 'one after the other'}, this {cfg.llm.arch} "
                           f"model does not; export this MoE model to onnx, executorch or coreml")
    if moe and any(".mlp." in key and key.endswith(".bias") for key in model.llm.state_dict()):
        raise EdgeVLMError(f"llama.cpp's {moe.arch} graph has bias-free experts, this model's FFN has biases; "
                           f"export this MoE model to onnx, executorch or coreml")
    proj = clip_projector(cfg)
    if moe and moe.layer_norm_as_rms and proj.output is None:
        raise EdgeVLMError(f"llama.cpp's {moe.arch} graph needs zero-mean image embeddings, and the "
                           f"{proj.projector_type} projector does not end in a linear layer that can be centred")


# ---- the text model ---------------------------------------------------------------------------------------------
def text_tensors(model) -> dict[str, np.ndarray]:
    """llama.cpp name → float32 array, q/k permuted as convert_hf_to_gguf.py's LlamaModel does."""
    cfg = model.cfg.llm
    spec, moe = gguf_spec(cfg.arch), moe_graph(model)
    names = gguf.get_tensor_name_map(LLAMA_CPP_ARCHS[llama_cpp_arch(model)], cfg.num_layers)
    out = {}
    for key, t in unique_state(model.llm).items():
        if model.cfg.moe.num_experts and ".mlp." in key:
            continue  # every layer's FFN is written as experts, below
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise EdgeVLMError(f"LLM tensor {key!r} has no llama.cpp name")
        data = t.float().numpy()
        if spec.permute_qk and key.endswith(("q_proj.weight", "q_proj.bias")):
            data = rotary_permute(data, cfg.num_heads)
        elif spec.permute_qk and key.endswith(("k_proj.weight", "k_proj.bias")):
            data = rotary_permute(data, cfg.num_kv_heads)
        out[name] = data
    if moe:
        out.update(expert_tensors(model.llm, model.cfg.moe.num_experts))
        out = fit_moe_graph(out, moe)
    return out


# tensors that write the residual stream → the axis of their output features (torch layout: (out, in))
RESIDUAL_WRITERS = {"token_embd.weight": -1, "attn_output.weight": -2, "attn_output.bias": -1,
                    "ffn_down_exps.weight": -2}


def fit_moe_graph(tensors: dict[str, np.ndarray], moe: GGUFMoE) -> dict[str, np.ndarray]:
    """What `moe`'s graph needs beyond the names: for an RMSNorm graph running our LayerNorm, a zero-mean
    residual stream (see the module docstring), and the zero biases it requires."""
    if moe.layer_norm_as_rms:
        tensors.setdefault("output.weight", tensors["token_embd.weight"])  # a tied head is not centred
        for name, data in tensors.items():
            axis = RESIDUAL_WRITERS.get(_per_layer(name))
            if axis is not None:
                tensors[name] = data - data.mean(axis=axis, keepdims=True)
    for name in [n for n in tensors if _per_layer(n) in {f"{b}.weight" for b in moe.zero_biases}]:
        tensors.setdefault(name.removesuffix("weight") + "bias", np.zeros(tensors[name].shape[0], np.float32))
    return tensors


def _per_layer(name: str) -> str:
    """`blk.3.attn_output.weight` → `attn_output.weight`; names outside the blocks unchanged."""
    return name.split(".", 2)[-1] if name.startswith("blk.") else name


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
    """The LM as a float32 (or, `f16`, float16-matrix) GGUF, written tensor by tensor: beside the model, the
    write holds one converted tensor and at most `ReleaseEvery`'s bytes of mapped weights."""
    cfg, row, moe = model.cfg.llm, ARCHS[model.cfg.llm.arch], moe_graph(model)
    w = gguf.GGUFWriter(str(path), llama_cpp_arch(model))
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"edgevlm {model.cfg.family} LM")
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    if row.norm is Norm.RMS or (moe and moe.layer_norm_as_rms):
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    else:
        w.add_layer_norm_eps(cfg.rms_norm_eps)
    hd = head_dim(model.llm.config)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(rotary_dims(model.llm.config))
    if moe:
        w.add_expert_count(model.cfg.moe.num_experts)
        w.add_expert_used_count(model.cfg.moe.top_k)
    w.add_file_type(FT.MOSTLY_F16 if f16 else FT.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_tokenizer(w, model.tokenizer, cfg.vocab_size, model.template.chat_template())
    tensors, types = text_tensors(model), {}
    for name, data in tensors.items():
        matrix = data.ndim >= 2 and not name.endswith(("_norm.weight", "ffn_gate_inp.weight"))  # router: F32
        types[name] = qtype = F16 if f16 and matrix else F32
        width = np.dtype(np.float16 if qtype == F16 else np.float32)
        w.add_tensor_info(name, data.shape, width, data.size * width.itemsize, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    releaser = ReleaseEvery(model.page_out_weights)  # the weights written so far are not read again here
    for name in list(tensors):  # one at a time, each dropped once written
        data = gguf.quants.quantize(tensors.pop(name), types[name])
        w.write_tensor_data(data)
        releaser.count(data.nbytes)
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


def quantize_text_model(src: Path, dst: Path, ftype: FT, threads: int = 0,
                        overrides: dict[str, gguf.GGMLQuantizationType] | None = None) -> list[dict]:
    """llama.cpp's quantizer on `src` → `dst`; returns the per-tensor fallbacks it logged.

    `overrides`: tensor-name regex → the type every matching weight matrix gets instead of the mix's (llama.cpp
    applies the first match, to tensors it quantizes at all: norms and MoE routers stay F32)."""
    import llama_cpp

    from edgevlm.engines.llamacpp import llama_log

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = threads
    if overrides:  # a NULL-terminated array of {pattern, type}; kept referenced until the call returns
        table = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for entry, (pattern, qtype) in zip(table, overrides.items()):
            entry.pattern, entry.type = pattern.encode(), int(qtype)
        params.tt_overrides = ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    with llama_log() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise EdgeVLMError(f"llama.cpp's quantizer failed ({log.last_error() or f'code {rc}'})", dst)
    return [{"file": dst.name, "tensor": m[0], "wanted": m[3].upper(), "got": m[4].upper(),
             "reason": f"{m[1]} columns not divisible by {m[2]}"} for m in _FALLBACK.findall(log.text(warnings=True))]


def file_tensor_types(path: Path) -> dict[str, str]:
    """Tensor name → GGML type, as written in a GGUF file."""
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


# ---- the accuracy guard (export.guard): parts kept at a higher type, per tensor ---------------------------------
TEXT_KEPT, MMPROJ_KEPT = Q8_0, F16  # a kept text part's weight matrices; a kept vision tower's (mmproj) matrices


def part_patterns(num_layers: int) -> dict[str, str]:
    """Text guard parts → the regex of their tensors' names in the text GGUF (a llama.cpp tensor-type override)."""
    last = num_layers - 1
    patterns = {"token_embedding": r"^token_embd\.weight$", "lm_head": r"^output\.weight$",
                "first_layer": r"^blk\.0\."}
    if last > 1:
        patterns["middle_layers"] = rf"^blk\.({'|'.join(str(i) for i in range(1, last))})\."
    if last > 0:
        patterns["last_layer"] = rf"^blk\.{last}\."
    return patterns


def bits(type_name: str) -> float:
    """Bits per weight of a GGML type (Q8_0: 8.5, Q6_K: 6.56, Q4_0: 4.5)."""
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    return 8 * size / block


def keepable_parts(model, scheme: Scheme, text_types: dict[str, str]) -> dict[str, str]:
    """Guard parts the scheme writes below their kept type → what they get kept. `text_types`: tensor → type of
    the unguarded text GGUF, where llama.cpp's mix and its fallbacks decided (an LM head it already gives Q8_0
    because its rows fit no k-quant is not offered)."""
    parts = {}
    if bits(MMPROJ_TYPES[scheme.vision_encoder.mechanism].name) < bits(MMPROJ_KEPT.name):
        parts["vision_encoder"] = f"{MMPROJ_KEPT.name} (mmproj weight matrices)"
    for part, pattern in part_patterns(model.cfg.llm.num_layers).items():
        if any(re.search(pattern, name) and bits(t) < bits(TEXT_KEPT.name) for name, t in text_types.items()):
            parts[part] = TEXT_KEPT.name
    return parts


class GGUFKeeper(Keeper):
    """Writes the unguarded bundle once, aside, to read which parts llama.cpp's mix left below `TEXT_KEPT`; each
    write quantizes with the kept parts' tensor-type overrides."""

    def __init__(self, model, scheme: Scheme):
        self.model, self.scheme = model, scheme
        with tempfile.TemporaryDirectory() as d:
            fields = write(model, scheme, Path(d))
        self.parts = keepable_parts(model, scheme, fields["tensor_types"][fields["text_model"]])

    def write(self, out_dir: Path, keep: frozenset[str]) -> dict:
        return write(self.model, self.scheme, out_dir, keep)


class GGUF(Exporter):
    guard_parts = ("vision_encoder", "token_embedding", "lm_head", "first_layer", "middle_layers", "last_layer")

    def write(self, model, scheme: Scheme, out_dir: Path) -> dict:
        return write(model, scheme, out_dir)

    def keeper(self, model, scheme: Scheme) -> Keeper:
        return GGUFKeeper(model, scheme)

    def mechanism(self, part: str, name: str):
        """The mmproj's tensor type for the vision encoder; the text model's file type for the other parts."""
        return (MMPROJ_TYPES if part == "vision_encoder" else TEXT_FILE_TYPES)[name]


EXPORTER = GGUF()
