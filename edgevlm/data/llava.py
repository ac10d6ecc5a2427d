"""Reading LLaVA-format conversation data (`data.json` + image files), the format `shapes` is written in.

Real LLaVA-style data sets (LLaVA-Instruct, ShareGPT4V, the MobileVLM / Bunny mixtures) load the same way.
Multi-turn conversations become one sample per assistant turn, each with the image and its own question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgevlm.errors import EdgeVLMError
from edgevlm.io import read_json, require_dir


@dataclass(frozen=True)
class QARecord:
    image: Path
    question: str  # `<image>` marks where the image goes (a prompt template adds it when absent)
    answer: str
    kind: str  # question kind for per-kind accuracy ("" if the data set has none)
    id: str


def read_llava(data_dir: str | Path) -> list[QARecord]:
    """Read `DIR/data.json` (a list of LLaVA records) into QA pairs; images are resolved against DIR."""
    data_dir = require_dir(data_dir, "data directory")
    path = data_dir / "data.json"
    raw = read_json(path)
    if not isinstance(raw, list):
        raise EdgeVLMError("expected a JSON list of LLaVA records", path)
    out = []
    for i, rec in enumerate(raw):
        out += _record_pairs(rec, i, data_dir, path)
    if not out:
        raise EdgeVLMError("no question/answer pairs found", path)
    return out


def _record_pairs(rec, i: int, data_dir: Path, path: Path) -> list[QARecord]:
    try:
        image, convs = rec["image"], rec["conversations"]
        turns = [(c["from"], c["value"]) for c in convs]
    except (KeyError, TypeError):
        raise EdgeVLMError(f"record {i} lacks 'image' or 'conversations' with 'from'/'value'", path) from None
    if not isinstance(image, str) or not image:
        raise EdgeVLMError(f"record {i}: 'image' must be a relative path string", path)
    if not all(isinstance(v, str) for _, v in turns):
        raise EdgeVLMError(f"record {i}: turn values must be strings", path)
    pairs = []
    for (who_q, q), (who_a, a) in zip(turns[::2], turns[1::2]):
        if who_q != "human" or who_a != "gpt":
            raise EdgeVLMError(f"record {i}: turns must alternate human/gpt", path)
        pairs.append(QARecord(data_dir / image, q, a, str(rec.get("kind", "")), str(rec.get("id", i))))
    return pairs
