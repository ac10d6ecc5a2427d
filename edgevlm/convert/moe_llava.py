"""MoE-LLaVA checkpoints (PKU-YuanGroup/MoE-LLaVA, e.g. LanguageBind/MoE-LLaVA-StableLM-1.6B-4e, -Phi2-2.7B-4e).

config.json: the LM's config with `model_type` `moe_llava_<lm>` (`stablelm` is Stability's remote-code
"StableLM Epoch" config: `rope_pct`, `norm_eps`, `use_qkv_bias`), the LLaVA keys `mm_image_tower`,
`image_projector_type` (`mlp2x_gelu`), `mm_vision_select_layer`, `mm_vision_select_feature` (`patch`), and a
`moe` dict: `moe_layers_idx` (MoE-LLaVA's "sparse" mode: layers 0, 2, 4, …), `num_experts` (one count per MoE
layer), `top_k_experts`, `router_aux_loss_coef`, `use_residual`, and DeepSpeed's capacity settings.
Tensors: the LM's `model.*` / `lm_head.*`, where an MoE layer's FFN is DeepSpeed-MoE's
`model.layers.{i}.mlp.deepspeed_moe.gate.wg.weight` and `...deepspeed_moe.experts.deepspeed_experts.{e}.*`
(the names `edgevlm.models.moe` keeps), `model.mm_projector.image_spatial_proj.{0,2}.*`, and the tower as
`model.image_tower.image_tower.vision_model.*` (no `vision_model.` when transformers 5 saved it; or from the
local dir `mm_image_tower` / --vision-tower names).

Not carried over, by design, so converted outputs are upstream's only up to these two (edgevlm.models.moe):
- Upstream's second expert is random at inference too: DeepSpeed's top-2 gate adds Gumbel noise to the router
  logits before picking it (`top2_2nd_expert_sampling`, on by default), so upstream disagrees with itself across
  seeds (~18 % of argmax positions in one measurement). edgevlm takes the two most probable experts.
- DeepSpeed gives each expert room for `eval_capacity_factor` (`capacity_factor` in training) x 2 x tokens /
  experts tokens (at least `min_capacity`) and drops the rest: a token gets nothing from an expert with no room
  for it (dropped by both, only its residual passes). At capacity 1.0 any imbalance drops tokens; edgevlm never
  drops one, which is what upstream computes whenever no expert overflows.
A Phi LM's `lm_head` has no bias here (MoELLaVAPhiForCausalLM): read as a zero bias. Refused with a reason:
residual MoE (`use_residual`), video towers, LMs edgevlm has no backbone for (Qwen-1 remote code, MiniCPM,
Mistral), MoE layers that are not every n-th layer from 0, and unequal expert counts.
"""

from __future__ import annotations

from pathlib import Path

from edgevlm.config import MoEConfig
from edgevlm.convert import Upstream, source
from edgevlm.convert import upstream as up
from edgevlm.errors import EdgeVLMError
from edgevlm.models.families import FAMILIES

LMS = {"moe_llava_stablelm": "stablelm", "moe_llava_phi": "phi", "moe_llava_llama": "llama",
       "moe_llava_qwen1_5": "qwen2"}
UNSUPPORTED = {"moe_llava_qwen": "Qwen-1 (remote code)", "moe_llava_minicpm": "MiniCPM",
               "moe_llava_mistral": "Mistral"}
# StableLM Epoch's remote-code config keys → transformers' StableLmConfig keys
STABLELM_EPOCH_KEYS = {"rope_pct": "partial_rotary_factor", "norm_eps": "layer_norm_eps"}
# The image tower and projector, as MoE-LLaVA's LlavaMetaModel names them.
TOWER = "model.image_tower.image_tower."
PROJECTOR = "model.mm_projector.image_spatial_proj."


@source("moe-llava")
class MoELLaVA:
    @staticmethod
    def detect(src: Path, cfg: dict) -> bool:
        return str(cfg.get("model_type", "")).startswith("moe_llava_")

    @staticmethod
    def read(src: Path, cfg: dict, vision_tower: Path | None) -> Upstream:
        path = src / "config.json"
        kind = cfg.get("model_type")
        if kind in UNSUPPORTED:
            raise EdgeVLMError(f"model_type {kind!r}: edgevlm has no {UNSUPPORTED[kind]} backbone", path)
        arch = LMS.get(kind)
        if arch is None:
            raise EdgeVLMError(f"model_type {kind!r} is not one of {', '.join(LMS)}", path)
        _check_multimodal(cfg, path)
        moe = moe_config(cfg, path)
        llm = up.llm_config(_lm_keys(cfg, arch), arch, path)
        if moe.num_experts and cfg["moe"]["moe_layers_idx"] != list(range(0, llm.num_layers, moe.every)):
            raise EdgeVLMError(f"moe_layers_idx {cfg['moe']['moe_layers_idx']} is not every n-th of the "
                               f"{llm.num_layers} layers from 0", path)
        tensors = up.read_tensors(src)
        # MoE-LLaVA's tower is LLaVA's under another name: re-key it so the shared LLaVA tower reader applies
        tensors.update({up.LLAVA_TOWER + k: v for k, v in up.take(tensors, TOWER).items()})
        llava_cfg = {**cfg, "mm_vision_tower": cfg.get("mm_image_tower") or cfg.get("mm_vision_tower")}
        vision, tower = up.llava_tower(src, llava_cfg, tensors, vision_tower,
                                       feature_layer=cfg.get("mm_vision_select_layer", -2))
        weights = up.weight_files(src)[0]
        rules = [(PROJECTOR, "projector.mlp."), ("model.", "llm.model."), ("lm_head.", "llm.lm_head.")]
        tensors = up.rename(up.zero_head_bias(tensors, llm), rules, weights)
        vlm = FAMILIES["moe-llava"].config(vision, llm, moe=moe)
        return Upstream(vlm, {**tensors, **tower}, _tokenizer(src, llm.vocab_size), weights)


def moe_config(cfg: dict, path: Path) -> MoEConfig:
    """config.json's `moe` dict → MoEConfig (every layer the same experts; layers every n-th from 0)."""
    moe = cfg.get("moe")
    if not isinstance(moe, dict):
        raise EdgeVLMError("a MoE-LLaVA config.json needs a `moe` dict", path)
    if moe.get("use_residual"):
        raise EdgeVLMError("residual MoE (moe.use_residual) is not supported", path)
    layers, counts = moe.get("moe_layers_idx"), moe.get("num_experts")
    if not isinstance(layers, list) or not layers or any(not isinstance(i, int) for i in layers):
        raise EdgeVLMError("moe.moe_layers_idx must list the MoE layers' indices", path)
    counts = [counts] * len(layers) if isinstance(counts, int) else counts
    if not isinstance(counts, list) or len(counts) != len(layers) or len(set(counts)) != 1:
        raise EdgeVLMError(f"moe.num_experts must give every one of the {len(layers)} MoE layers the same "
                           f"count, got {moe.get('num_experts')}", path)
    every = layers[1] - layers[0] if len(layers) > 1 else max(cfg.get("num_hidden_layers", 1), 1)
    if layers[0] != 0 or every < 1:
        raise EdgeVLMError(f"moe.moe_layers_idx {layers} is not every n-th layer from 0", path)
    try:
        return MoEConfig(num_experts=int(counts[0]), top_k=int(moe.get("top_k_experts", 2)),
                         aux_loss_coef=float(moe.get("router_aux_loss_coef", 0.01)), every=every)
    except (TypeError, ValueError) as e:
        raise EdgeVLMError(f"invalid moe settings ({e})", path) from None


def _check_multimodal(cfg: dict, path: Path) -> None:
    projector = cfg.get("image_projector_type") or cfg.get("mm_projector_type") or "mlp2x_gelu"
    if projector != "mlp2x_gelu":
        raise EdgeVLMError(f"image_projector_type {projector!r} is not supported (mlp2x_gelu)", path)
    if cfg.get("mm_video_tower"):
        raise EdgeVLMError("video towers (mm_video_tower) are not supported", path)
    if cfg.get("mm_vision_select_feature", "patch") != "patch":
        raise EdgeVLMError(f"mm_vision_select_feature {cfg['mm_vision_select_feature']!r} is not supported "
                           f"(patch)", path)


def _lm_keys(cfg: dict, arch: str) -> dict:
    """The LM's own config keys (StableLM Epoch's renamed to transformers' StableLm names)."""
    lm = {k: v for k, v in cfg.items() if k != "moe" and not k.startswith(("mm_", "image_", "video_"))}
    if arch == "stablelm":
        for old, new in STABLELM_EPOCH_KEYS.items():
            if old in lm:
                lm[new] = lm.pop(old)
    return lm


def _tokenizer(src: Path, vocab_size: int):
    if not (src / "tokenizer.json").is_file() and (src / "arcade100k.tiktoken").is_file():
        raise EdgeVLMError("the tokenizer is arcade100k.tiktoken (remote code): put StableLM 2's tokenizer.json "
                           "(stabilityai/stablelm-2-1_6b) beside it", src)
    return up.read_tokenizer(src, vocab_size)
