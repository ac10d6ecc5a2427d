"""The mmproj GGUF: vision tower + projector in the layout of llama.cpp's multimodal library (tools/mtmd/clip.cpp).

Keys are clip.cpp's `clip.*` / `clip.vision.*`; tower tensors are named by the gguf package's own name map
(`v.patch_embd`, `v.blk.N.attn_q`, …, as convert_hf_to_gguf.py names them), projector tensors by the table
below (`mm.*`, following clip.cpp's loader and tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py).
Which graph runs is fixed by the projector type:
- `mlp`, `ldp`, `ldpv2` run clip.cpp's llava graph (tools/mtmd/models/llava.cpp): CLIP with its class token and
  pre-layernorm, dropped after the tower; `mlp` also after a SigLIP tower (no class token, no pre-layernorm,
  every patch kept: Bunny's 27 x 27 = 729 at 384 px). MobileVLM's LDP / LDPv2 graphs hard-code a 24 x 24 grid.
  TinyLLaVA-Factory's rule of dropping SigLIP's first patch (728 tokens) has no clip.cpp switch (the llava
  graph skips a row only for a class token, and no graph emits 27 x 27 - 1 tokens), so it is refused; the
  change llama.cpp would need is drafted in docs/upstream/llama-cpp-drop-first-patch.md.
- `idefics3` runs the SigLIP graph (no class token) and then pixel shuffle + one linear.
Only the tower blocks that LLaVA's feature layer uses are written, and no post-layernorm: the llava graph is
told the feature layer explicitly (`clip.vision.feature_layer`), the SigLIP graph runs every block it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from edgevlm.config import VisionKind, VLMConfig
from edgevlm.errors import EdgeVLMError
from edgevlm.registry import Registry

F32, F16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16

# CLIP / SigLIP `hidden_act` → clip.cpp's FFN switch (neither key set: quick GELU)
FFN_KEYS = {"quick_gelu": {}, "gelu": {"use_gelu": True}, "gelu_pytorch_tanh": {"use_gelu": True},
            "silu": {"use_silu": True}}


@dataclass(frozen=True)
class ClipProjector:
    """How one of our projectors is written for clip.cpp."""

    projector_type: str  # clip.projector_type
    towers: tuple[VisionKind, ...]  # the towers clip.cpp's graph for this type runs
    renames: tuple[tuple[str, str], ...]  # our state-dict prefix → clip.cpp tensor prefix
    grid: int | None = None  # the patch grid the graph hard-codes, if any
    output: str | None = None  # the clip.cpp name of the linear layer that makes the image tokens (None: the
    # graph ends otherwise); a text graph that needs zero-mean input embeddings gets it centred

    def tensor_name(self, key: str) -> str:
        for ours, theirs in self.renames:
            if key.startswith(ours):
                return theirs + key[len(ours):]
        raise EdgeVLMError(f"projector tensor {key!r} has no llama.cpp name")


CLIP_PROJECTORS: Registry[ClipProjector] = Registry("projector for llama.cpp (GGUF)")
CLIP_PROJECTORS.register("mlp2x_gelu")(ClipProjector("mlp", (VisionKind.CLIP, VisionKind.SIGLIP),
                                                     (("projector.mlp.", "mm."),), output="mm.2"))
CLIP_PROJECTORS.register("ldp")(ClipProjector("ldp", (VisionKind.CLIP,), (("projector.", "mm.model."),), grid=24))
CLIP_PROJECTORS.register("ldpv2")(ClipProjector(
    "ldpv2", (VisionKind.CLIP,), (("projector.mlp.mlp.", "mm.model.mlp."), ("projector.peg.peg.", "mm.model.peg.")),
    grid=24))
CLIP_PROJECTORS.register("pixel_shuffle")(ClipProjector(
    "idefics3", (VisionKind.SIGLIP,), (("projector.proj.", "mm.model.fc."),), output="mm.model.fc"))


def clip_projector(cfg: VLMConfig) -> ClipProjector:
    """The clip.cpp projector for `cfg`, or a one-line refusal saying what llama.cpp can run instead."""
    if cfg.projector.kind not in CLIP_PROJECTORS:
        raise EdgeVLMError(f"llama.cpp has no projector type for {cfg.projector.kind!r}; GGUF export supports "
                           f"projectors {', '.join(CLIP_PROJECTORS)} (or export to onnx / executorch / coreml)")
    proj = CLIP_PROJECTORS[cfg.projector.kind]
    if cfg.vision.kind not in proj.towers:
        raise EdgeVLMError(f"llama.cpp runs projector {cfg.projector.kind!r} ({proj.projector_type}) after a "
                           f"{' or '.join(t.value for t in proj.towers)} tower, this model's tower is "
                           f"{cfg.vision.kind.value}")
    if cfg.vision.drop_first_token != (cfg.vision.kind is VisionKind.CLIP):
        kept = "all patches" if cfg.vision.kind is VisionKind.SIGLIP else "the patches, not the class token"
        raise EdgeVLMError(f"llama.cpp hands the projector {kept} of a {cfg.vision.kind.value} tower; this model "
                           f"{'drops' if cfg.vision.drop_first_token else 'keeps'} the first token "
                           f"({cfg.vision.num_features} features; README: \"GGUF: what llama.cpp cannot run\"); "
                           f"export it to onnx, executorch or coreml")
    if proj.grid is not None and cfg.vision.grid != proj.grid:
        raise EdgeVLMError(f"llama.cpp's {proj.projector_type} graph needs a {proj.grid}x{proj.grid} patch grid, "
                           f"this tower has {cfg.vision.grid}x{cfg.vision.grid}")
    if cfg.vision.hidden_act not in FFN_KEYS:
        raise EdgeVLMError(f"llama.cpp's vision tower has no activation {cfg.vision.hidden_act!r}; "
                           f"known: {', '.join(sorted(FFN_KEYS))}")
    return proj


def vision_tensors(model, proj: ClipProjector, center_output: bool = False) -> dict[str, np.ndarray]:
    """clip.cpp name → float32 array, for the tower blocks in use and the projector; `center_output`: the
    projector's last linear layer with its output mean subtracted (image tokens of mean zero, for a text graph
    that runs LayerNorm as RMSNorm: edgevlm.export.gguf)."""
    cfg = model.cfg.vision
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, cfg.num_layers)
    out = {}
    for key, t in model.vision.tower.state_dict().items():
        if _unused(key, cfg.layers_used):
            continue
        name = names.get_name("vision_tower.vision_model." + key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise EdgeVLMError(f"vision tensor {key!r} has no llama.cpp name")
        out[name] = t.detach().float().numpy()
    for key, t in model.projector.state_dict().items():
        data = t.detach().float().numpy()
        if data.ndim == 4 and data.shape[2:] == (1, 1):  # a 1x1 convolution runs as a matrix product in clip.cpp
            data = data[:, :, 0, 0]
        out[proj.tensor_name("projector." + key)] = data
    if "v.class_embd" in out:
        out["v.class_embd"] = out["v.class_embd"].reshape(-1)
    if center_output:  # weight (D_llm, D_in) and bias (D_llm,): the output features are axis 0 of both
        for name in (f"{proj.output}.weight", f"{proj.output}.bias"):
            out[name] = out[name] - out[name].mean(axis=0, keepdims=True)
    return _fix_ffn_naming(out, cfg.hidden_size)


def _unused(key: str, layers_used: int) -> bool:
    if "post_layernorm" in key or key.endswith("position_ids"):
        return True
    if "encoder.layers." in key:
        return int(key.split("encoder.layers.")[1].split(".")[0]) >= layers_used
    return False


def _fix_ffn_naming(tensors: dict[str, np.ndarray], d: int) -> dict[str, np.ndarray]:
    """clip.cpp swaps ffn_up / ffn_down back when ffn_down's input width equals the model width (files from the
    legacy converter name them the other way round); with a square FFN that test misfires, so pre-swap."""
    for name in [n for n in tensors if ".ffn_up." in n]:
        down = name.replace(".ffn_up.", ".ffn_down.")
        if tensors[down.replace(".bias", ".weight")].shape[-1] == d:
            tensors[name], tensors[down] = tensors[down], tensors[name]
    return tensors


def write_mmproj(model, path: Path, quant: gguf.GGMLQuantizationType,
                 center_output: bool = False) -> tuple[dict[str, str], list[dict]]:
    """Write the mmproj for `model`; weight matrices get `quant` (F16 where their rows do not fit its block);
    `center_output`: see `vision_tensors`.

    Returns clip.cpp tensor name → GGML type written, and the fallbacks.
    """
    proj = clip_projector(model.cfg)
    w = gguf.GGUFWriter(str(path), "clip")
    _write_keys(w, model.cfg, proj, quant == F16)
    types, fallbacks = {}, []
    for name, data in vision_tensors(model, proj, center_output).items():
        qtype = _vision_type(name, data, quant)
        try:
            packed = gguf.quants.quantize(data, qtype)
        except gguf.QuantError:  # rows not a multiple of the block: llama.cpp's own fallback is F16
            fallbacks.append({"file": path.name, "tensor": name, "wanted": qtype.name, "got": "F16",
                              "reason": f"{data.shape[-1]} columns not divisible by {gguf.GGML_QUANT_SIZES[qtype][0]}"})
            qtype, packed = F16, gguf.quants.quantize(data, F16)
        w.add_tensor(name, packed, raw_dtype=qtype)
        types[name] = qtype.name
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types, fallbacks


def _vision_type(name: str, data: np.ndarray, quant: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """convert_hf_to_gguf.py's rule: vectors, norms and position embeddings F32; convolution kernels F16; the
    weight matrices `quant`."""
    if data.ndim <= 1 or "position_embd" in name or not name.endswith(".weight"):
        return F32
    if data.ndim > 2:
        return F16
    return quant


def _write_keys(w: gguf.GGUFWriter, cfg: VLMConfig, proj: ClipProjector, f16: bool) -> None:
    v = cfg.vision
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", proj.projector_type)
    for key, value in FFN_KEYS[v.hidden_act].items():
        w.add_bool(f"clip.{key}", value)
    w.add_uint32("clip.vision.image_size", v.image_size)
    w.add_uint32("clip.vision.patch_size", v.patch_size)
    w.add_uint32("clip.vision.embedding_length", v.hidden_size)
    w.add_uint32("clip.vision.feed_forward_length", v.intermediate_size)
    w.add_uint32("clip.vision.projection_dim", cfg.llm.hidden_size)
    w.add_uint32("clip.vision.block_count", v.layers_used)
    w.add_uint32("clip.vision.attention.head_count", v.num_heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", v.layer_norm_eps)
    w.add_array("clip.vision.image_mean", list(v.image_mean))
    w.add_array("clip.vision.image_std", list(v.image_std))
    if proj.projector_type != "idefics3":  # the llava graph
        # the llava graph otherwise runs block_count - 1 blocks; say outright that all written ones are used
        w.add_array("clip.vision.feature_layer", [v.layers_used])
    if proj.projector_type == "idefics3":
        w.add_uint32("clip.vision.projector.scale_factor", cfg.projector.shuffle_ratio)
        w.add_uint32("clip.vision.preproc_image_size", v.image_size)  # one tile: no slicing of our square images
