"""LLM backbones: transformers causal LMs built from our `LLMConfig`.

Using transformers' own classes keeps upstream tensor names (so checkpoints load as they are) and lets
peft's LoRA apply unchanged.
"""

from __future__ import annotations

from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PhiConfig,
    Phi3Config,
    PretrainedConfig,
    Qwen2Config,
    StableLmConfig,
)

from edgevlm.config import LLMConfig
from edgevlm.registry import Registry

LLM_ARCHS: Registry[type[PretrainedConfig]] = Registry("LLM architecture")
for _name, _cls in {"llama": LlamaConfig, "phi": PhiConfig, "phi3": Phi3Config, "stablelm": StableLmConfig,
                    "qwen2": Qwen2Config}.items():
    LLM_ARCHS.register(_name)(_cls)


ATTENTION = "sdpa"  # what towers and LLMs are built with (the trainer switches it while training on CPU)


def hf_config(cfg: LLMConfig) -> PretrainedConfig:
    kwargs = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        attn_implementation=ATTENTION,
    )
    if cfg.arch in ("phi", "stablelm"):
        kwargs["layer_norm_eps"] = cfg.rms_norm_eps
    else:
        kwargs["rms_norm_eps"] = cfg.rms_norm_eps
    return LLM_ARCHS[cfg.arch](**kwargs, **cfg.extra)


def build_llm(cfg: LLMConfig):
    return AutoModelForCausalLM.from_config(hf_config(cfg))
