"""What the terminal shows: edgevlm's own output (progress bars, tables, answers, one-line errors) by default,
the libraries' warnings and the engines' native log lines only with `--verbose`.

Python warnings and loggers are silenced by filter; engines that write to file descriptor 2 from C++
(ExecuTorch's `[cpuinfo_utils.cpp]` lines, XNNPACK, onnxruntime) are silenced by pointing fd 2 at /dev/null
around their calls (`native_quiet`). Errors still reach the user: every engine failure is raised as an
`EdgeVLMError` with the engine's own message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Iterator

VERBOSE = False


def configure(verbose: bool) -> None:
    """Set the process's (and its child processes') noise level once, at the start of a command."""
    global VERBOSE
    VERBOSE = verbose
    if verbose:
        return
    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # bench workers and other child processes
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("torch", "torchao", "executorch", "transformers", "coremltools", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def native_quiet() -> Iterator[None]:
    """Discard what native code writes to stderr inside the block, unless --verbose."""
    if VERBOSE:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
