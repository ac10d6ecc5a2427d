"""LoRA on the LLM through peft, and the two ways to save it (merged, or base + adapter).

A kept adapter lives in the model dir's `adapter/` beside the base weights; `edgevlm.load.load_model` applies it
when it opens the dir. Both halves live here so that models/ never needs to know about peft.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgevlm.errors import EdgeVLMError
from edgevlm.io import atomic_dir
from edgevlm.models.checkpoint import unique_state
from edgevlm.models.vlm import ADAPTER as ADAPTER_DIR
from edgevlm.models.vlm import EdgeVLM, write_model_dir

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "dense", "fc1", "fc2", "qkv_proj", "gate_up_proj"]


def add_lora(llm: nn.Module, r: int, alpha: int) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, m in llm.named_modules() if isinstance(m, nn.Linear)}
    targets = [t for t in LORA_TARGETS if t in names]
    return get_peft_model(llm, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets))


def is_lora(llm: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(llm, PeftModel)


def base(llm: nn.Module) -> nn.Module:
    """The causal LM under a peft wrapper (its layers carry the LoRA weights), or `llm` itself."""
    return llm.get_base_model() if is_lora(llm) else llm


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


def save_pretrained(model: EdgeVLM, out: str | Path) -> Path:
    """A model dir for `model`, whose LLM may carry LoRA: base weights under their plain names, plus `adapter/`."""
    if not is_lora(model.llm):
        return model.save_pretrained(out)
    with atomic_dir(out, "model") as tmp:
        write_model_dir(tmp, model, base_state(unique_state(model)))
        model.llm.save_pretrained(str(tmp / ADAPTER_DIR))
    return Path(out)


def has_adapter(model_dir: Path) -> bool:
    return (model_dir / ADAPTER_DIR).is_dir()


def load_adapter(llm: nn.Module, model_dir: Path) -> nn.Module:
    from peft import PeftModel

    try:  # peft raises whatever its config / safetensors readers meet; each means a damaged adapter dir
        return PeftModel.from_pretrained(llm, str(model_dir / ADAPTER_DIR))
    except Exception as e:
        raise EdgeVLMError(f"not a loadable LoRA adapter ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})", model_dir / ADAPTER_DIR) from None
