"""The manifest an exporter writes: the model's facts beside the files now in the bundle (docs/bundle-spec.md)."""

from __future__ import annotations

from pathlib import Path

import edgevlm
from edgevlm.bundle.manifest import SPEC_VERSION, file_entries
from edgevlm.bundle.template import IMAGE_PLACEHOLDER
from edgevlm.quant.schemes import Scheme


def build_manifest(model, fmt: str, scheme: Scheme, root: Path, runtime_fields: dict) -> dict:
    """The manifest for the files now under `root`, exported from `model` (an EdgeVLM)."""
    tpl, tok = model.template, model.tokenizer
    return {
        "spec_version": SPEC_VERSION,
        "edgevlm_version": edgevlm.__version__,
        "format": fmt,
        "quantization": scheme.to_dict(),
        "family": model.cfg.family,
        "model": {"projector": model.cfg.projector.kind, "llm_arch": model.cfg.llm.arch,
                  "moe_experts": model.cfg.moe.num_experts},
        "parameters": parameter_counts(model),
        "image": model.preprocess.to_dict(),
        "prompt": {
            "template": {"name": tpl.name, "system": tpl.system, "user": tpl.user, "assistant": tpl.assistant,
                         "answer_prefix": tpl.answer_prefix, "image_last": tpl.image_last},
            "image_placeholder": IMAGE_PLACEHOLDER,
            "image_tokens": model.num_image_tokens,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id, "add_bos": True,
        },
        "max_context": runtime_fields.pop("max_context", model.cfg.llm.max_position_embeddings),
        "runtime": runtime_fields,
        "files": file_entries(root),
    }


def parameter_counts(model) -> dict:
    """Parameters per part; `decoder_per_token` are the weights one decoded token reads (no embedding table,
    which is read one row at a time; the LM head counted even when tied to it)."""
    llm = {n: p.numel() for n, p in model.llm.named_parameters()}
    table = sum(v for n, v in llm.items() if "embed_tokens" in n)
    tied = model.cfg.llm.tie_word_embeddings
    return {
        "vision": sum(p.numel() for p in model.vision.parameters()),
        "projector": sum(p.numel() for p in model.projector.parameters()),
        "embedding": table,
        "decoder_per_token": sum(llm.values()) - table + (table if tied else 0),
    }
