"""Training the byte-level BPE tokenizer for the `shapes` task.

Tiny models bring their own small vocabulary (a few hundred tokens) instead of a 32k one, so the embedding and
LM head do not dominate their size. The trained tokenizer is a `TextTokenizer` (edgevlm/bundle/tokenizer.py),
the same class every bundle reader uses.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from edgevlm.bundle.template import TEMPLATES, Template
from edgevlm.bundle.tokenizer import BOS, EOS, PAD, TextTokenizer

SHAPES_VOCAB = 448  # the smallest BPE vocabulary that makes every `shapes` word one token (384 split
# words into letters: a caption took 44 tokens instead of 24, and the LLM spelt instead of answering)


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
