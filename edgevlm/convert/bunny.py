"""Bunny checkpoints (BAAI-DCAI/Bunny, e.g. BAAI/Bunny-v1_0-3B, Bunny-v1_0-4B).

config.json: the LM's config with `model_type` `bunny-<lm>` (`bunny-phi`, `bunny-phi3`, `bunny-stablelm`,
`bunny-qwen2`, `bunny-llama`), `mm_projector_type` (`mlp2x_gelu`), `mm_vision_tower` (SigLIP-so400m; its
features are hidden_states[-2], all 729 patches). Tensors: the LM's `model.*` / `lm_head.*` (BunnyPhiForCausalLM's
head has no bias: read as a zero bias), `model.mm_projector.{0,2}.*`, `model.vision_tower.vision_tower.vision_model.*`
(without `vision_model.` when transformers 5 saved it).
"""

from __future__ import annotations

from pathlib import Path

from edgevlm.convert import Upstream, source
from edgevlm.convert import upstream as up
from edgevlm.errors import EdgeVLMError
from edgevlm.models.families import FAMILIES

LMS = {"bunny-phi": "phi", "bunny-phi3": "phi3", "bunny-stablelm": "stablelm", "bunny-qwen2": "qwen2",
       "bunny-llama": "llama"}


@source("bunny")
class Bunny:
    @staticmethod
    def detect(src: Path, cfg: dict) -> bool:
        return str(cfg.get("model_type", "")).startswith("bunny-")

    @staticmethod
    def read(src: Path, cfg: dict, vision_tower: Path | None) -> Upstream:
        path = src / "config.json"
        arch = LMS.get(cfg.get("model_type"))
        if arch is None:
            raise EdgeVLMError(f"model_type {cfg.get('model_type')!r} is not one of {', '.join(LMS)}", path)
        if cfg.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
            raise EdgeVLMError(f"mm_projector_type {cfg['mm_projector_type']!r} is not supported", path)
        if cfg.get("use_s2"):
            raise EdgeVLMError("multi-scale (S2) towers are not supported", path)
        llm = up.llm_config(cfg, arch, path)
        tensors = up.read_tensors(src)
        vision, tower = up.llava_tower(src, cfg, tensors, vision_tower, feature_layer=-2)
        weights = up.weight_files(src)[0]
        rules = [("model.mm_projector.", "projector.mlp."), ("model.", "llm.model."), ("lm_head.", "llm.lm_head.")]
        tensors = up.rename(up.zero_head_bias(tensors, llm), rules, weights)
        vlm = FAMILIES["bunny"].config(vision, llm)
        return Upstream(vlm, {**tensors, **tower}, up.read_tokenizer(src, llm.vocab_size), weights)
