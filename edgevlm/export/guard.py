"""The accuracy guard (`edgevlm export --max-drop D [--strict]`): a bundle may lose at most D of accuracy against
PyTorch on the verification set; when it loses more, the export is re-written with its most sensitive parts
kept at a higher precision until the drop is within D, or (`--strict`) refused.

The drop is the verification record's `reference_accuracy - accuracy` (exact-match answers, PyTorch's minus the
runtime's: edgevlm.export.verify). Parts (`PARTS`) are the places quantization error matters most and a
format can tell apart: the vision tower + projector, the token embedding, the LM head, the first and last
decoder layers, and the layers between. Each format declares which of them it can keep higher and how
(`Exporter.guard_parts`, `Exporter.keeper`); a format that declares none is refused in one line, never
exported unguarded. Sensitivity is measured one part at a time: the bundle re-written with only that part
kept, verified; then parts are kept greedily, most accuracy-restoring first, until the drop is within D. This
costs at most 2 x parts - 1 more exports and verifications (PyTorch's answers are computed once), and only when
the first bundle is over D: a bundle within D is the unguarded export, byte for byte, with the guard's record
added to its manifest's verification record (`verification.guard`, docs/bundle-spec.md section 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgevlm.errors import EdgeVLMError

PARTS = ("vision_encoder", "token_embedding", "lm_head", "first_layer", "middle_layers", "last_layer")

# (bits per LLM weight at least, default D). One question of the default 103-question slice is ~0.01. 8 bits and
# more measured no loss beyond near-ties on the test models (onnx int8 per-channel: none; fp16: one or two flipped
# near-ties of a weak model), so one question's worth is allowed; 4-bit schemes lost up to two questions with
# their standard mixes (an int4 LM head: two), so two are allowed before parts are raised.
DEFAULT_MAX_DROP = ((8.0, 0.01), (0.0, 0.02))


def default_max_drop(bits: float) -> float:
    """The default D for a scheme of `bits` bits per LLM weight."""
    return next(d for least, d in DEFAULT_MAX_DROP if bits >= least)


@dataclass(frozen=True)
class Guard:
    max_drop: float  # most accuracy (a fraction of the verification set) the bundle may lose against PyTorch
    strict: bool = False  # over D: fail instead of keeping parts at a higher precision

    def __post_init__(self):
        if not 0.0 <= self.max_drop <= 1.0:
            raise EdgeVLMError(f"--max-drop must be an accuracy difference in [0, 1], got {self.max_drop}")


def drop(record: dict) -> float:
    """Accuracy lost against PyTorch in a verification record (negative: the bundle scored higher)."""
    return round(record["reference_accuracy"] - record["accuracy"], 4)


def _scores(record: dict) -> dict:
    return {"accuracy": record["accuracy"], "reference_accuracy": record["reference_accuracy"],
            "drop": drop(record)}


def enforce(guard: Guard, first: dict, parts: Callable[[], dict[str, str]],
            attempt: Callable[[frozenset[str], bool], dict | None]) -> tuple[dict, dict]:
    """The guard's record for the bundle verified as `first` (the verification record's `guard`), and the
    verification record of the bundle now on disk: `first`'s, or over D that of the one re-written by `attempt`.

    `parts()`: the format's keepable parts at this scheme → what each gets when kept (asked only when needed);
    `attempt(keep, verify)`: write the bundle with `keep` raised, and verify it if `verify` (its record, else None).
    """
    record = {"max_drop": guard.max_drop, "strict": guard.strict, "before": _scores(first)}
    if drop(first) <= guard.max_drop:
        return {**record, "kept": {}, "after": _scores(first)}, first
    if guard.strict:
        raise EdgeVLMError(f"accuracy drop {drop(first):.4f} against PyTorch exceeds --max-drop {guard.max_drop} "
                           f"(accuracy {first['accuracy']}, PyTorch {first['reference_accuracy']}; --strict)")
    keepable = parts()
    if not keepable:
        raise EdgeVLMError(f"accuracy drop {drop(first):.4f} exceeds --max-drop {guard.max_drop} and this scheme "
                           f"has no part the format can keep at a higher precision")
    tries = {frozenset([p]): attempt(frozenset([p]), True) for p in keepable}  # sensitivity: one part at a time
    last = frozenset([list(keepable)[-1]])
    sensitivity = {p: drop(tries[frozenset([p])]) for p in keepable}
    keep: frozenset[str] = frozenset()
    for p in sorted(keepable, key=lambda p: (sensitivity[p], PARTS.index(p))):  # most restoring first
        keep = keep | {p}
        if keep not in tries:
            tries[keep], last = attempt(keep, True), keep
        if drop(tries[keep]) <= guard.max_drop:
            break
    else:
        raise EdgeVLMError(f"accuracy drop {drop(tries[keep]):.4f} still exceeds --max-drop {guard.max_drop} with "
                           f"every part the format can raise kept ({', '.join(sorted(keep))})")
    if last != keep:
        attempt(keep, False)  # the export is deterministic: the files the record describes
    return {**record, "sensitivity": {p: {"kept": keepable[p], "drop": d} for p, d in sensitivity.items()},
            "kept": {p: keepable[p] for p in PARTS if p in keep}, "tries": len(tries),
            "after": _scores(tries[keep])}, tries[keep]
