"""Bundle dirs and their `manifest.json` (docs/bundle-spec.md).

A bundle is what a device receives: one format's files at one quantization, the tokenizer, and a manifest
that says everything a runtime or a sample app needs to use them (image preprocessing, prompt template, the
image token count, special ids, the context length) plus the verification record the exporter wrote. Every
file is listed with its sha256, so a tampered or truncated file is caught before a runtime loads it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from edgevlm.bundle.image import ImagePreprocess
from edgevlm.bundle.template import Template
from edgevlm.bundle.tokenizer import TextTokenizer
from edgevlm.errors import EdgeVLMError
from edgevlm.io import read_json, require_dir, write_json

MANIFEST, TOKENIZER, SCHEMA = "manifest.json", "tokenizer.json", "manifest.schema.json"
SPEC_VERSION = "1.1"  # MAJOR.MINOR: a reader refuses an unknown major; a minor changes nothing a 1.x reader reads
LEGACY_VERSION = "0"  # manifests written before the spec had no spec_version; same shape as 1.0 minus the field
READS = ("0", "1.x")
READS_MAJOR = {"0", "1"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_entries(root: Path) -> dict[str, dict]:
    """Every file under `root` except the manifest: relative path → sha256 and bytes."""
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
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
    """Read and check a bundle dir, in the spec's order: the manifest's version, every listed path inside the
    bundle, the manifest against the schema, then every listed file present with its size and sha256.
    Any problem is one `EdgeVLMError` naming the file; nothing is opened or hashed before the paths pass."""
    path = require_dir(path, "bundle directory")
    manifest = read_manifest(path)
    if check_files:
        check_bundle_files(path, manifest)
    tpl, image = manifest["prompt"]["template"], manifest["image"]
    return Bundle(
        path=path,
        manifest=manifest,
        tokenizer=TextTokenizer.load(path / TOKENIZER),
        template=Template(**tpl),
        preprocess=ImagePreprocess(**{**image, "mean": tuple(image["mean"]), "std": tuple(image["std"])}),
    )


def read_manifest(path: Path) -> dict:
    """`path`/manifest.json, checked against the spec (version, paths, schema) but not against the files."""
    where = path / MANIFEST
    check_inside(path, MANIFEST)
    manifest = read_json(where)
    if not isinstance(manifest, dict):
        raise EdgeVLMError("not a manifest: the top level is not a JSON object", where)
    check_spec_version(manifest.get("spec_version", LEGACY_VERSION), where)
    files = manifest.get("files")
    if isinstance(files, dict):
        for name in files:
            check_inside(path, name)
    problem = schema_problem(manifest)
    if problem:
        raise EdgeVLMError(problem, where)
    return manifest


def check_spec_version(version, where: Path) -> None:
    """Majors this reader knows: 0 (manifests written before the spec, without the field) and 1."""
    major = version.split(".")[0] if isinstance(version, str) else None
    if major not in READS_MAJOR:
        raise EdgeVLMError(f"spec_version {version!r} is not one this edgevlm reads ({', '.join(READS)}): "
                           "a newer edgevlm wrote it, or it is not an edgevlm manifest", where)


def check_inside(root: Path, name) -> None:
    """A manifest may name only relative paths that stay inside the bundle, symlinks followed."""
    where = root / MANIFEST
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise EdgeVLMError(f"file name {name!r} is not a relative path with / separators", where)
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise EdgeVLMError(f"file name {name!r} is an absolute path: a bundle names files inside itself", where)
    if ".." in PurePosixPath(name).parts or "." in name.split("/") or "" in name.split("/"):
        raise EdgeVLMError(f"file name {name!r} leaves the bundle or is not normalized ('..', '.', '//')", where)
    target = root / name
    if (target.is_symlink() or target.exists()) and not target.resolve().is_relative_to(root.resolve()):
        raise EdgeVLMError(f"{name!r} is a symlink to {target.resolve()}, outside the bundle", where)


def schema_problem(manifest: dict) -> str | None:
    """The manifest's first schema violation as `where: what` (one line), or None."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(manifest))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "manifest"
    message = " ".join(error.message.split())
    return f"{where}: {message[:200] + '...' if len(message) > 200 else message}"


@functools.cache
def _validator():
    import jsonschema

    schema = json.loads((Path(__file__).parent / SCHEMA).read_text())
    return jsonschema.Draft202012Validator(schema)


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
