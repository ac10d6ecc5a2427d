"""Fuzz the loaders that read users' files: the only exception they may raise is `EdgeVLMError`.

Targets: the bundle reader (`open_bundle` on a mutated manifest.json beside a real bundle's files), the LLaVA
data reader (`read_llava` on a mutated data.json), the tokenizer path (`TextTokenizer.load` on a mutated
tokenizer.json, then a prompt encoded and decoded) and the image loader (`load_image` + the bundle
preprocessing on mutated PNG / JPEG / GIF bytes). Coverage-guided with atheris (libFuzzer for Python: it
instruments edgevlm's, Pillow's and jsonschema's bytecode); without atheris, a seeded random mutation fuzzer
over the same seeds (`--engine random`), weaker but dependency-free.

    python benchmarks/fuzz.py --runs 100000                 # every target, one process each, in turn
    python benchmarks/fuzz.py image --runs 2000 --json r.json

Each target runs in its own process (libFuzzer exits the process when done). A target's run fails on the
first other exception (atheris prints the traceback and the input), or on an input slower than --timeout s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "tests" / "goldens"
PROMPT = "USER: <image>\nWhat is in the top left? ASSISTANT:"


@dataclass(frozen=True)
class Target:
    file: str  # the file name the fuzzed bytes are written to, inside the target's work dir
    seeds: Callable[[], list[bytes]]
    setup: Callable[[Path], None]  # prepares the work dir once
    run: Callable[[Path], None]  # reads work/file; may raise only EdgeVLMError


def _image_seeds() -> list[bytes]:
    import numpy as np
    from PIL import Image

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8))
    out = []
    for fmt, im, kw in [("PNG", rgb, {}), ("JPEG", rgb, {}), ("GIF", rgb.convert("P"), {}),
                        ("PNG", rgb.convert("P"), {"transparency": 0}), ("JPEG", rgb.convert("CMYK"), {}),
                        ("PNG", Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000), {}),
                        ("BMP", rgb, {}), ("TIFF", rgb, {}), ("WEBP", rgb, {})]:
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        out.append(b.getvalue())
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    b = io.BytesIO()
    rgb.save(b, "JPEG", exif=exif)
    return out + [b.getvalue(), (GOLDENS / "images" / "upscale-37x23.png").read_bytes()]


def _image_run(work: Path) -> None:
    from edgevlm.bundle.image import ImagePreprocess, load_image

    ImagePreprocess(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(load_image(work / "image"))


def _data_seeds() -> list[bytes]:
    rec = {"id": "0", "image": "images/0.png", "kind": "color",
           "conversations": [{"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"}]}
    return [json.dumps([rec]).encode(), json.dumps([rec, {**rec, "id": 1, "kind": 3}]).encode(), b"[]", b"{}"]


def _data_run(work: Path) -> None:
    from edgevlm.data.llava import read_llava

    read_llava(work)


BUNDLE = GOLDENS / "bundles" / "onnx-int4"


def _bundle_seeds() -> list[bytes]:
    return [(b / "manifest.json").read_bytes() for b in sorted((GOLDENS / "bundles").iterdir())]


def _bundle_setup(work: Path) -> None:
    for f in BUNDLE.iterdir():
        if f.name != "manifest.json":
            shutil.copy(f, work / f.name)


def _bundle_run(work: Path) -> None:
    from edgevlm.bundle.manifest import open_bundle

    b = open_bundle(work)
    b.prompt_ids("What is in the top left?")
    b.preprocess.resized(__import__("numpy").zeros((4, 4, 3), dtype="uint8"))


def _tokenizer_seeds() -> list[bytes]:
    return [(GOLDENS / "tokenizer.json").read_bytes()]


def _tokenizer_run(work: Path) -> None:
    from edgevlm.bundle.tokenizer import TextTokenizer, split_at_image

    tok = TextTokenizer.load(work / "tokenizer.json")
    before, after = split_at_image(tok.encode_prompt(PROMPT))
    tok.decode(before + after)


TARGETS: dict[str, Target] = {
    "bundle": Target("manifest.json", _bundle_seeds, _bundle_setup, _bundle_run),
    "data": Target("data.json", _data_seeds, lambda work: None, _data_run),
    "tokenizer": Target("tokenizer.json", _tokenizer_seeds, lambda work: None, _tokenizer_run),
    "image": Target("image", _image_seeds, lambda work: None, _image_run),
}


# ---- one target, in this process ------------------------------------------------------------------------------
class Counter:
    """Executions and EdgeVLMErrors so far, written to `stats` every 1000 executions and at the last one."""

    def __init__(self, stats: Path, runs: int):
        self.stats, self.runs, self.n, self.refused, self.t0 = stats, runs, 0, 0, time.time()

    def count(self, refused: bool) -> None:
        self.n += 1
        self.refused += refused
        if self.n % 1000 == 0 or self.n >= self.runs:
            self.stats.write_text(json.dumps({"executions": self.n, "edgevlm_errors": self.refused,
                                              "seconds": round(time.time() - self.t0, 1)}))


def one_input(target: Target, work: Path, counter: Counter, data: bytes) -> None:
    from edgevlm.errors import EdgeVLMError

    (work / target.file).write_bytes(data)
    try:
        target.run(work)
    except EdgeVLMError:
        counter.count(True)
        return
    counter.count(False)


def mutate(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    """One to four byte-level edits (flip, insert, delete, duplicate, splice, interesting value)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b) + 1)
        op = rng.randrange(6)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del b[i:i + rng.randint(1, 64)]
        elif op == 3:
            b[i:i] = b[i:i + rng.randint(1, 64)]
        elif op == 4:
            other = rng.choice(seeds)
            j = rng.randrange(len(other) + 1)
            b = b[:i] + bytearray(other[j:])
        else:
            b[i:i] = rng.choice([b"0", b"-1", b"1e999", b"null", b"[]", b"{}", b'"', b"\xff\xfe", b"\x00" * 4,
                                 b"4294967295", b'"../x"', b'"/etc/passwd"'])
    return bytes(b)


def child(name: str, runs: int, work: Path, engine: str, timeout: int) -> None:
    target = TARGETS[name]
    work.mkdir(parents=True, exist_ok=True)
    target.setup(work)
    counter = Counter(work / "stats.json", runs)
    seeds = target.seeds()
    if engine == "random":
        from edgevlm.errors import EdgeVLMError  # noqa: F401 (imported before timing)

        rng = random.Random(0)
        for i in range(runs):
            data = seeds[i] if i < len(seeds) else mutate(rng.choice(seeds), seeds, rng)
            try:
                one_input(target, work, counter, data)
            except Exception:
                (work / "crash").write_bytes(data)
                raise
        print(f"Done {counter.n} runs in {int(time.time() - counter.t0)} second(s)")
        return
    import atheris

    with atheris.instrument_imports(include=["edgevlm", "PIL", "jsonschema"]):
        import edgevlm.bundle.image  # noqa: F401
        import edgevlm.bundle.manifest  # noqa: F401
        import edgevlm.data.llava  # noqa: F401
    corpus = work / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(s)
    max_len = max(len(s) for s in seeds) * 2
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-timeout={timeout}", f"-max_len={max_len}", "-rss_limit_mb=4096",
                   f"-artifact_prefix={work}/", str(corpus)],
                  lambda data: one_input(target, work, counter, data))
    atheris.Fuzz()


# ---- every target, one child process each -----------------------------------------------------------------------
def run_target(name: str, runs: int, engine: str, timeout: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as d:
        work = Path(d)
        cmd = [sys.executable, __file__, name, "--child", "--runs", str(runs), "--work", str(work),
               "--engine", engine, "--timeout", str(timeout)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        stats = json.loads((work / "stats.json").read_text()) if (work / "stats.json").exists() else {}
        done = re.search(r"Done (\d+) runs in (\d+) second", p.stdout + p.stderr)
        crash = ""
        if p.returncode != 0:
            tail = (p.stdout + p.stderr).strip().splitlines()
            crash = "\n".join(tail[-25:])
    return {"target": name, "engine": engine, "runs_requested": runs,
            "executions": int(done.group(1)) if done else stats.get("executions", 0),
            "edgevlm_errors": stats.get("edgevlm_errors"), "seconds": round(time.time() - t, 1),
            "unexpected_exceptions": 0 if p.returncode == 0 else 1, "returncode": p.returncode, "crash": crash}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", help=f"of {', '.join(TARGETS)} (default: all)")
    p.add_argument("--runs", type=int, default=100_000, help="executions per target")
    p.add_argument("--engine", choices=["atheris", "random"], default=None,
                   help="default: atheris when installed, else random")
    p.add_argument("--timeout", type=int, default=20, help="seconds one input may take (a hang is a failure)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    unknown = set(a.targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    if a.engine is None:
        try:
            import atheris  # noqa: F401

            a.engine = "atheris"
        except ImportError:
            a.engine = "random"
    if a.child:
        child(a.targets[0], a.runs, a.work, a.engine, a.timeout)
        return 0
    results = []
    for name in a.targets or list(TARGETS):
        r = run_target(name, a.runs, a.engine, a.timeout)
        results.append(r)
        print(f"{name:<10} {a.engine:<8} {r['executions']:>8} executions in {r['seconds']:>7.1f} s, "
              f"{r['edgevlm_errors']} EdgeVLMError, {r['unexpected_exceptions']} unexpected exceptions")
        if r["crash"]:
            print(r["crash"])
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["unexpected_exceptions"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
