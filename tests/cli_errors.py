"""The one check every bad-input test makes: a CLI command fails with one error line naming the file."""

from __future__ import annotations

import re

from edgevlm.cli import main


def fails(argv, capsys, needle: str) -> str:
    """The command fails with one error line (after any progress bar it erased), naming `needle`."""
    assert main(argv) != 0
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip()]
    assert "Traceback" not in err
    assert [line for line in lines if "error:" in line] == lines[-1:], err
    assert lines[-1].startswith(f"edgevlm {argv[0]}: error: ") and needle in lines[-1], err
    return lines[-1]
