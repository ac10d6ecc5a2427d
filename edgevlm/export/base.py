"""The exporter interface: what `edgevlm.export.export` needs of a format, hooks declared with their defaults.

Each format's module (`EXPORTER_MODULES` in edgevlm.export) defines one subclass and exposes its instance as
`EXPORTER`; `export` wraps it the same way for every format (temporary dir, tokenizer, manifest, verification,
rename). A format whose runtime cannot run on every system the exporter runs on (CoreML off macOS) overrides
`runs_here` and `offline_verification`; the others inherit "runs everywhere". A format that can keep parts
of a model at a higher precision than its scheme gives them (the accuracy guard, `edgevlm.export.guard`)
declares which (`guard_parts`) and returns a `Keeper` that writes with them raised; the others declare none,
and `--max-drop` refuses them in one line.
"""

from __future__ import annotations

import abc
from pathlib import Path

from edgevlm.quant.schemes import Scheme
from edgevlm.registry import Registry


class Keeper(abc.ABC):
    """Re-writes one model at one scheme with some parts kept at a higher precision (the accuracy guard's tries):
    made once per export, so that what every try shares (a trace) is made once."""

    parts: dict[str, str]  # guard part (guard.PARTS) → what it gets when kept, in words: those the scheme lowers

    @abc.abstractmethod
    def write(self, out_dir: Path, keep: frozenset[str]) -> dict:
        """`Exporter.write` with the parts in `keep` (keys of `parts`) at their kept precision."""


class Exporter(abc.ABC):
    guard_parts: tuple[str, ...] = ()  # guard parts (guard.PARTS) this format can keep at a higher precision;
    # () : it has no mechanism for it (yet), and `--max-drop` without `--strict` is refused
    mechanisms: Registry  # the format's quantizers, by the names its scheme rows give (quant.schemes.Part);
    # a format whose parts take different kinds of quantizer overrides `mechanism` instead (GGUF)

    @abc.abstractmethod
    def write(self, model, scheme: Scheme, out_dir: Path) -> dict:
        """Write the format's files for `scheme` into `out_dir`; return the manifest's runtime fields."""

    def mechanism(self, part: str, name: str):
        """The quantizer `name` of the format, as applied to `part` (one of quant.schemes.PARTS)."""
        return self.mechanisms[name]

    def runs_here(self) -> bool:
        """Whether a bundle of this format runs in its runtime on this system (else: `offline_verification`)."""
        return True

    def offline_verification(self, model, scheme: Scheme, out_dir: Path, data_dir: Path | None, limit: int,
                             progress: bool, threads: int | None) -> dict:
        """The verification record where `runs_here()` is False: what can be checked without the runtime."""
        raise NotImplementedError(f"{type(self).__name__} runs here; it has no offline verification")

    def keeper(self, model, scheme: Scheme) -> Keeper:
        """The `Keeper` of `model` at `scheme` (formats with `guard_parts` only)."""
        raise NotImplementedError(f"{type(self).__name__} declares no guard parts")
