"""TinyLLaVA checkpoints: TinyLLaVA_Factory's layout (e.g. tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B) and the first,
LLaVA-style one (bczhou/TinyLLaVA-*, `model_type` `tiny_llava_<lm>`).

Factory config.json: `model_type: tinyllava`, `text_config` and `vision_config` (full transformers configs),
`connector_type` (`mlp2x_gelu`), `vision_feature_layer`, `vision_feature_select_strategy` (`patch` drops token 0,
for SigLIP too: 728 tokens). Tensors: `language_model.*`, `vision_tower._vision_tower.vision_model.*`
(`vision_tower._vision_tower.embeddings.*` … when transformers 5 saved it), `connector._connector.{0,2}.*`.
The LLaVA-style layout is MobileVLM's / Bunny's (`model.*`, `model.mm_projector.*`,
`model.vision_tower.vision_tower.*`); its SigLIP tower is stored without the last block, output taken.
"""

from __future__ import annotations

from pathlib import Path

from edgevlm.convert import Upstream, source
from edgevlm.convert import upstream as up
from edgevlm.errors import EdgeVLMError
from edgevlm.models.families import FAMILIES

LEGACY_LMS = {"tiny_llava_phi": "phi", "tiny_llava_stablelm": "stablelm", "tiny_llava_llama": "llama"}
FACTORY_LMS = {"phi": "phi", "llama": "llama", "stablelm": "stablelm", "qwen2": "qwen2"}
STRATEGIES = {"patch": True, "cls_patch": False}
FACTORY_TOWER = "vision_tower._vision_tower."


@source("tinyllava")
class TinyLLaVA:
    @staticmethod
    def detect(src: Path, cfg: dict) -> bool:
        return cfg.get("model_type") == "tinyllava" or cfg.get("model_type") in LEGACY_LMS

    @staticmethod
    def read(src: Path, cfg: dict, vision_tower: Path | None) -> Upstream:
        return (_factory if cfg.get("model_type") == "tinyllava" else _legacy)(src, cfg, vision_tower)


def _factory(src: Path, cfg: dict, vision_tower: Path | None) -> Upstream:
    path = src / "config.json"
    text, vis = cfg.get("text_config"), cfg.get("vision_config")
    if not isinstance(text, dict) or not isinstance(vis, dict):
        raise EdgeVLMError("a TinyLLaVA_Factory config.json needs text_config and vision_config", path)
    arch = FACTORY_LMS.get(text.get("model_type"))
    if arch is None:
        raise EdgeVLMError(f"text_config.model_type {text.get('model_type')!r} is not one of "
                           f"{', '.join(FACTORY_LMS)}", path)
    if cfg.get("connector_type") != "mlp2x_gelu":
        raise EdgeVLMError(f"connector_type {cfg.get('connector_type')!r} is not supported (mlp2x_gelu)", path)
    strategy = cfg.get("vision_feature_select_strategy", "patch")
    if strategy not in STRATEGIES:
        raise EdgeVLMError(f"vision_feature_select_strategy {strategy!r} is not one of {', '.join(STRATEGIES)}", path)
    llm = up.llm_config(text, arch, path)
    vision = up.vision_config(vis, path, feature_layer=cfg.get("vision_feature_layer", -2),
                              drop_first_token=STRATEGIES[strategy])
    weights = up.weight_files(src)[0]
    tensors = up.read_tensors(src)
    tower = up.tower_tensors(up.take(tensors, FACTORY_TOWER), weights)
    tensors = up.rename(tensors, [("language_model.", "llm."), ("connector._connector.", "projector.mlp.")], weights)
    tensors |= up.rename(tower, [("", "vision.tower.")], weights)
    vlm = FAMILIES["tinyllava"].config(vision, llm)
    return Upstream(vlm, tensors, up.read_tokenizer(src, llm.vocab_size), weights)


def _legacy(src: Path, cfg: dict, vision_tower: Path | None) -> Upstream:
    path = src / "config.json"
    if cfg.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise EdgeVLMError(f"mm_projector_type {cfg['mm_projector_type']!r} is not supported", path)
    llm = up.llm_config(cfg, LEGACY_LMS[cfg["model_type"]], path)
    tensors = up.read_tensors(src)
    vision, tower = up.llava_tower(src, cfg, tensors, vision_tower,
                                   feature_layer=cfg.get("mm_vision_select_layer", -2))
    weights = up.weight_files(src)[0]
    tensors = up.rename(tensors, [("model.mm_projector.", "projector.mlp."), ("model.", "llm.model."),
                                  ("lm_head.", "llm.lm_head.")], weights)
    vlm = FAMILIES["tinyllava"].config(vision, llm)
    return Upstream(vlm, {**tensors, **tower}, up.read_tokenizer(src, llm.vocab_size), weights)
