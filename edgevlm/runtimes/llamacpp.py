"""The `llama.cpp` runtime: a GGUF bundle (text model + mmproj) run through llama-cpp-python's low-level bindings.

The image goes through llama.cpp's multimodal library (tools/mtmd: `mtmd_tokenize` preprocesses it from the
mmproj's metadata, `mtmd_encode_chunk` runs tower + projector once per image, `mtmd_helper_decode_image_chunk`
feeds the embeddings to the LM); the text around it is our own prompt, `template.prompt(question)` split at
`<image>` with BOS first, tokenized by the bundle's tokenizer.json (whose vocabulary and merges the text GGUF
carries). Greedy decoding reads llama.cpp's logits. The KV cache is kept in F32 and flash attention off, so that
an F16 bundle follows PyTorch's float32 arithmetic as closely as llama.cpp allows.

llama.cpp reports problems by returning NULL and logging; its log is collected here (never printed) and the
last error line goes into the one-line `EdgeVLMError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from typing import Iterator

import numpy as np

from edgevlm.bundle.tokenizer import split_at_image
from edgevlm.errors import EdgeVLMError
from edgevlm.bundle.manifest import Bundle
from edgevlm.runtimes.base import Runtime, Setting, Timing, Trace
from edgevlm.config import MAX_NEW_TOKENS
from edgevlm.engines.llamacpp import llama_log

class LlamaCppRuntime(Runtime):
    name = "llama.cpp"
    # llama.cpp's perf counters time the context's decodes; mtmd keeps no clock on the image encoder's path
    # (`mtmd_encode_chunk`; only mtmd-helper's eval logs whole milliseconds), so the image phase has none
    self_timed_phases = ("prefill", "decode")
    # "read": llama.cpp repacks the quantized weights into its CPU kernels' layout (CPU_REPACK) at load anyway, so
    # mapping the file only left the originals resident beside the copies (+0.54 GiB peak RSS, same speed, at
    # real size: docs/benchmarks.md, Runtime settings)
    settings = {"load": Setting(("read", "mmap"), "read", "the text model's weights read into memory of the "
                                "process's own, or mapped from the page cache (shared with other processes, evictable)")}

    def __init__(self, bundle: Bundle, threads: int | None = None, self_timing: bool = False,
                 settings: dict[str, str] | None = None):
        super().__init__(bundle, threads, self_timing, settings)
        try:
            import llama_cpp
            from llama_cpp import mtmd_cpp
        except ImportError:
            raise EdgeVLMError("GGUF bundles need llama-cpp-python (`scripts/setup` installs it)",
                               bundle.path) from None
        self.ll, self.mt = llama_cpp, mtmd_cpp
        self.model = self.ctx = self.mtmd = None
        fields = bundle.runtime_fields
        self._load_text(bundle.file(fields["text_model"]))
        self._load_mmproj(bundle.file(fields["mmproj"]))

    def _load_text(self, path) -> None:
        ll = self.ll
        ll.llama_backend_init()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 0
        # a ctypes struct takes any attribute name silently: llama.cpp's field is `load_mode`, not `use_mmap`
        mparams.load_mode = ll.LLAMA_LOAD_MODE_MMAP if self.setting("load") == "mmap" else ll.LLAMA_LOAD_MODE_NONE
        with llama_log() as log:
            self.model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise EdgeVLMError(f"llama.cpp cannot load this text model ({log.last_error() or 'no reason given'})",
                               path)
        n = self.bundle.max_context
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n
        if self.threads:
            cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.type_k = cparams.type_v = ll.GGML_TYPE_F32
        cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = not self.self_timing  # the perf counters: only when asked
        with llama_log() as log:
            self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise EdgeVLMError(f"llama.cpp cannot create a context ({log.last_error()})", path)
        self.n_vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(self.model))
        self.batch = ll.llama_batch_init(n, 0, 1)

    def _load_mmproj(self, path) -> None:
        mt = self.mt
        params = mt.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.warmup = False
        if self.threads:
            params.n_threads = self.threads
        with llama_log() as log:
            self.mtmd = mt.mtmd_init_from_file(str(path).encode(), self.model, params)
        if not self.mtmd:
            raise EdgeVLMError(f"llama.cpp cannot load this mmproj ({log.last_error() or 'no reason given'})", path)

    # ---- one image, many questions -----------------------------------------------------------------------------
    def generate_many(self, image, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[int]]:
        with self._image_chunk(image) as (chunk, embd):
            return [self._generate(chunk, embd, self.bundle.prompt_ids(q), max_new_tokens) for q in questions]

    @contextlib.contextmanager
    def _image_chunk(self, image):
        """The image as an mtmd chunk, encoded once: (chunk, embeddings (N_img * D,) float32)."""
        mt, size = self.mt, self.bundle.preprocess.size
        pixels = self.bundle.preprocess.resized(image)  # our resize (the spec's); llama.cpp then only normalizes
        bitmap = mt.mtmd_bitmap_init(size, size, pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        chunks = mt.mtmd_input_chunks_init()
        try:
            chunk = self._tokenize_image(chunks, bitmap)
            with llama_log() as log, self.in_engine():
                rc = mt.mtmd_encode_chunk(self.mtmd, chunk)
            if rc != 0:
                raise EdgeVLMError(f"llama.cpp failed to encode the image ({log.last_error() or rc})",
                                   self.bundle.path)
            n = mt.mtmd_input_chunk_get_n_tokens(chunk) * self.ll.llama_model_n_embd(self.model)
            yield chunk, np.ctypeslib.as_array(mt.mtmd_get_output_embd(self.mtmd), shape=(n,)).copy()
        finally:
            mt.mtmd_input_chunks_free(chunks)
            mt.mtmd_bitmap_free(bitmap)

    def _tokenize_image(self, chunks, bitmap):
        """Tokenize the media marker alone; the first image chunk is the image (the overview, for tiling types)."""
        mt = self.mt
        marker = mt.mtmd_default_marker()
        text = mt.mtmd_input_text(marker, len(marker), False, True)
        with llama_log() as log, self.in_engine():
            rc = mt.mtmd_tokenize(self.mtmd, chunks, ctypes.byref(text), (mt.mtmd_bitmap_p_ctypes * 1)(bitmap), 1)
        if rc != 0:
            raise EdgeVLMError(f"llama.cpp failed to preprocess the image ({log.last_error() or rc})",
                               self.bundle.path)
        for i in range(mt.mtmd_input_chunks_size(chunks)):
            chunk = mt.mtmd_input_chunks_get(chunks, i)
            if mt.mtmd_input_chunk_get_type(chunk) == mt.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                n = mt.mtmd_input_chunk_get_n_tokens(chunk)
                if n != self.bundle.image_tokens:
                    raise EdgeVLMError(f"llama.cpp makes {n} image tokens, the manifest says "
                                       f"{self.bundle.image_tokens}", self.bundle.path)
                return chunk
        raise EdgeVLMError("llama.cpp made no image chunk from the image", self.bundle.path)

    def profile(self, image, question: str, new_tokens: int) -> Timing:
        e = [self.phase_bound()]
        t0 = time.perf_counter()
        with self._image_chunk(image) as (chunk, embd):
            t1 = time.perf_counter()
            e.append(self.phase_bound())
            ids = self.bundle.prompt_ids(question)
            pos = self._prefill(chunk, embd, ids, new_tokens)
            prompt_positions, tok = pos, self._argmax()
            t2 = time.perf_counter()
            e.append(self.phase_bound())
            for _ in range(new_tokens - 1):
                pos = self._decode([tok], pos)
                tok = self._argmax()
            t3 = time.perf_counter()
            e.append(self.phase_bound())
        return Timing((t1 - t0) * 1e3, prompt_positions, (t2 - t1) * 1e3, new_tokens - 1, (t3 - t2) * 1e3,
                      *self.engine_split(e))

    def engine_clock(self) -> float:
        """llama.cpp's own decode time so far (ms): prompt batches + single tokens, each counted from the decode's
        start to the next synchronization (our logits read), by `llama_perf_context`."""
        perf = self.ll.llama_perf_context(self.ctx)
        return perf.t_p_eval_ms + perf.t_eval_ms

    def engine_elapsed_ms(self, marks: list[float]) -> list[float]:
        return [b - a for a, b in zip(marks, marks[1:])]

    def trace(self, image, question: str, new_tokens: int) -> Trace:
        with self._image_chunk(image) as (chunk, embd):
            pos = self._prefill(chunk, embd, self.bundle.prompt_ids(question), new_tokens)
            prompt_positions, logits, tokens = pos, [self._logits().copy()], []
            for step in range(new_tokens):
                tokens.append(int(np.argmax(logits[-1])))
                if step + 1 < new_tokens:
                    pos = self._decode(tokens[-1:], pos)
                    logits.append(self._logits().copy())
        return Trace(embd.reshape(self.bundle.image_tokens, -1), prompt_positions, logits, tokens)

    def _generate(self, chunk, embd: np.ndarray, ids: list[int], max_new_tokens: int) -> list[int]:
        limit, eos = self.bundle.max_context, self.bundle.tokenizer.eos_id
        pos = self._prefill(chunk, embd, ids)
        new: list[int] = []
        while len(new) < max_new_tokens and pos < limit:
            tok = self._argmax()
            if tok == eos:
                break
            new.append(tok)
            pos = self._decode([tok], pos)
        return new

    def _prefill(self, chunk, embd: np.ndarray, ids: list[int], new_tokens: int = 0) -> int:
        """Text before the image, the image's embeddings, text after: returns the next position."""
        ll, limit = self.ll, self.bundle.max_context
        before, after = split_at_image(ids)
        if len(ids) - 1 + self.bundle.image_tokens + new_tokens >= limit:
            raise EdgeVLMError(f"prompt of {len(ids) - 1 + self.bundle.image_tokens} positions (+ {new_tokens} "
                               f"new tokens) does not fit the bundle's context of {limit}", self.bundle.path)
        # metadata only: emptied cells are masked out and overwritten; zeroing the buffers too (data=True) is a
        # memset of the whole n_ctx cache, ~0.1 s per prompt for a 1.4B LLM's 2048-position F32 cache
        ll.llama_memory_clear(ll.llama_get_memory(self.ctx), False)
        pos = self._decode(before, 0)
        new_pos = ll.llama_pos(0)
        with llama_log() as log, self.in_engine():
            rc = self.mt.mtmd_helper_decode_image_chunk(
                self.mtmd, self.ctx, chunk, embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), pos, 0,
                limit, ctypes.byref(new_pos), self.mt.mtmd_helper_post_decode_callback(), None)
        if rc != 0:
            raise EdgeVLMError(f"llama.cpp failed to decode the image ({log.last_error() or rc})", self.bundle.path)
        return self._decode(after, new_pos.value)

    def _logits(self) -> np.ndarray:
        """The last decoded position's logits (V,), a view of llama.cpp's buffer: valid until the next decode."""
        return np.ctypeslib.as_array(self.ll.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))

    def _argmax(self) -> int:
        return int(np.argmax(self._logits()))

    def _decode(self, ids: list[int], pos: int) -> int:
        """Run `ids` at positions pos.. (logits for the last one); returns the next position."""
        b = self.batch
        b.n_tokens = len(ids)
        for i, tok in enumerate(ids):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = tok, pos + i, 1, 0
            b.logits[i] = i == len(ids) - 1
        if ids:
            with self.in_engine():
                rc = self.ll.llama_decode(self.ctx, b)
            if rc != 0:
                raise EdgeVLMError("llama.cpp failed to decode the prompt", self.bundle.path)
        return pos + len(ids)

    def __del__(self):
        ll = getattr(self, "ll", None)
        if ll is None:
            return
        if getattr(self, "mtmd", None):
            self.mt.mtmd_free(self.mtmd)
        if getattr(self, "ctx", None):
            ll.llama_batch_free(self.batch)
            ll.llama_free(self.ctx)
        if getattr(self, "model", None):
            ll.llama_model_free(self.model)
        self.mtmd = self.ctx = self.model = None


RUNTIME = LlamaCppRuntime
