"""What an ExecuTorch program's `text_decoder` method reads per decoded token, from the .pte itself: the bytes of
its constants and the layout of its KV cache. ExecuTorch's own deserializer reads the program's flatbuffer (the
file's head only: the segments after it hold the data, whose sizes the program lists).

XNNPACK delegates keep their weights in the program's named data (one segment per key, sha256-named), which a
delegate's payload refers to by key; a method's weights are the named entries its payloads name, plus the
method's own non-delegated constant tensors. Needs ExecuTorch (so torch), like the runtime that reads the file.
"""

from __future__ import annotations

import mmap
from math import prod
from pathlib import Path

from edgevlm.errors import EdgeVLMError

METHOD = "text_decoder"
CACHE_WRITE = "llama::update_cache"  # (value, cache, start_pos): the cache argument is a mutable buffer
# ExecuTorch ScalarType → bytes per element (executorch/exir/scalar_type.fbs)
ELEMENT_BYTES = {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 2, 6: 4, 7: 8, 11: 1, 15: 2}


def _program(path: Path):
    """(Program, the file mapped, where its segments start)."""
    from executorch.exir._serialize._program import _flatbuffer_to_program, _get_extended_header

    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    header = _get_extended_header(data[:64])
    if header is None or not header.is_valid():
        raise EdgeVLMError("not an ExecuTorch program with segments (no extended header)", path)
    return _flatbuffer_to_program(data[:header.program_size]), data, header.segment_base_offset


def _method(program, path: Path):
    plan = next((p for p in program.execution_plan if p.name == METHOD), None)
    if plan is None:
        raise EdgeVLMError(f"the program has no {METHOD} method", path)
    return plan


def _tensor_bytes(t) -> int:
    return prod(t.sizes) * ELEMENT_BYTES[int(t.scalar_type)]


def decoder_constant_bytes(path: Path) -> int:
    """Bytes of the text decoder's weights: the named data its delegates refer to, and its own constants."""
    program, data, base = _program(path)
    plan = _method(program, path)
    payloads = [data[base + s.offset: base + s.offset + s.size] for s in
                (program.segments[d.processed.index] for d in plan.delegates if int(d.processed.location) == 1)]
    payloads += [program.backend_delegate_data[d.processed.index].data for d in plan.delegates
                 if int(d.processed.location) == 0]
    used = [e for e in program.named_data if any(e.key.encode() in p for p in payloads)]
    # a delegate that names no data carries its weights inline (older XNNPACK payloads): count the payloads
    named = sum(program.segments[e.segment_index].size for e in used) if used else sum(map(len, payloads))
    own = {}
    for v in plan.values:  # constants have a data buffer and no planned memory; shared ones counted once
        t = v.val
        if type(t).__name__ == "Tensor" and t.data_buffer_idx > 0 and t.allocation_info is None:
            own[t.data_buffer_idx] = _tensor_bytes(t)
    return named + sum(own.values())


def decoder_kv_caches(path: Path) -> tuple[int, int, int]:
    """(cache tensors, elements per position, bytes per element) of the buffers the decoder's
    `llama::update_cache` calls write: [1, positions, kv heads, head dim] each (export/executorch.py)."""
    program, _, _ = _program(path)
    plan = _method(program, path)
    writes = {i for i, op in enumerate(plan.operators) if op.name == CACHE_WRITE}
    caches = {ins.instr_args.args[1] for ins in plan.chains[0].instructions
              if type(ins.instr_args).__name__ == "KernelCall" and ins.instr_args.op_index in writes}
    if not caches:
        raise EdgeVLMError(f"no {CACHE_WRITE} in the program's {METHOD}: cannot read its KV cache", path)
    tensors = [plan.values[i].val for i in sorted(caches)]
    widths = {prod(t.sizes[2:]) for t in tensors}
    if len(widths) != 1:
        raise EdgeVLMError(f"KV caches of different widths in {METHOD}: {sorted(widths)}", path)
    return len(tensors), widths.pop(), ELEMENT_BYTES[int(tensors[0].scalar_type)]
