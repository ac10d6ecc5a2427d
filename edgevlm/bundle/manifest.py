"""Bundle dirs and their `manifest.json` (docs/bundle-spec.md).

A bundle is what a device receives: one format's files at one quantization, the tokenizer, and a manifest
that says everything a runtime or a sample app needs to use them (image preprocessing, prompt template, the
image token count, special ids, the context length) plus the verification record the exporter wrote. Every
file is listed with its sha256, so a tampered or truncated file is caught before a runtime loads it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgevlm.bundle.image import ImagePreprocess
from edgevlm.bundle.template import IMAGE_PLACEHOLDER, Template
from edgevlm.bundle.tokenizer import IMAGE_TOKEN_INDEX, TextTokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.io import read_json, require_dir, write_json

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
