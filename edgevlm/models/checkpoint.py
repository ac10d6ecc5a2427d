"""Strict safetensors weight I/O: missing, unexpected or mis-shaped tensors raise with their names."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from edgevlm.errors import EdgeVLMError


def unique_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without aliases (tied weights are stored once, under their first name)."""
    seen, out = set(), {}
    for name, t in module.state_dict().items():
        key = (t.data_ptr(), t.shape, t.stride()) if t.numel() else name
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().contiguous()
    return out


def save_weights(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise EdgeVLMError("weights file not found", path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise EdgeVLMError(f"not a valid safetensors file ({e})", path) from None


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Copy `tensors` into `module`, failing unless names and shapes match exactly (aliases excepted)."""
    expected = unique_state(module)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = sorted(
        f"{k} (expected {tuple(expected[k].shape)}, got {tuple(tensors[k].shape)})"
        for k in set(expected) & set(tensors)
        if expected[k].shape != tensors[k].shape
    )
    problems = [f"{what}: {', '.join(names[:8])}{' …' if len(names) > 8 else ''}"
                for what, names in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                    ("mis-shaped tensors", misshaped)) if names]
    if problems:
        raise EdgeVLMError("; ".join(problems), path)
    with torch.no_grad():
        for k, v in module.state_dict().items():
            if k in tensors:
                v.copy_(tensors[k])
