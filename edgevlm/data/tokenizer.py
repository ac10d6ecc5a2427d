"""Tokenizers: loading `tokenizer.json`, and training the byte-level BPE one for the `shapes` task.

Tiny models bring their own small vocabulary (a few hundred tokens) instead of a 32k one, so the embedding and
LM head do not dominate their size. Byte-level BPE with GPT-2 pre-tokenization is what llama.cpp's `gpt2`
tokenizer model reproduces exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from edgevlm.data.templates import IMAGE_PLACEHOLDER, TEMPLATES, Template
from edgevlm.errors import EdgeVLMError

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IMAGE_TOKEN_INDEX = -200  # LLaVA's placeholder id: never a vocabulary id, replaced by image embeddings
SHAPES_VOCAB = 384


@dataclass
class TextTokenizer:
    """A `tokenizers.Tokenizer` with the ids a VLM needs, and LLaVA-style prompt splitting."""

    tok: Tokenizer
    bos_id: int
    eos_id: int
    pad_id: int

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        path = Path(path)
        if not path.is_file():
            raise EdgeVLMError("tokenizer file not found", path)
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise EdgeVLMError(f"not a valid tokenizer.json ({str(e).splitlines()[0]})", path) from None
        ids = [tok.token_to_id(t) for t in (BOS, EOS, PAD)]
        if None in ids:
            raise EdgeVLMError(f"tokenizer lacks one of the special tokens {BOS} {EOS} {PAD}", path)
        return cls(tok, *ids)

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    def __len__(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode([i for i in ids if i not in (self.bos_id, self.eos_id, self.pad_id)])

    def encode_prompt(self, prompt: str) -> list[int]:
        """BOS + text pieces around `<image>`, with IMAGE_TOKEN_INDEX where the image goes."""
        ids = [self.bos_id]
        for i, piece in enumerate(prompt.split(IMAGE_PLACEHOLDER)):
            if i:
                ids.append(IMAGE_TOKEN_INDEX)
            ids += self.encode(piece)
        return ids


def shapes_corpus() -> list[str]:
    """Every string the `shapes` task and the bundled templates can produce, a few times over."""
    import numpy as np

    from edgevlm.data.shapes import sample_scene, scene_questions

    rng, balance, lines = np.random.default_rng(1234), [0, 0], []
    for _ in range(400):
        for _, q, a in scene_questions(sample_scene(rng, "train"), rng, balance):
            lines.append(f"{q} {a}")
    for name in TEMPLATES:
        tpl: Template = TEMPLATES[name]
        lines += [tpl.system, tpl.user, tpl.assistant] * 400
    lines += [" ".join(str(d) for d in range(10))] * 100
    return lines


def train_shapes_tokenizer(vocab_size: int = SHAPES_VOCAB) -> TextTokenizer:
    """Train the byte-level BPE tokenizer for `shapes` (deterministic: same corpus, same merges)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(shapes_corpus(), trainer)
    return TextTokenizer(tok, tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id(PAD))
