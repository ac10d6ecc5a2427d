"""llama.cpp's process-wide glue, shared by its exporter (the quantizer) and its runtime: log capture.

llama.cpp reports problems by returning an error code or NULL and logging the reason. Its log (and mtmd's) is
routed here once per process and collected per call (`llama_log`), never printed, so that the caller can put
the last error line into a one-line `EdgeVLMError`.
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Iterator

_WARN, _ERROR, _CONT = 2, 3, 5  # ggml_log_level


class _LogCapture:
    """llama.cpp's log lines (level, text) since the capture began."""

    def __init__(self):
        self.lines: list[tuple[int, str]] = []
        self._level = 0

    def add(self, level: int, text: str) -> None:
        self._level = self._level if level == _CONT else level
        self.lines.append((self._level, text))

    def text(self, warnings: bool = False) -> str:
        return "".join(t for lvl, t in self.lines if not warnings or lvl in (_WARN, _ERROR))

    def last_error(self) -> str:
        errors = [t.strip() for lvl, t in self.lines if lvl == _ERROR and t.strip()]
        return errors[-1] if errors else ""


_capture = _LogCapture()  # the current capture; llama.cpp logs outside `llama_log()` go to a discarded one
_callback = None


def _install_log() -> None:
    """Route llama.cpp's and mtmd's logs into `_capture` (once per process)."""
    global _callback
    if _callback is None:
        import llama_cpp
        from llama_cpp import mtmd_cpp

        @llama_cpp.llama_log_callback
        def on_log(level, text, _user):
            _capture.add(level, text.decode("utf-8", "replace"))

        _callback = on_log
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_log_set(_callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def llama_log() -> Iterator[_LogCapture]:
    """Collect what llama.cpp logs inside the block."""
    global _capture
    _install_log()
    _capture = _LogCapture()
    yield _capture
    _capture = _LogCapture()
