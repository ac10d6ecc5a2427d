"""Atomic file writes, strict reads, and the one rule for replacing an existing output.

Every output is written to a temporary sibling and renamed into place, so an interrupted run leaves the
previous output intact (a half-written model dir or bundle is never visible under its final name). An
existing path is replaced only when it is recognisably an edgevlm output of the same kind (a bundle, a model
dir, a data dir, ...), so `--out ~/thesis` can never wipe a user's directory; `force` lifts that check.
Temporaries carry the writer's pid (`.NAME.tmp-PID-*`, `.NAME.old-PID`), so that the next writer can tell a
killed run's leftovers from a live one's: it removes the former, and puts a previous output that a kill left
aside (between the two renames) back under its name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from edgevlm.errors import EdgeVLMError


def _json_keys(path: Path, keys: tuple[str, ...]) -> bool:
    """Whether `path` is a JSON object holding every one of `keys` (False for anything unreadable)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and all(k in d for k in keys)


# Output kind → whether an existing directory is an edgevlm output of that kind (its marker file).
OUTPUT_KINDS: dict[str, Callable[[Path], bool]] = {
    "bundle": lambda p: _json_keys(p / "manifest.json", ("format", "files")),
    "model": lambda p: _json_keys(p / "config.json", ("vision",)),
    "data": lambda p: (p / "data.json").is_file(),
    "checkpoint": lambda p: _json_keys(p / "trainer.json", ("step",)),
    "goldens": lambda p: (p / "vectors.json").is_file(),
}


def check_out(final: str | Path, kind: str, force: bool = False) -> Path:
    """Raise unless `final` may be (re)written as an output of `kind`: absent, an empty directory, or already
    an edgevlm `kind`. With `force`, anything else at `final` is removed first (the user asked for it)."""
    final, recognised = Path(final), OUTPUT_KINDS[kind]
    _check_writable(final)
    if not os.path.lexists(final):
        return final
    if final.is_dir() and not final.is_symlink() and (not any(final.iterdir()) or recognised(final)):
        return final
    if not force:
        what = "a directory" if final.is_dir() else "a file"
        raise EdgeVLMError(f"--out is {what} that is not an edgevlm {kind}; refusing to replace it "
                           "(choose another --out, or pass --force)", final)
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    else:
        final.unlink()
    return final


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(final: Path) -> None:
    """Remove what killed writers of `final` left beside it; restore a previous output left aside."""
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(tmp|old)-(\d+)(-.*)?$")
    for p in sorted(final.parent.glob(f".{glob_escape(final.name)}.*")):
        m = pattern.match(p.name)
        if not m or _alive(int(m.group(2))):  # a live writer's, or not ours at all
            continue
        if m.group(1) == "old" and not os.path.lexists(final):
            os.replace(p, final)  # killed between its two renames: the previous output comes back
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _check_writable(final: Path) -> None:
    """Raise unless `final` could be created: its nearest existing ancestor is a writable directory."""
    anc = final.absolute().parent
    while not os.path.lexists(anc):
        anc = anc.parent
    if not anc.is_dir():
        raise EdgeVLMError("cannot write here: a parent of --out is a file, not a directory", anc)
    if not os.access(anc, os.W_OK | os.X_OK):
        raise EdgeVLMError("cannot write here (permission denied)", anc)


def _writable_parent(final: Path) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeVLMError(f"cannot create the output's parent directory ({e.strerror})", final.parent) from None
    if not os.access(final.parent, os.W_OK | os.X_OK):
        raise EdgeVLMError("cannot write here (permission denied)", final.parent)


@contextlib.contextmanager
def atomic_dir(final: str | Path, kind: str) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` only if the block completes.

    `final` must be absent, empty or an edgevlm output of `kind` (`check_out`); leftovers of killed writers
    beside it are cleaned first (`clean_stale`).
    """
    final = Path(final)
    _writable_parent(final)
    clean_stale(final)
    check_out(final, kind)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        old = None
        if os.path.lexists(final):
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_file_out(final: str | Path | None) -> None:
    """Raise unless a file output (a report, a table, a plot) can go to `final`: not a directory, writable."""
    if final is None:
        return
    final = Path(final)
    _check_writable(final)
    if final.is_dir():
        raise EdgeVLMError("is a directory; expected a file path to write", final)


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of `final` for writing; rename it into place on success.

    File outputs (JSON reports, tables, plots) replace an existing file of that name, the user's explicit
    choice; a directory at `final` is refused.
    """
    final = Path(final)
    check_file_out(final)
    _writable_parent(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EdgeVLMError("file not found", path)
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeVLMError(f"not valid JSON ({e})", path) from None
    except RecursionError:
        raise EdgeVLMError("not valid JSON (nested too deeply)", path) from None
    except OSError as e:
        raise EdgeVLMError(f"cannot read ({e.strerror})", path) from None


def require_dir(path: str | Path, what: str = "directory") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise EdgeVLMError(f"{what} not found", path)
    return path
