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

import numpy as np

from edgevlm.bundle.tokenizer import split_at_image
from edgevlm.errors import EdgeVLMError
from edgevlm.bundle.manifest import Bundle
from edgevlm.config import MAX_NEW_TOKENS


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

    @property
    def ttft_ms(self) -> float:
        return self.image_ms + self.prefill_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "ttft_ms": self.ttft_ms}


class Runtime(ABC):
    """Answers questions about an image from a bundle's files, greedily."""

    name: str = ""  # the engine, e.g. "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self.threads = threads
        self.engine_s = 0.0  # seconds inside engine calls so far (`in_engine`): what profile() splits out

    @contextlib.contextmanager
    def in_engine(self):
        """Count the enclosed engine call's time in `engine_s` (two clock reads: ~0.1 us)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.engine_s += time.perf_counter() - t

    def engine_split(self, marks: list[float]) -> dict[str, float]:
        """Engine milliseconds of the image, prefill and decode phases, from `engine_s` read at their bounds."""
        return {phase: (b - a) * 1e3 for phase, a, b in zip(("image", "prefill", "decode"), marks, marks[1:])}

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

    def profile(self, image, question: str, new_tokens: int) -> Timing:
        e = [self.engine_s]
        t0 = time.perf_counter()
        image_embeds = self.encode_image(image)
        t1 = time.perf_counter()
        e.append(self.engine_s)
        embeds = self.prefill_embeds(image_embeds, question)
        if len(embeds) + new_tokens > self.bundle.max_context:
            raise EdgeVLMError(f"{len(embeds)} prompt positions + {new_tokens} new tokens exceed the bundle's "
                               f"context of {self.bundle.max_context}", self.bundle.path)
        self.reset()
        tok = int(np.argmax(self.text_decoder(embeds, 0)))
        t2 = time.perf_counter()
        e.append(self.engine_s)
        for pos in range(len(embeds), len(embeds) + new_tokens - 1):
            tok = int(np.argmax(self.text_decoder(self.token_embedding(np.asarray([tok], dtype=np.int64)), pos)))
        t3 = time.perf_counter()
        e.append(self.engine_s)
        return Timing((t1 - t0) * 1e3, len(embeds), (t2 - t1) * 1e3, new_tokens - 1, (t3 - t2) * 1e3,
                      self.engine_split(e))
