"""Upstream checkpoints (MobileVLM, TinyLLaVA, Bunny, MoE-LLaVA) → edgevlm models, from local disk only.

One module per family registers one source in `SOURCES`. The interface, all a new family needs:

```python
@source("name")                     # the name `edgevlm convert --from` takes
class Name:
    @staticmethod
    def detect(src: Path, cfg: dict) -> bool:
        '''Is SRC_DIR (whose config.json is `cfg`) this family's layout? Decided from config.json alone.'''

    @staticmethod
    def read(src: Path, cfg: dict, vision_tower: Path | None) -> Upstream:
        '''The edgevlm config, the tensors renamed to edgevlm's names, the tokenizer, all read from `src`
        (and the separate tower dir `vision_tower`, or the local dir the config names, when the tower's
        weights are not in the checkpoint). Raise EdgeVLMError naming the file for anything unexpected.'''
```

`load` builds the model and copies the tensors in strictly (`edgevlm.models.checkpoint.load_weights`: missing,
unexpected and mis-shaped tensors are listed); the renaming itself is strict too (`upstream.rename`: a tensor no
rule covers is listed as unexpected, under its upstream name). Helpers every family shares live in
`edgevlm.convert.upstream`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from edgevlm.config import VLMConfig
from edgevlm.bundle.tokenizer import TextTokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.io import read_json, require_dir
from edgevlm.registry import Registry

SOURCES: Registry = Registry("checkpoint source")
FAMILY_MODULES = ("mobilevlm", "tinyllava", "bunny", "moe_llava")


def source(name: str):
    return SOURCES.register(name)


@dataclass
class Upstream:
    """What a source reads: everything needed to build the EdgeVLM, in edgevlm's naming."""

    cfg: VLMConfig
    tensors: dict[str, torch.Tensor]
    tokenizer: TextTokenizer
    weights_path: Path  # named in weight-loading errors


def _register_all() -> None:
    for name in FAMILY_MODULES:
        if importlib.util.find_spec(f"edgevlm.convert.{name}") is not None:
            importlib.import_module(f"edgevlm.convert.{name}")


def detect(src: str | Path) -> str | None:
    """The name of the source whose layout SRC_DIR has, or None."""
    src = Path(src)
    cfg = read_json(src / "config.json")
    found = [name for name in SOURCES if SOURCES[name].detect(src, cfg)]
    if len(found) > 1:
        raise EdgeVLMError(f"config.json matches several layouts ({', '.join(found)}): pass --from", src)
    return found[0] if found else None


def load(src: str | Path, family: str | None = None, vision_tower: str | Path | None = None):
    """Read an upstream checkpoint dir into an EdgeVLM (eval mode, float32)."""
    from edgevlm.models.checkpoint import load_weights
    from edgevlm.models.vlm import EdgeVLM

    src = require_dir(src, "checkpoint directory")
    family = family or detect(src)
    if family is None:
        raise EdgeVLMError(f"invalid config: neither an edgevlm model config nor a known upstream layout "
                           f"({', '.join(SOURCES)})", src / "config.json")
    cfg_dict = read_json(src / "config.json")
    if not SOURCES[family].detect(src, cfg_dict):
        raise EdgeVLMError(f"config.json is not a {family} checkpoint", src / "config.json")
    up = SOURCES[family].read(src, cfg_dict, None if vision_tower is None else Path(vision_tower))
    model = EdgeVLM(up.cfg, up.tokenizer)
    load_weights(model, up.tensors, up.weights_path)
    return model.eval()


def convert(src: str | Path, out: str | Path, family: str | None = None, vision_tower: str | Path | None = None):
    """Upstream checkpoint dir → edgevlm model dir (written atomically). Returns the loaded model."""
    model = load(src, family, vision_tower)
    model.save_pretrained(out)
    return model


_register_all()
