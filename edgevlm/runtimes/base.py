"""The one Runtime interface, and the greedy generation loop shared by the three-function formats.

ONNX, ExecuTorch and CoreML bundles carry the runtime contract (docs/architecture.md): `vision_encoder`,
`token_embedding`, `text_decoder` with a KV cache. `ContractRuntime` builds the prompt, splices the image
embeddings at the placeholder and runs prefill + decode on top of those three calls, so a format's runtime
only implements them. llama.cpp brings its own multimodal loop and implements `generate_many` directly.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from edgevlm.bundle.tokenizer import split_at_image
from edgevlm.errors import EdgeVLMError
from edgevlm.bundle.manifest import Bundle
from edgevlm.config import MAX_NEW_TOKENS

PHASES = ("image", "prefill", "decode")  # what profile() times, in this order


@dataclass
class Timing:
    """One request's time split (milliseconds): what `edgevlm bench` reports, per runtime, after warm-up."""

    image_ms: float  # preprocessing + vision encoder + projector
    prefill_tokens: int  # prompt positions, image tokens included
    prefill_ms: float  # prompt through the decoder, up to the first token's logits
    decode_tokens: int  # tokens generated after the first one
    decode_ms: float
    # of each phase, the time spent inside the engine's own calls (ONNX session runs, ExecuTorch method
    # executions, llama.cpp's decode / mtmd calls); the rest of a phase is Python and data handling around them
    engine_ms: dict[str, float] = field(default_factory=dict)
    engine_calls: dict[str, int] = field(default_factory=dict)  # of each phase, how many engine calls

    @property
    def ttft_ms(self) -> float:
        return self.image_ms + self.prefill_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "ttft_ms": self.ttft_ms}


@dataclass
class Trace:
    """The numbers inside one greedy run, for the golden vectors (tests/goldens/) that every client checks."""

    image_embeds: np.ndarray  # (N_img, D) float32: what the vision encoder gave the decoder
    prompt_positions: int  # prefill length, image tokens included
    logits: list[np.ndarray]  # (V,) float32 before each generated token: after prefill, then after each step
    tokens: list[int]  # the greedy tokens (EOS does not stop the run)


@dataclass(frozen=True)
class Setting:
    """One engine knob of a runtime (memory mapping, spinning threads, ...). `default` is the choice the
    measurements of `benchmarks/runtime_settings.py` made on this project's machines (docs/benchmarks.md,
    "Runtime settings"); the others stay selectable so that those measurements can be re-run anywhere."""

    choices: tuple[str, ...]
    default: str
    why: str  # what the knob trades, in a line


def chosen_settings(engine: str, declared: dict[str, Setting], given: dict[str, str], bundle: Bundle) -> dict:
    """The declared knobs' defaults overridden by `given`; an unknown knob or value is the user's one-line error."""
    for key, value in given.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise EdgeVLMError(f"{engine} has no setting {key!r} (its settings: {known})", bundle.path)
        if value not in declared[key].choices:
            raise EdgeVLMError(f"{engine} setting {key}={value!r}: choose one of {', '.join(declared[key].choices)}",
                               bundle.path)
    return {key: given.get(key, s.default) for key, s in declared.items()}


class Runtime(ABC):
    """Answers questions about an image from a bundle's files, greedily."""

    name: str = ""  # the engine, e.g. "onnxruntime"
    # the phases whose engine time the engine's own clock measures (`engine_clock`); () = it keeps none we can read
    self_timed_phases: tuple[str, ...] = ()
    settings: ClassVar[dict[str, Setting]] = {}  # the engine knobs this runtime takes (`settings=` below)

    def __init__(self, bundle: Bundle, threads: int | None = None, self_timing: bool = False,
                 settings: dict[str, str] | None = None):
        """`self_timing`: also keep the engine's own clock (its profiler or perf counters, which cost time), read
        at profile()'s phase bounds, so that `engine_self_ms` can check `Timing.engine_ms` independently.
        `settings`: values for some of the class's `settings` knobs; the rest keep their defaults."""
        if self_timing and not self.self_timed_phases:
            raise EdgeVLMError(f"{self.name or type(self).__name__} keeps no clock of its own that edgevlm reads",
                               bundle.path)
        self.chosen = chosen_settings(self.name or type(self).__name__, self.settings, settings or {}, bundle)
        self.bundle = bundle
        self.threads = threads
        self.engine_s = 0.0  # seconds inside engine calls so far (`in_engine`): what profile() splits out
        self.engine_calls = 0  # engine calls so far (`in_engine`)
        self.self_timing = self_timing
        self.self_marks: list = []  # `engine_clock()` at each phase bound of each profile() call, with self_timing

    def setting(self, key: str) -> str:
        return self.chosen[key]

    @contextlib.contextmanager
    def in_engine(self):
        """Count the enclosed engine call's time in `engine_s` (two clock reads: ~0.1 us)."""
        self.engine_calls += 1
        t = time.perf_counter()
        try:
            yield
        finally:
            self.engine_s += time.perf_counter() - t

    def phase_bound(self) -> tuple[float, int]:
        """(`engine_s`, `engine_calls`) at a phase bound of profile(); with self_timing, the engine's own clock is
        read there too."""
        if self.self_timing:
            self.self_marks.append(self.engine_clock())
        return self.engine_s, self.engine_calls

    def engine_split(self, marks: list[tuple[float, int]]) -> tuple[dict[str, float], dict[str, int]]:
        """Engine milliseconds and calls of the image, prefill and decode phases, from `phase_bound` marks."""
        bounds = list(zip(PHASES, marks, marks[1:]))
        return ({phase: (b[0] - a[0]) * 1e3 for phase, a, b in bounds},
                {phase: b[1] - a[1] for phase, a, b in bounds})

    def engine_clock(self):
        """The engine's own account of its time so far, in whatever form `engine_elapsed_ms` reads (cheap: it is
        read at every phase bound)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no clock of its own")

    def engine_elapsed_ms(self, marks: list) -> list[float]:
        """Milliseconds the engine itself counted between consecutive `engine_clock` marks."""
        raise NotImplementedError(f"{type(self).__name__} keeps no clock of its own")

    def engine_self_ms(self) -> list[dict[str, float]]:
        """For each profile() call so far (warm-ups included), the engine time of each of `self_timed_phases` by
        the engine's own clock. Engines that report only when profiling ends (ONNX Runtime, ExecuTorch) end it
        here: call this once, after the last profiled run."""
        if not self.self_timing:
            raise ValueError("the engine's own clock is read once, from a runtime opened with self_timing=True")
        ms = self.engine_elapsed_ms(self.self_marks)
        self.self_timing = False  # read: later calls are not self-timed
        bounds = len(PHASES) + 1  # marks per profile() call
        return [{p: ms[i + k] for k, p in enumerate(PHASES) if p in self.self_timed_phases}
                for i in range(0, len(self.self_marks), bounds)]

    @abstractmethod
    def generate_many(self, image, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[int]]:
        """Greedy answer token ids (EOS excluded) for each question about one PIL image."""

    def decode(self, ids: list[int]) -> str:
        return self.bundle.tokenizer.decode(ids).strip()

    def answer_many(self, image, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        return [self.decode(ids) for ids in self.generate_many(image, questions, max_new_tokens)]

    def answer(self, image, question: str, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
        return self.answer_many(image, [question], max_new_tokens)[0]

    def profile(self, image, question: str, new_tokens: int) -> Timing:
        """Generate exactly `new_tokens` greedily (EOS does not stop it) and time each phase."""
        raise NotImplementedError(f"{type(self).__name__} cannot be profiled")

    def trace(self, image, question: str, new_tokens: int) -> Trace:
        """Generate exactly `new_tokens` greedily (EOS does not stop it), keeping every step's logits."""
        raise NotImplementedError(f"{type(self).__name__} cannot be traced")


class ContractRuntime(Runtime):
    """Greedy generation over `vision_encoder` / `token_embedding` / `text_decoder` (numpy in, numpy out)."""

    @abstractmethod
    def vision_encoder(self, pixel_values: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 → image embeddings (N_img, D)."""

    @abstractmethod
    def token_embedding(self, ids: np.ndarray) -> np.ndarray:
        """(T,) int64 → embeddings (T, D)."""

    @abstractmethod
    def reset(self) -> None:
        """Empty the KV cache: the next `text_decoder` call starts at position 0."""

    @abstractmethod
    def text_decoder(self, embeds: np.ndarray, start_pos: int) -> np.ndarray:
        """(T, D) embeddings at positions start_pos.. → logits of the last position (V,), cache advanced."""

    def encode_image(self, image) -> np.ndarray:
        pixels = self.bundle.preprocess(image)[None]  # (1, 3, H, W)
        return self.vision_encoder(pixels)

    def prefill_embeds(self, image_embeds: np.ndarray, question: str) -> np.ndarray:
        """The prompt's embeddings with the image spliced in: (T + N_img - 1, D)."""
        ids_before, ids_after = split_at_image(self.bundle.prompt_ids(question))
        before = self.token_embedding(np.asarray(ids_before, dtype=np.int64))
        after = self.token_embedding(np.asarray(ids_after, dtype=np.int64))
        return np.concatenate([before, image_embeds.astype(before.dtype), after])

    def generate_many(self, image, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[int]]:
        image_embeds = self.encode_image(image)
        return [self.generate_from(self.prefill_embeds(image_embeds, q), max_new_tokens) for q in questions]

    def generate_from(self, embeds: np.ndarray, max_new_tokens: int) -> list[int]:
        limit = self.bundle.max_context
        if len(embeds) >= limit:
            raise EdgeVLMError(f"prompt of {len(embeds)} positions does not fit the bundle's context of {limit}",
                               self.bundle.path)
        eos = self.bundle.tokenizer.eos_id
        self.reset()
        logits, pos, new = self.text_decoder(embeds, 0), len(embeds), []
        while len(new) < max_new_tokens and pos < limit:
            tok = int(np.argmax(logits))
            if tok == eos:
                break
            new.append(tok)
            logits = self.text_decoder(self.token_embedding(np.asarray([tok], dtype=np.int64)), pos)
            pos += 1
        return new

    def trace(self, image, question: str, new_tokens: int) -> Trace:
        # copies: an engine may hand out its own output buffer, which its next call overwrites
        image_embeds = np.array(self.encode_image(image), dtype=np.float32)
        embeds = self.prefill_embeds(image_embeds, question)
        if len(embeds) + new_tokens > self.bundle.max_context:
            raise EdgeVLMError(f"{len(embeds)} prompt positions + {new_tokens} new tokens exceed the bundle's "
                               f"context of {self.bundle.max_context}", self.bundle.path)
        self.reset()
        logits, tokens = [self.text_decoder(embeds, 0).copy()], []
        for step in range(new_tokens):
            tokens.append(int(np.argmax(logits[-1])))
            if step + 1 < new_tokens:
                ids = np.asarray(tokens[-1:], dtype=np.int64)
                logits.append(self.text_decoder(self.token_embedding(ids), len(embeds) + step).copy())
        return Trace(image_embeds, len(embeds), logits, tokens)

    def profile(self, image, question: str, new_tokens: int) -> Timing:
        e = [self.phase_bound()]
        t0 = time.perf_counter()
        image_embeds = self.encode_image(image)
        t1 = time.perf_counter()
        e.append(self.phase_bound())
        embeds = self.prefill_embeds(image_embeds, question)
        if len(embeds) + new_tokens > self.bundle.max_context:
            raise EdgeVLMError(f"{len(embeds)} prompt positions + {new_tokens} new tokens exceed the bundle's "
                               f"context of {self.bundle.max_context}", self.bundle.path)
        self.reset()
        tok = int(np.argmax(self.text_decoder(embeds, 0)))
        t2 = time.perf_counter()
        e.append(self.phase_bound())
        for pos in range(len(embeds), len(embeds) + new_tokens - 1):
            tok = int(np.argmax(self.text_decoder(self.token_embedding(np.asarray([tok], dtype=np.int64)), pos)))
        t3 = time.perf_counter()
        e.append(self.phase_bound())
        return Timing((t1 - t0) * 1e3, len(embeds), (t2 - t1) * 1e3, new_tokens - 1, (t3 - t2) * 1e3,
                      *self.engine_split(e))
