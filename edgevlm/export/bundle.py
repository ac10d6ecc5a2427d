"""Bundle dirs and their `manifest.json` (design.md, Bundle manifest).

A bundle is what a device receives: one format's files at one quantization, the tokenizer, and a manifest
that says everything a runtime or a sample app needs to use them (image preprocessing, prompt template, the
image token count, special ids, the context length) plus the verification record the exporter wrote. Every
file is listed with its sha256, so a tampered or truncated file is caught before a runtime loads it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import edgevlm
from edgevlm.data.images import ImagePreprocess
from edgevlm.data.templates import IMAGE_PLACEHOLDER, Template
from edgevlm.data.tokenizer import TextTokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.io import read_json, require_dir, write_json
from edgevlm.quant.schemes import Scheme

MANIFEST, TOKENIZER = "manifest.json", "tokenizer.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_entries(root: Path) -> dict[str, dict]:
    """Every file under `root` except the manifest: relative path → sha256 and bytes."""
    return {
        str(p.relative_to(root)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST
    }


def build_manifest(model, fmt: str, scheme: Scheme, root: Path, runtime_fields: dict) -> dict:
    """The manifest for the files now under `root`, exported from `model` (an EdgeVLM)."""
    tpl, tok = model.template, model.tokenizer
    return {
        "edgevlm_version": edgevlm.__version__,
        "format": fmt,
        "quantization": scheme.to_dict(),
        "family": model.cfg.family,
        "model": {"projector": model.cfg.projector.kind, "llm_arch": model.cfg.llm.arch,
                  "moe_experts": model.cfg.moe.num_experts},
        "parameters": parameter_counts(model),
        "image": model.preprocess.to_dict(),
        "prompt": {
            "template": {"name": tpl.name, "system": tpl.system, "user": tpl.user, "assistant": tpl.assistant,
                         "answer_prefix": tpl.answer_prefix, "image_last": tpl.image_last},
            "image_placeholder": IMAGE_PLACEHOLDER,
            "image_tokens": model.num_image_tokens,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id, "add_bos": True,
        },
        "max_context": runtime_fields.pop("max_context", model.cfg.llm.max_position_embeddings),
        "runtime": runtime_fields,
        "files": file_entries(root),
    }


def parameter_counts(model) -> dict:
    """Parameters per part; `decoder_per_token` are the weights one decoded token reads (no embedding table,
    which is read one row at a time; the LM head counted even when tied to it)."""
    llm = {n: p.numel() for n, p in model.llm.named_parameters()}
    table = sum(v for n, v in llm.items() if "embed_tokens" in n)
    tied = model.cfg.llm.tie_word_embeddings
    return {
        "vision": sum(p.numel() for p in model.vision.parameters()),
        "projector": sum(p.numel() for p in model.projector.parameters()),
        "embedding": table,
        "decoder_per_token": sum(llm.values()) - table + (table if tied else 0),
    }


def write_manifest(root: Path, manifest: dict) -> None:
    write_json(root / MANIFEST, manifest)


@dataclass
class Bundle:
    """A bundle dir opened for a runtime: its manifest and the prompt / image pieces built from it."""

    path: Path
    manifest: dict
    tokenizer: TextTokenizer
    template: Template
    preprocess: ImagePreprocess

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def image_tokens(self) -> int:
        return self.manifest["prompt"]["image_tokens"]

    @property
    def max_context(self) -> int:
        return self.manifest["max_context"]

    @property
    def runtime_fields(self) -> dict:
        return self.manifest["runtime"]

    def file(self, name: str) -> Path:
        """A file the manifest lists; a missing one is an error naming it."""
        if name not in self.manifest["files"]:
            raise EdgeVLMError(f"manifest lists no file {name!r}", self.path / MANIFEST)
        return self.path / name

    def prompt_ids(self, question: str) -> list[int]:
        return self.tokenizer.encode_prompt(self.template.prompt(question))


def open_bundle(path: str | Path, check_files: bool = True) -> Bundle:
    """Read and check a bundle dir: manifest fields, and every listed file present with its sha256."""
    path = require_dir(path, "bundle directory")
    manifest = read_json(path / MANIFEST)
    for key in ("format", "files", "image", "prompt", "max_context", "runtime"):
        if key not in manifest:
            raise EdgeVLMError(f"manifest lacks {key!r}", path / MANIFEST)
    if check_files:
        check_bundle_files(path, manifest)
    tpl = manifest["prompt"]["template"]
    return Bundle(
        path=path,
        manifest=manifest,
        tokenizer=TextTokenizer.load(path / TOKENIZER),
        template=Template(**tpl),
        preprocess=ImagePreprocess(**{**manifest["image"], "mean": tuple(manifest["image"]["mean"]),
                                      "std": tuple(manifest["image"]["std"])}),
    )


def check_bundle_files(path: Path, manifest: dict) -> None:
    for name, entry in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise EdgeVLMError("file listed in manifest.json is missing", f)
        if f.stat().st_size != entry["bytes"]:
            raise EdgeVLMError(f"size {f.stat().st_size} differs from manifest.json ({entry['bytes']} bytes): "
                               "truncated or replaced", f)
        if sha256_file(f) != entry["sha256"]:
            raise EdgeVLMError("sha256 differs from manifest.json: the file was modified", f)
