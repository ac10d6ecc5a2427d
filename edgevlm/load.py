"""Opening a `--model DIR`: an edgevlm model dir (with its LoRA adapter, if kept) or an upstream checkpoint.

The choice sits here, above models/, convert/ and train/, so that models/ stays the bare model and imports none
of them, and every caller that takes a model dir (the CLI, the trainer) opens it the same way.
"""

from __future__ import annotations

from pathlib import Path

from edgevlm.io import require_dir
from edgevlm.models.vlm import EdgeVLM, is_model_dir
from edgevlm.train import lora


def load_model(path: str | Path) -> EdgeVLM:
    """An edgevlm model dir, its `adapter/` applied when present; else an upstream checkpoint dir (MobileVLM,
    TinyLLaVA, Bunny, MoE-LLaVA), converted in memory. Eval mode.

    Raises:
        EdgeVLMError: naming config.json when the dir is neither, or the file at fault when reading fails.
    """
    path = require_dir(path, "model directory")
    if not is_model_dir(path):
        from edgevlm.convert import load  # the family modules load only when an upstream dir needs them

        return load(path)
    model = EdgeVLM.from_pretrained(path, base_of_adapter=True)
    if lora.has_adapter(path):
        model.llm = lora.load_adapter(model.llm, path)
    return model.eval()
