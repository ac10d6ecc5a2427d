"""The bundle's tokenizer: `tokenizer.json` (+ `tokenizer_config.json`), its special ids, and prompt splitting.

Bundles carry byte-level BPE tokenizers with GPT-2 pre-tokenization, what llama.cpp's `gpt2` tokenizer model
reproduces exactly and what a client can implement from the file alone (docs/bundle-spec.md, Tokenizer).
Real-size presets keep their published vocabulary size with a small tokenizer padded by placeholder tokens
(`pad_to`), so that every exporter writes a tokenizer with exactly as many entries as the embedding has rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from edgevlm.bundle.template import IMAGE_PLACEHOLDER
from edgevlm.errors import EdgeVLMError

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
PLACEHOLDER = "<unused{}>"  # padding tokens, named by their id (as convert_hf_to_gguf.py's `[PAD{id}]`)
IMAGE_TOKEN_INDEX = -200  # LLaVA's placeholder id: never a vocabulary id, replaced by image embeddings
# Beside tokenizer.json when the special tokens are not <s> </s> <pad> or no BOS is added (upstream tokenizers,
# e.g. Phi-2's <|endoftext|>): Hugging Face's own file name and keys, so transformers reads the pair as well.
SPECIALS_FILE = "tokenizer_config.json"


@dataclass
class TextTokenizer:
    """A `tokenizers.Tokenizer` with the ids a VLM needs, and LLaVA-style prompt splitting."""

    tok: Tokenizer
    bos_id: int
    eos_id: int
    pad_id: int
    add_bos: bool = True  # prompts start with BOS (Llama) or not (Phi-2, StableLM 2)
    _specials: tuple | None = field(default=None, repr=False, compare=False)  # (vocab size, special ids)

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        """tokenizer.json, with the special tokens named by a `tokenizer_config.json` beside it if there is one."""
        path = Path(path)
        if not path.is_file():
            raise EdgeVLMError("tokenizer file not found", path)
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise EdgeVLMError(f"not a valid tokenizer.json ({str(e).splitlines()[0]})", path) from None
        specials, add_bos = (BOS, EOS, PAD), True
        if (path.parent / SPECIALS_FILE).is_file():
            specials, add_bos = read_specials(path.parent / SPECIALS_FILE)
        return cls.named(tok, *specials, add_bos=add_bos, path=path)

    @classmethod
    def named(cls, tok: Tokenizer, bos: str, eos: str, pad: str, add_bos: bool = True,
              path: str | Path | None = None) -> "TextTokenizer":
        """Look the special tokens up by name; a missing one raises naming `path`."""
        ids = [tok.token_to_id(t) for t in (bos, eos, pad)]
        if None in ids:
            raise EdgeVLMError(f"tokenizer lacks one of the special tokens {bos} {eos} {pad}", path)
        return cls(tok, *ids, add_bos=add_bos)

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))
        names = [self.tok.id_to_token(i) for i in (self.bos_id, self.eos_id, self.pad_id)]
        if names != [BOS, EOS, PAD] or not self.add_bos:
            bos, eos, pad = names
            (Path(path).parent / SPECIALS_FILE).write_text(json.dumps(
                {"bos_token": bos, "eos_token": eos, "pad_token": pad, "add_bos_token": self.add_bos}, indent=2))

    def __len__(self) -> int:
        return self.tok.get_vocab_size()

    def pad_to(self, size: int) -> "TextTokenizer":
        """Add special placeholder tokens up to `size` entries (ids len(self) .. size-1), in place.

        Special, so text never encodes to them and decoding drops them; a model with random weights may still
        emit them. Raises when the tokenizer is already larger than `size`.
        """
        if size < len(self):
            raise EdgeVLMError(f"cannot pad a tokenizer of {len(self)} tokens down to {size}")
        self.tok.add_special_tokens([AddedToken(PLACEHOLDER.format(i), special=True, normalized=False)
                                     for i in range(len(self), size)])
        return self

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode([i for i in ids if i not in (self.bos_id, self.eos_id, self.pad_id)])

    def special_ids(self) -> frozenset[int]:
        """Ids of the special tokens (BOS, EOS, PAD, placeholders...), cached until the vocabulary grows."""
        if self._specials is None or self._specials[0] != len(self):
            added = self.tok.get_added_tokens_decoder()
            self._specials = (len(self), frozenset(i for i, t in added.items() if t.special))
        return self._specials[1]

    def encode_prompt(self, prompt: str) -> list[int]:
        """BOS (if the tokenizer adds one) + text pieces around `<image>`, IMAGE_TOKEN_INDEX where the image goes.

        Raises on text that is not valid Unicode (a command line's undecodable bytes) and on text that spells
        a special token (`</s>` would otherwise become EOS mid-prompt: the runtimes must all refuse alike).
        """
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise EdgeVLMError("the prompt is not valid UTF-8") from None
        ids = [self.bos_id] if self.add_bos else []
        for i, piece in enumerate(prompt.split(IMAGE_PLACEHOLDER)):
            if i:
                ids.append(IMAGE_TOKEN_INDEX)
            ids += self.encode(piece)
        inside = sorted(self.special_ids().intersection(ids[1:] if self.add_bos else ids))
        if inside:
            names = " ".join(self.tok.id_to_token(i) for i in inside[:3])
            raise EdgeVLMError(f"the prompt contains the tokenizer's special token text {names}")
        return ids



def split_at_image(ids: list[int]) -> tuple[list[int], list[int]]:
    """Prompt ids → (ids before the image, ids after it); a prompt needs exactly one IMAGE_TOKEN_INDEX."""
    n = ids.count(IMAGE_TOKEN_INDEX)
    if n != 1:
        raise EdgeVLMError(f"a prompt needs exactly one image placeholder {IMAGE_PLACEHOLDER}, got {n}")
    at = ids.index(IMAGE_TOKEN_INDEX)
    return ids[:at], ids[at + 1:]

def read_specials(path: Path, default_add_bos: bool = True) -> tuple[tuple[str, str, str], bool]:
    """((bos, eos, pad) names, add_bos) from a Hugging Face tokenizer_config.json / special_tokens_map.json.

    A missing pad token falls back to EOS (LLaVA-family training pads with UNK or EOS; only the id's role in
    decoding matters here). Values may be strings or AddedToken dicts (`{"content": ...}`).
    """
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeVLMError(f"not valid JSON ({e})", path) from None

    def name(key):
        v = d.get(key)
        return v.get("content") if isinstance(v, dict) else v

    bos, eos = name("bos_token"), name("eos_token")
    if eos is None:
        raise EdgeVLMError("no eos_token", path)
    return (bos or eos, eos, name("pad_token") or eos), bool(d.get("add_bos_token", default_add_bos))
