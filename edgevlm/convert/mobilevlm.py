"""MobileVLM / MobileVLM V2 checkpoints (Meituan-AutoML/MobileVLM, e.g. mtgv/MobileVLM_V2-1.7B).

config.json: a Llama config with `model_type: mobilevlm`, `mm_projector_type` (`ldpnet` → LDP, `ldpnetv2` →
LDPv2), `mm_vision_tower` (a hub id or a local CLIP dir), `mm_vision_select_layer`, `mm_vision_select_feature`.
Tensors: `model.*` / `lm_head.*` (MobileLLaMA), `model.mm_projector.model.*` (LDP, wrapped in `LDPNetProjector`)
or `model.mm_projector.*` (LDPv2: `mlp.mlp.*`, `peg.peg.*`), and the CLIP tower under
`model.vision_tower.vision_tower.*` when the checkpoint carries it (V2 does). LDPv2 pools to 12 x 12 whatever
the tower's grid, as upstream's TokenDownLayer does (a 224-px tower too; llama.cpp's graph only runs 24 x 24).
"""

from __future__ import annotations

from pathlib import Path

from edgevlm.config import ProjectorConfig
from edgevlm.convert import Upstream, source
from edgevlm.convert import upstream as up
from edgevlm.errors import EdgeVLMError
from edgevlm.models.families import FAMILIES

PROJECTORS = {"ldpnet": ("ldp", "model.mm_projector.model."), "ldpnetv2": ("ldpv2", "model.mm_projector.")}


@source("mobilevlm")
class MobileVLM:
    @staticmethod
    def detect(src: Path, cfg: dict) -> bool:
        return cfg.get("model_type") == "mobilevlm"

    @staticmethod
    def read(src: Path, cfg: dict, vision_tower: Path | None) -> Upstream:
        path = src / "config.json"
        kind = cfg.get("mm_projector_type")
        if kind not in PROJECTORS:
            raise EdgeVLMError(f"mm_projector_type {kind!r} is not one of {', '.join(PROJECTORS)}", path)
        if cfg.get("mm_vision_select_feature", "patch") != "patch":
            raise EdgeVLMError(f"mm_vision_select_feature {cfg['mm_vision_select_feature']!r} is not supported", path)
        projector, prefix = PROJECTORS[kind]
        llm = up.llm_config(cfg, "llama", path)
        tensors = up.read_tensors(src)
        vision, tower = up.llava_tower(src, cfg, tensors, vision_tower,
                                       feature_layer=cfg.get("mm_vision_select_layer", -2))
        tensors = up.rename(tensors, [(prefix, "projector."), ("model.", "llm.model."), ("lm_head.", "llm.lm_head.")],
                            up.weight_files(src)[0])
        vlm = FAMILIES["mobilevlm"].config(vision, llm, ProjectorConfig(kind=projector))
        return Upstream(vlm, {**tensors, **tower}, up.read_tokenizer(src, llm.vocab_size), up.weight_files(src)[0])
