"""A short run of benchmarks/fuzz.py per target inside the suite, so a loader regression shows here.

The long runs (>= 100,000 executions per target) and their figures are in docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz.py"
RUNS = {"bundle": 1500, "data": 1500, "tokenizer": 1000, "image": 1500}  # 5,500 in all, ~30 s


@pytest.mark.parametrize("target", RUNS)
def test_fuzz_short(target, tmp_path):
    r = subprocess.run([sys.executable, str(FUZZ), target, "--runs", str(RUNS[target]), "--json",
                        str(tmp_path / "r.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (result,) = json.loads((tmp_path / "r.json").read_text())
    assert result["executions"] >= RUNS[target] and result["unexpected_exceptions"] == 0
    assert result["edgevlm_errors"] > 0  # the mutations reached the loader's checks
