"""Exact-match evaluation on LLaVA-format data, overall and per question kind (docs/data-spec.md, Metric).

Anything that answers questions about an image can be evaluated: the PyTorch model, or a runtime running an
exported bundle. Each image is encoded once and all its questions are asked against it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from edgevlm.bundle.image import load_image
from edgevlm.data.llava import QARecord, read_llava


class Answerer(Protocol):
    def answer_many(self, image, questions: list[str]) -> list[str]: ...


@dataclass
class EvalResult:
    n: int = 0
    correct: int = 0
    per_kind: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # kind: [n, ok]
    predictions: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict:
        return {
            "n": self.n, "correct": self.correct, "accuracy": round(self.accuracy, 4), "seconds": round(self.seconds, 2),
            "per_kind": {k: {"n": n, "correct": ok, "accuracy": round(ok / n, 4)} for k, (n, ok) in
                         sorted(self.per_kind.items())},
            "predictions": self.predictions,
        }

    def table(self) -> str:
        rows = [f"| {k} | {n} | {ok / n:.3f} |" for k, (n, ok) in sorted(self.per_kind.items())]
        return "\n".join(["| kind | n | accuracy |", "|---|---:|---:|", *rows,
                          f"| **overall** | {self.n} | **{self.accuracy:.3f}** |"])


def normalize(text: str) -> str:
    return text.strip().lower()


def first_images(records: list[QARecord], limit: int | None) -> list[QARecord]:
    """The first `limit` questions, extended to finish the last image (each image is encoded once)."""
    if limit is None or limit >= len(records):
        return records
    last = records[limit - 1].image
    end = limit
    while end < len(records) and records[end].image == last:
        end += 1
    return records[:end]


def evaluate(answerer: Answerer, data_dir: str | Path, limit: int | None = None, progress: bool = True) -> EvalResult:
    records = first_images(read_llava(data_dir), limit)
    by_image: dict[Path, list[QARecord]] = defaultdict(list)
    for r in records:
        by_image[r.image].append(r)
    result, start = EvalResult(), time.time()
    # a `with` closes the bar on an error too, so that the error line starts a line of its own
    with tqdm(total=len(records), desc="eval", disable=not progress) as bar:
        for path, recs in by_image.items():
            preds = answerer.answer_many(load_image(path), [r.question for r in recs])
            for r, p in zip(recs, preds):
                ok = normalize(p) == normalize(r.answer)
                result.n += 1
                result.correct += ok
                result.per_kind[r.kind or "all"][0] += 1
                result.per_kind[r.kind or "all"][1] += ok
                result.predictions.append({"id": r.id, "kind": r.kind, "question": r.question, "answer": r.answer,
                                           "prediction": p, "correct": ok})
            bar.update(len(recs))
            bar.set_postfix(acc=f"{result.accuracy:.3f}")
    result.seconds = time.time() - start
    return result
