"""LoRA on the LLM through peft, and the two ways to save it (merged, or base + adapter)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "dense", "fc1", "fc2", "qkv_proj", "gate_up_proj"]
ADAPTER_DIR = "adapter"


def add_lora(llm: nn.Module, r: int, alpha: int) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, m in llm.named_modules() if isinstance(m, nn.Linear)}
    targets = [t for t in LORA_TARGETS if t in names]
    return get_peft_model(llm, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets))


def is_lora(llm: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(llm, PeftModel)


def merge(llm: nn.Module) -> nn.Module:
    return llm.merge_and_unload() if is_lora(llm) else llm


def base_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An EdgeVLM state dict with a peft-wrapped LLM → the same names as without LoRA, adapters dropped."""
    out = {}
    for k, v in state.items():
        if "lora_" in k:
            continue
        out[k.replace("llm.base_model.model.", "llm.").replace(".base_layer.", ".")] = v
    return out


def load_adapter(llm: nn.Module, model_dir: Path) -> nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(llm, str(model_dir / ADAPTER_DIR))
