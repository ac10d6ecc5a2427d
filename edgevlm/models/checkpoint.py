"""Strict safetensors weight I/O: missing, unexpected or mis-shaped tensors raise with their names.

A model dir's weights are mapped, not copied (`map_weights_into`): the model's parameters are views of the
file, so loading a model costs its weights' memory once (before: a whole-file map of them beside the
parameters they were copied into), and that memory is the page cache's, which an exporter can hand back
between steps (`MappedWeights.page_out`). The format (https://github.com/huggingface/safetensors#format): an
8-byte little-endian header length, a JSON header of name → dtype, shape and byte offsets, the tensors' bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import mmap
import struct
import sys
import threading
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from edgevlm.errors import EdgeVLMError


def unique_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without aliases (tied weights are stored once, under their first name)."""
    seen, out = set(), {}
    for name, t in module.state_dict().items():
        key = (t.data_ptr(), t.shape, t.stride()) if t.numel() else name
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().contiguous()
    return out


def save_weights(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise EdgeVLMError("weights file not found", path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise EdgeVLMError(f"not a valid safetensors file ({e})", path) from None


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Copy `tensors` into `module`, failing unless names and shapes match exactly (aliases excepted)."""
    check_names(module, {k: tuple(t.shape) for k, t in tensors.items()}, path)
    with torch.no_grad():
        for k, v in module.state_dict().items():
            if k in tensors:
                v.copy_(tensors[k])


# safetensors dtype names → torch dtypes (those a model dir can hold)
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


def read_header(path: Path, f) -> tuple[dict[str, dict], int]:
    """The safetensors header of the open file `f` (name → {dtype, shape, data_offsets}) and where data starts;
    a malformed header raises naming `path`."""
    size = path.stat().st_size
    try:
        (n,) = struct.unpack("<Q", f.read(8))
        if not 2 <= n <= size - 8:
            raise ValueError(f"header length {n} in a file of {size} bytes")
        header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        header.pop("__metadata__", None)
        for name, e in header.items():
            begin, end = e["data_offsets"]
            width = DTYPES[e["dtype"]].itemsize
            if not 0 <= begin <= end <= size - 8 - n or end - begin != math.prod(e["shape"]) * width:
                raise ValueError(f"tensor {name!r}: offsets {begin}..{end} do not hold {e['shape']} {e['dtype']}")
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise EdgeVLMError(f"not a valid safetensors file ({e})", path) from None
    return header, 8 + n


MADV_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21 if sys.platform == "linux" else None)  # Linux ≥ 5.4; Python
# builds against older headers lack the name


class MappedWeights:
    """A safetensors file mapped copy-on-write (MAP_PRIVATE): its tensors are views of the file's pages, read
    from disk when first touched; writing to one copies that page privately and never reaches the file. The
    pages are the page cache's (clean, so the kernel can drop them under memory pressure), and `page_out`
    drops them now: an exporter that has written what it needs from the weights hands their memory back before
    its next step, and anything that reads them later reads them from disk again.

    Our writers always write a new file and rename it into place, so a mapped file is never changed under a
    reader; the mapping keeps the inode it opened alive after such a rename."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            self.header, self.start = read_header(path, f)
            self.map = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def tensor(self, name: str) -> torch.Tensor:
        e = self.header[name]
        begin, end = e["data_offsets"]
        dtype = DTYPES[e["dtype"]]
        if begin == end:
            return torch.empty(e["shape"], dtype=dtype)
        return torch.frombuffer(self.map, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                offset=self.start + begin).view(e["shape"])

    def __deepcopy__(self, memo) -> None:
        return None  # a deep copy of a mapped module holds its tensors in its own memory: no file backs them

    def page_out(self) -> None:
        """Reclaim the mapping's resident pages (pages written to stay: with no swap they cannot go). A kernel
        without the advice (Linux < 5.4) keeps them: the kernel still drops clean pages under pressure."""
        if MADV_PAGEOUT is not None:
            with contextlib.suppress(OSError):
                self.map.madvise(MADV_PAGEOUT)


def map_weights_into(module: nn.Module, path: str | Path) -> MappedWeights:
    """Make `module`'s parameters and buffers views of the safetensors file `path` (`MappedWeights`), failing
    unless names and shapes match exactly (aliases excepted); a tensor stored in another dtype is converted
    into its own memory, one at a time. Loading costs no copy of the weights, and a module built without
    initialising its parameters (`uninitialised`) never holds a second set of them."""
    path = Path(path)
    if not path.is_file():
        raise EdgeVLMError("weights file not found", path)
    weights = MappedWeights(path)
    check_names(module, {k: tuple(e["shape"]) for k, e in weights.header.items()}, path)
    targets = {**dict(module.named_parameters(remove_duplicate=False)),
               **dict(module.named_buffers(remove_duplicate=False))}
    with torch.no_grad():
        for name in weights.header:
            t, stored = targets[name], weights.tensor(name)
            t.data = stored if stored.dtype == t.dtype else stored.to(t.dtype)
    return weights


class ReleaseEvery:
    """Calls `release` after every `every` bytes `count`ed: a step that reads mapped weights one tensor at a time
    hands back the pages it has read (`EdgeVLM.page_out_weights`) as it goes, so it holds at most `every` bytes
    of them beside what it makes."""

    def __init__(self, release: Callable[[], None], every: int = 256 << 20):
        self.release, self.every, self.done = release, every, 0

    def count(self, nbytes: int) -> None:
        self.done += nbytes
        if self.done >= self.every:
            self.release()
            self.done = 0


@contextlib.contextmanager
def released_every(seconds: float, release: Callable[[], None]):
    """Inside, a thread calls `release` every `seconds`: for a step inside a library that reads every mapped weight
    with nowhere to hand the pages back between reads (coremltools' converter compares each parameter with itself,
    then makes an fp16 copy of each), so that it holds what it reads in `seconds` rather than all of it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            release()

    thread = threading.Thread(target=loop, name="edgevlm-release", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim`; elsewhere nothing happens).

    PyTorch takes tensors under 32 MB from the heap. A step that makes many long-lived ones between short-lived
    ones (quantizing a model weight by weight) leaves free holes that glibc keeps resident: quantizing the 1.7 B
    model for ExecuTorch held 4.6 GiB where 2.8 GiB were live, and `torch.export` after it 5.9 GiB (2.9 live).
    """
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def uninitialised():
    """A context that builds modules without running parameter initialisers (their memory stays untouched, so it
    costs nothing until written): for a module whose every parameter is then loaded. transformers' own switch,
    which covers torch's initialisers and its models' `init_weights`."""
    from transformers.initialization import no_init_weights

    return no_init_weights()


def check_names(module: nn.Module, shapes: dict[str, tuple], path: str | Path) -> None:
    """Fail unless `shapes` (name → shape) names exactly `module`'s tensors (aliases excepted), at their shapes."""
    expected = unique_state(module)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    misshaped = sorted(
        f"{k} (expected {tuple(expected[k].shape)}, got {shapes[k]})"
        for k in set(expected) & set(shapes)
        if tuple(expected[k].shape) != shapes[k]
    )
    problems = [f"{what}: {', '.join(names[:8])}{' …' if len(names) > 8 else ''}"
                for what, names in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                    ("mis-shaped tensors", misshaped)) if names]
    if problems:
        raise EdgeVLMError("; ".join(problems), path)
