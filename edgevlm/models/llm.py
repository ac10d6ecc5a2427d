"""LLM backbones: transformers causal LMs built from our `LLMConfig`.

Using transformers' own classes keeps upstream tensor names (so checkpoints load as they are) and lets
peft's LoRA apply unchanged.
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM, PretrainedConfig

from edgevlm.config import LLMConfig
from edgevlm.models.archs import ARCHS


ATTENTION = "sdpa"  # what towers and LLMs are built with (the trainer switches it while training on CPU)


def hf_config(cfg: LLMConfig) -> PretrainedConfig:
    arch = ARCHS[cfg.arch]
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
    kwargs[arch.norm.value] = cfg.rms_norm_eps  # LLMConfig.rms_norm_eps is the norm's epsilon, either kind
    return arch.hf_config(**kwargs, **cfg.extra)


def build_llm(cfg: LLMConfig):
    return AutoModelForCausalLM.from_config(hf_config(cfg))
