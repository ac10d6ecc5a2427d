"""Self-verification: run a fresh bundle in its runtime and the PyTorch model on the same questions.

The record goes into the manifest (docs/bundle-spec.md): the data used, n, how often the runtime's greedy tokens equal
PyTorch's (whole answers, and token by token), and both exact-match accuracies.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from edgevlm.bundle.image import load_image
from edgevlm.data.llava import QARecord, read_llava
from edgevlm.evaluation import first_images, normalize
from edgevlm.runtimes.base import Runtime

DEFAULT_IMAGES, DEFAULT_SEED = 16, 0  # the default slice: `shapes` eval split, ~104 questions


@torch.no_grad()
def reference_ids(model, image, questions: list[str], max_new_tokens: int) -> list[list[int]]:
    emb = model.encode_image(model.pixel_values(image))
    return [model.generate(emb, model.prompt_ids(q), max_new_tokens=max_new_tokens) for q in questions]


def _reference(model, image, key: str, questions: list[str], max_new_tokens: int, known: dict) -> list[list[int]]:
    """PyTorch's answers, from `known` (by image key, question) where there, computed and added otherwise."""
    keys = [(key, q, max_new_tokens) for q in questions]
    if not all(k in known for k in keys):
        known.update(zip(keys, reference_ids(model, image, questions, max_new_tokens)))
    return [known[k] for k in keys]


def verify(runtime: Runtime, model, data_dir: str | Path | None, limit: int = 100, max_new_tokens: int = 24,
           progress: bool = True, reference: dict | None = None) -> dict:
    """Compare `runtime` with the PyTorch `model` on the first `limit` questions of `data_dir`.

    With no data dir, the `shapes` eval split (seed 0, 16 images) is generated in a temporary directory.
    `reference`: PyTorch's answers by (image path in the data dir, question), filled on first use and reused by
    the accuracy guard's re-exports of the same model (export.guard), which verify on the same questions.
    """
    if data_dir is None:
        from edgevlm.data.shapes import write_shapes

        with tempfile.TemporaryDirectory() as tmp:
            write_shapes(Path(tmp) / "eval", DEFAULT_IMAGES, DEFAULT_SEED, "eval", progress=False)
            record = verify(runtime, model, Path(tmp) / "eval", limit, max_new_tokens, progress, reference)
        record["data"] = f"shapes eval split, seed {DEFAULT_SEED}, {DEFAULT_IMAGES} images (generated)"
        return record
    data_dir = Path(data_dir)
    by_image: dict[Path, list[QARecord]] = defaultdict(list)
    for r in first_images(read_llava(data_dir), limit):
        by_image[r.image].append(r)
    n = same = tok_same = tok_total = ok = ref_ok = 0
    # a `with` closes the bar on an error too, so that the error line starts a line of its own
    with tqdm(total=sum(map(len, by_image.values())), desc="verify", disable=not progress) as bar:
        for path, recs in by_image.items():
            image, questions = load_image(path), [r.question for r in recs]
            ours = runtime.generate_many(image, questions, max_new_tokens)
            key = str(path.relative_to(data_dir) if path.is_relative_to(data_dir) else path)
            ref = _reference(model, image, key, questions, max_new_tokens, {} if reference is None else reference)
            for r, a, b in zip(recs, ours, ref):
                n += 1
                same += a == b
                tok_same += sum(x == y for x, y in zip(a, b))
                tok_total += max(len(a), len(b))
                ok += normalize(runtime.decode(a)) == normalize(r.answer)
                ref_ok += normalize(model.tokenizer.decode(b)) == normalize(r.answer)
            bar.update(len(recs))
            bar.set_postfix(same=f"{same}/{n}")
    return {
        "data": str(data_dir),
        "n": n,
        "answers_identical": round(same / n, 4),
        "token_agreement": round(tok_same / max(tok_total, 1), 4),
        "accuracy": round(ok / n, 4),
        "reference_accuracy": round(ref_ok / n, 4),
        "max_new_tokens": max_new_tokens,
    }
