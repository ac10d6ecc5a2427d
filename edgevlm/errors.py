"""The one error type users see.

Every failure caused by input (a missing directory, a corrupt file, an unknown preset) is raised as
`EdgeVLMError` naming the file and the problem, so that the CLI can print it as one line and exit non-zero
instead of showing a traceback.
"""

from __future__ import annotations

from pathlib import Path


class EdgeVLMError(Exception):
    """A problem with the user's input, reported as `path: problem`."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
