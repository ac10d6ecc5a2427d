"""The browser sample (examples/web) against Python: its JS core under `node --test`, and the page itself
answering the golden questions in headless Chromium (Debian's chromium driven by playwright-core).

Node and Chromium are part of the set-up (scripts/setup installs both): a missing one fails here, naming
the fix, never skips. The vectors and bundles are the goldens (tests/goldens, docs/bundle-spec.md section 9).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgevlm.bundle.image import load_image
from edgevlm.bundle.manifest import open_bundle
from edgevlm.bundle.tokenizer import split_at_image
from edgevlm.errors import EdgeVLMError

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "examples" / "web"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SETUP = "run scripts/setup (it installs Node packages with npm ci and Debian's chromium)"


def need(tool: str) -> str:
    path = shutil.which(tool) or (tool if Path(tool).is_file() else None)
    if not path:
        pytest.fail(f"{tool} not found: {SETUP}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def node() -> str:
    path = need("node")
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.fail(f"{WEB / 'node_modules'} lacks onnxruntime-web: {SETUP}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def goldens() -> Path:
    """The directory holding vectors.json, images/ and bundles/: tests/goldens, or $EDGEVLM_GOLDENS (another
    directory `edgevlm goldens` wrote, to iterate on the page)."""
    return Path(os.environ.get("EDGEVLM_GOLDENS") or ROOT / "tests" / "goldens")


@pytest.fixture(scope="session")
def vectors(goldens) -> dict:
    return json.loads((goldens / "vectors.json").read_text())


def tap_failures(tap: str) -> list[str]:
    """Each failing test in node's TAP output: its name, then its error (the YAML block's `error:` value)."""
    failures, lines = [], tap.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)not ok \d+ - (.*)", line)
        if not m:
            continue
        error, block = [], lines[i + 1 : i + 60]
        for j, ln in enumerate(block):
            if ln.strip() == "...":
                break
            if ln.strip().startswith("error:"):
                head = ln.strip()[len("error:"):].strip()
                if head in ("|-", "|", ">-", ">"):  # a multi-line value: the lines indented below it
                    indent = len(ln) - len(ln.lstrip())
                    error += [b.strip() for b in itertools.takewhile(
                        lambda b: len(b) - len(b.lstrip()) > indent, block[j + 1 :])]
                else:
                    error.append(head.strip("'\""))
                break
        failures.append(f"{m.group(2)}: " + " ".join(error[:12]))
    return failures


def test_node_unit_tests(goldens, node):
    """The JS core (bundle checks, resize + normalisation, tokenizer + prompt, the three graphs in wasm) in Node."""
    files = sorted(str(p.relative_to(WEB)) for p in (WEB / "test").glob("*.test.mjs"))
    proc = subprocess.run([node, "--test", "--test-reporter=tap", *files], cwd=WEB, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "EDGEVLM_GOLDENS": str(goldens)})
    for line in proc.stdout.splitlines():
        if line.startswith("# ") and not line.startswith("# Subtest"):
            print(line)  # the summary counts and the int4 agreement figure
    failures = tap_failures(proc.stdout)
    if failures or proc.returncode:
        pytest.fail("node --test failed:\n  " + "\n  ".join(failures or [proc.stdout[-2000:], proc.stderr[-2000:]]),
                    pytrace=False)
    assert re.search(r"^# pass [1-9]", proc.stdout, re.M)


# ---- the page in Chromium -----------------------------------------------------------------------------------------
def load_serve():
    spec = importlib.util.spec_from_file_location("edgevlm_web_serve", WEB / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def served(goldens, vectors):
    """The page and the golden ONNX bundles on 127.0.0.1 (COOP / COEP served): (base URL, bundle name → URL path)."""
    dirs = {e["dir"] for e in vectors["bundles"] if e["format"] == "onnx"}
    names = {d: Path(d).name for d in dirs}
    server = load_serve().make_server({names[d]: goldens / d for d in dirs})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", {d: f"bundles/{names[d]}/" for d in dirs}
    server.shutdown()
    server.server_close()


def run_browser(node: str, config: dict, timeout: int = 600) -> dict:
    """tools/browser.mjs with `config`; its JSON result (a failure names the bundle and the page's message)."""
    need(CHROMIUM)
    proc = subprocess.run([node, "tools/browser.mjs", json.dumps(config)], cwd=WEB, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CHROMIUM": CHROMIUM})
    assert proc.returncode == 0, f"browser run failed: {proc.stderr.strip()[-2000:]}"
    return json.loads(proc.stdout)


def browser_jobs(goldens: Path, entries: list[dict], paths: dict[str, str]) -> tuple[list[dict], list[int]]:
    """One page load per (bundle, image), answering that pair's golden questions; and the entry index of each
    answer in the order the page gives them."""
    jobs: dict[tuple, dict] = {}
    order: dict[tuple, list[int]] = {}
    for i, e in enumerate(entries):
        key = (e["dir"], e["image"])
        job = jobs.setdefault(key, {"bundle": paths[e["dir"]], "image": str(goldens / e["image"]), "questions": []})
        job["questions"].append({"question": e["question"],
                                 "maxNewTokens": len(e["greedy_ids"])})
        order.setdefault(key, []).append(i)
    return list(jobs.values()), [i for key in jobs for i in order[key]]


@pytest.fixture(scope="session")
def browser_answers(goldens, node, vectors, served, tmp_path_factory):
    """(entries, the page's answer to each, the screenshot's path, the browser's version)."""
    url, paths = served
    entries = [e for e in vectors["bundles"] if e["format"] == "onnx"]
    jobs, order = browser_jobs(goldens, entries, paths)
    jobs[0]["screenshot"] = True
    shot = Path(os.environ.get("EDGEVLM_WEB_SCREENSHOT") or tmp_path_factory.mktemp("web") / "page.png")
    result = run_browser(node, {"url": url, "jobs": jobs, "screenshot": str(shot)})
    assert len(result["results"]) == len(entries)
    answers = [None] * len(entries)
    for i, answer in zip(order, result["results"]):
        answers[i] = answer
    return entries, answers, shot, result["browser"]


def test_browser_fp32_ids_equal_python(browser_answers):
    entries, answers, _, browser = browser_answers
    fp32 = [(e, a) for e, a in zip(entries, answers) if e["quant"] == "fp32"]
    assert fp32, "no fp32 ONNX bundle in the golden vectors"
    for e, a in fp32:
        assert a["question"] == e["question"]
        assert a["ids"] == e["greedy_ids"], f"{browser}, {e['dir']}, {e['image']}, {e['question']!r}"
        assert a["text"] == e["text"].strip()  # vectors.json keeps the raw decode; an answer is stripped
        assert a["imageMs"] > 0 and a["ttftMs"] >= a["imageMs"]
    print(f"{browser}: {len(fp32)} fp32 answers, ids identical to Python's")


def test_browser_int4_answers_agree_with_python(browser_answers):
    """Tolerance (examples/web/test/runtime.test.mjs INT4): >= 90% of the answers identical; measured 100%."""
    entries, answers, _, browser = browser_answers
    int4 = [(e, a) for e, a in zip(entries, answers) if e["quant"] == "int4"]
    if not int4:
        pytest.fail("no int4 ONNX bundle in the golden vectors", pytrace=False)
    same = sum(a["ids"] == e["greedy_ids"] for e, a in int4)
    print(f"{browser}: int4 agreement {same}/{len(int4)} answers identical to Python's")
    assert same >= 0.9 * len(int4)


def test_browser_screenshot_shows_an_answer(browser_answers):
    _, answers, shot, _ = browser_answers
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert answers[0]["text"]


def test_browser_bundle_picked_as_a_directory(goldens, node, vectors, served):
    """The directory picker path (files read with File.arrayBuffer, not fetched) gives the same answer."""
    url, _ = served
    entry = next(e for e in vectors["bundles"] if e["format"] == "onnx" and e["quant"] == "fp32")
    job = {"bundleDir": str(goldens / entry["dir"]), "image": str(goldens / entry["image"]),
           "questions": [{"question": entry["question"], "maxNewTokens": len(entry["greedy_ids"])}]}
    result = run_browser(node, {"url": url, "jobs": [job]})
    assert result["results"][0]["ids"] == entry["greedy_ids"]


def test_bad_bundle_is_a_one_line_message_in_the_page(goldens, node, vectors, tmp_path):
    """A bundle whose weights were changed: the page shows the file and the reason, on one line."""
    entry = next(e for e in vectors["bundles"] if e["format"] == "onnx")
    bad = tmp_path / "bad"
    shutil.copytree(goldens / entry["dir"], bad)
    with open(bad / "weights.bin", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    server = load_serve().make_server({"bad": bad})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        job = {"bundle": "bundles/bad/", "image": str(goldens / entry["image"]), "questions": []}
        proc = subprocess.run([node, "tools/browser.mjs", json.dumps({"url": f"http://127.0.0.1:{server.server_port}/",
                                                                      "jobs": [job], "timeoutMs": 60_000})],
                              cwd=WEB, capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1
    assert "page: weights.bin: sha256 differs from manifest.json" in proc.stderr, proc.stderr


# ---- the page refuses and orients as Python does (docs/bundle-spec.md sections 4 and 6) ---------------------------
REFUSAL_QUESTIONS = ["What is </s> in the top left?", "<pad> then <s> and </s>, <pad> again?",
                     "What is <|endoftext|> here?", "<image> and <image>?"]


def sha256(a: np.ndarray) -> str:
    """As the goldens hash arrays (edgevlm/goldens.py, not imported: it imports torch): C order, little-endian."""
    return hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


def python_refusal(bundle, question: str) -> str | None:
    """Python's one-line refusal of `question` (what the CLI prints after `error: `), or None if it runs."""
    try:
        split_at_image(bundle.prompt_ids(question))
    except EdgeVLMError as e:
        return str(e)
    return None


def exif_jpeg(path: Path, orientation: int) -> Path:
    """A 61 x 40 JPEG (no chroma subsampling) whose EXIF says to rotate it: asymmetric, so any turn shows."""
    y, x = np.mgrid[0:40, 0:61]
    rgb = np.stack([x * 4, y * 6, (x * y) % 256], axis=-1).astype(np.uint8)
    rgb[5:15, 5:25] = (255, 0, 0)  # a red block near the top left
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, "JPEG", quality=95, subsampling=0, exif=exif)
    return path


def test_page_refuses_and_orients_as_python(goldens, node, vectors, served, tmp_path):
    """One page: questions that spell special tokens are refused with Python's message (and the others run),
    then a JPEG with EXIF orientation 6 becomes the model input Python's load_image + preprocessing gives, bit
    for bit, which differs from the input with the tag ignored."""
    url, paths = served
    entry = next(e for e in vectors["bundles"] if e["format"] == "onnx" and e["quant"] == "fp32")
    bundle = open_bundle(goldens / entry["dir"])
    expected = {q: python_refusal(bundle, q) for q in REFUSAL_QUESTIONS}
    assert expected["What is </s> in the top left?"] == "the prompt contains the tokenizer's special token text </s>"
    assert expected["What is <|endoftext|> here?"] is None  # not a special token of this tokenizer: plain text

    image = exif_jpeg(tmp_path / "rotated.jpg", 6)
    with Image.open(image) as im:
        ignored = sha256(bundle.preprocess.resized(im.convert("RGB")))  # what a reader ignoring the tag gets
    upright = bundle.preprocess.resized(load_image(image))
    assert sha256(upright) != ignored

    job = {"bundle": paths[entry["dir"]], "image": str(image), "inputDigest": True,
           "questions": [{"question": q, "maxNewTokens": 1, "mayRefuse": True} for q in REFUSAL_QUESTIONS]
           + [{"question": entry["question"], "maxNewTokens": 1}]}
    results = run_browser(node, {"url": url, "jobs": [job]})["results"]
    for q, got in zip(REFUSAL_QUESTIONS, results):
        assert got.get("refused") == expected[q], q
    last = results[-1]
    assert last["resizedSha256"] == sha256(upright)
    assert last["pixelsSha256"] == sha256(bundle.preprocess.normalize(upright))
