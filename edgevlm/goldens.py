"""`edgevlm goldens`: the golden vectors every bundle client tests against (tests/goldens/, docs/bundle-spec.md).

The browser sample, the native runner and the app cores re-implement the bundle contract (tokenizer, prompt,
image preprocessing, the three-function loop) in their own languages; these files pin what each step must give,
from the Python reference, so a client proves itself against committed numbers instead of against a Python
install. One command writes them all, seeded and deterministic: `edgevlm goldens --out tests/goldens`.

- `tokenizer.json` + `vectors.json` "text" / "prompts": text → ids, question → rendered prompt → ids with
  IMAGE_TOKEN_INDEX where the image goes (unicode, tabs, double spaces, edge spaces, digits, special-token text).
- `images/*.png` + "images": 8-bit RGB PNGs at odd sizes (upscaled, downscaled, already at size) → the resized
  uint8 pixels (PIL bicubic) and the normalised float32 tensor, as sha256 of their raw bytes plus samples.
- `bundles/<format>-<quant>/` + "bundles": a tiny model exported to every format that runs here, fp32 (GGUF:
  f16, its widest) and 4-bit; per bundle and image, what its own Python runtime gives: image embeddings
  (shape, sums, samples), the top-5 logits after prefill, NEW_TOKENS greedy tokens and their margins.

The golden model is the tiny MobileVLM V2 (CLIP 336/14 → LDPv2 → Llama; the real image geometry, since
llama.cpp's LDPv2 graph assumes 24 x 24 patches) made narrower and shallower so that all of this stays under
5 MB. Random weights give near-tie logits, and a greedy token that flips between engines (int4 kernels, wasm)
would make the goldens flaky; so the model first memorises a caption of each golden image (a few seconds of
Adam), which makes every greedy step a clear choice: vectors.json records each run's smallest top-1/top-2 gap.
That training runs in float64 with its weights rounded to float16 values after every step, so that the
float-level differences between CPUs, thread counts or BLAS builds (1e-16 relative) cannot change a committed bit.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edgevlm.bundle.image import ImagePreprocess, load_image
from edgevlm.bundle.manifest import MANIFEST, TOKENIZER
from edgevlm.bundle.tokenizer import IMAGE_TOKEN_INDEX
from edgevlm.data.shapes import COLORS, POSITIONS, shape_mask
from edgevlm.errors import EdgeVLMError
from edgevlm.export import ExportConfig, export
from edgevlm.io import atomic_dir, atomic_file, read_json
from edgevlm.models.factory import create_from_config
from edgevlm.models.presets import get_preset
from edgevlm.models.vlm import EdgeVLM

PRESET = "mobilevlm-v2-tiny"
BUNDLES = (("onnx", "fp32"), ("onnx", "int4"), ("gguf", "f16"), ("gguf", "q4_0"),
           ("executorch", "fp32"), ("executorch", "int4"))  # no CoreML: it predicts on macOS only
SEED = 0
NEW_TOKENS = 8
QUESTION = "Describe the image."  # what the golden model memorised, and what every bundle is asked
MEMORISE_STEPS, MEMORISE_LR = 60, 3e-3
VECTORS = "vectors.json"
SAMPLES = 8  # sampled values per tensor, besides the corners


@dataclass(frozen=True)
class Shape:
    name: str  # a `shapes` shape: circle, square, triangle
    color: str  # a `shapes` colour
    x: float  # centre, as fractions of the image's width and height
    y: float
    size: float  # side, as a fraction of the image's shorter side

    @property
    def position(self) -> str:
        return POSITIONS[2 * (self.y >= 0.5) + (self.x >= 0.5)]


@dataclass(frozen=True)
class GoldenImage:
    file: str
    width: int
    height: int
    shapes: tuple[Shape, ...]

    @property
    def caption(self) -> str:
        """What the golden model learns to say about this image, in `shapes` words (one token each)."""
        return "; ".join(f"{s.position}: {s.color} {s.name}" for s in self.shapes)


IMAGES = (
    GoldenImage("upscale-37x23.png", 37, 23, (Shape("square", "red", 0.25, 0.3, 0.4),
                                              Shape("circle", "blue", 0.75, 0.7, 0.45))),
    GoldenImage("downscale-517x389.png", 517, 389, (Shape("triangle", "green", 0.7, 0.25, 0.35),
                                                    Shape("circle", "yellow", 0.3, 0.7, 0.3),
                                                    Shape("square", "red", 0.8, 0.8, 0.25))),
    GoldenImage("exact-336x336.png", 336, 336, (Shape("circle", "green", 0.3, 0.25, 0.3),
                                                Shape("triangle", "blue", 0.7, 0.75, 0.4))),
)

TEXTS = (
    "",
    "What is in the top left?",
    "top left: red circle; top right: nothing; bottom left: digit 7; bottom right: blue square",
    "circle square triangle red green blue yellow nothing yes no 0 1 2 3 4 5 6 7 8 9",
    "  leading and trailing spaces  ",
    "double  spaces,\ttabs\t\tand\nnew lines\r\n",
    "digits 0123456789, 3.14159 and 1,000,000",
    "unicode: café, cafe\u0301, naïve, 中文, 日本語, emoji 🙂👍🏽",
    "USER: <image>\nWhat color is the square? ASSISTANT: red",
    "special tokens as text: <s> </s> <pad>",
)

QUESTIONS = (
    QUESTION,
    "What is in the top left?",
    "How many circles are there?",
    "<image>\nIs there a red circle?",
    "Look at <image> and say what colour the square is.",
    "  spaces around, and a tab\there  ",
)


# ---- the golden model -------------------------------------------------------------------------------------------
def golden_config():
    """The tiny MobileVLM V2 at a quarter of its widths and half its depths: ~0.25 M parameters."""
    cfg = get_preset(PRESET)
    cfg.vision = dataclasses.replace(cfg.vision, hidden_size=32, intermediate_size=128, num_layers=2, num_heads=2)
    cfg.llm = dataclasses.replace(cfg.llm, hidden_size=64, intermediate_size=192, num_layers=2, num_heads=2,
                                  num_kv_heads=2, max_position_embeddings=256)
    return cfg


def golden_model(images: dict[str, np.ndarray]) -> EdgeVLM:
    """The seeded golden model, after it memorised each image's caption (see the module docstring)."""
    model = create_from_config(golden_config(), seed=SEED)
    cases = [(model.pixel_values(images[g.file]), model.prompt_ids(QUESTION), model.answer_ids(g.caption))
             for g in IMAGES]
    memorise(model, cases)
    return model


def memorise(model: EdgeVLM, cases: list[tuple[torch.Tensor, list[int], list[int]]]) -> None:
    """Train a float64 copy of `model` on (pixels, prompt ids, answer ids), its weights rounded to float16 values
    after every step, and copy them back.

    Rounding every step is what makes the weights the same bits on every CPU: float64 kernels differ between
    CPUs by ~1e-16, and over 60 Adam steps that difference grows (rounding only at the end, 30 of 0.25 M
    weights came out one float16 step apart between an AVX512 Xeon and an AVX2 EPYC). Snapped back to the
    float16 grid each step, the copies on two CPUs stay equal unless an update lands within ~1e-16 of a
    rounding boundary: odds of ~1e-13 per weight and step.
    """
    work = copy.deepcopy(model).double()
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(work.parameters(), lr=MEMORISE_LR)
    snap(work)
    for _ in range(MEMORISE_STEPS):
        opt.zero_grad()
        loss = sum(answer_loss(work, pixels.double(), prompt, answer) for pixels, prompt, answer in cases)
        loss.backward()
        opt.step()
        snap(work)
    with torch.no_grad():
        for ours, trained in zip(model.parameters(), work.parameters()):
            ours.copy_(trained)


def snap(model: torch.nn.Module) -> None:
    """Round every weight to the nearest float16 value (+ 0.0 makes a -0.0 +0.0: the sign of a zero, on K biases
    whose gradient is zero, follows the threads)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(p.dtype) + 0.0)


def answer_loss(model: EdgeVLM, pixels: torch.Tensor, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """Cross-entropy of the answer tokens after the prompt with the image spliced in (teacher forcing)."""
    x = model.splice(prompt, model.encode_image(pixels)[0])  # (T, D)
    target = torch.tensor(answer)
    logits = model.llm(inputs_embeds=torch.cat([x, model.embed(target)])[None]).logits[0]  # (T + A, V)
    return F.cross_entropy(logits[len(x) - 1 : -1], target)


# ---- images -----------------------------------------------------------------------------------------------------
def draw(g: GoldenImage, index: int) -> np.ndarray:
    """(H, W, 3) uint8: seeded grey noise, then the shapes in `shapes` colours (numpy only: no drawing library
    whose antialiasing could change between versions)."""
    rng = np.random.default_rng([SEED, index])
    # grey noise (the same in R, G, B) keeps the PNGs small; colours come from the shapes
    img = (int(rng.integers(190, 231)) + rng.integers(-6, 7, size=(g.height, g.width, 1))).repeat(3, axis=2)
    for s in g.shapes:
        side = max(2, round(s.size * min(g.width, g.height)))
        top = min(max(round(s.y * g.height - side / 2), 0), g.height - side)
        left = min(max(round(s.x * g.width - side / 2), 0), g.width - side)
        img[top : top + side, left : left + side][shape_mask(s.name, side)] = COLORS[s.color]
    return img.astype(np.uint8)


def sample_points(shape: tuple[int, ...], rng: np.random.Generator) -> list[tuple[int, ...]]:
    """The corners' first and last index per axis, the centre, and SAMPLES seeded points of an array."""
    corners = [tuple(n - 1 if (k >> i) & 1 else 0 for i, n in enumerate(shape)) for k in range(2 ** len(shape))]
    seeded = [tuple(int(rng.integers(n)) for n in shape) for _ in range(SAMPLES)]
    return corners + [tuple(n // 2 for n in shape)] + seeded


def samples(a: np.ndarray, rng: np.random.Generator) -> list[list]:
    return [[*p, a[p].item()] for p in sample_points(a.shape, rng)]


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


def image_vectors(g: GoldenImage, rgb: np.ndarray, pre: ImagePreprocess) -> dict:
    resized = pre.resized(rgb)  # (S, S, 3) uint8
    pixels = pre.normalize(resized)  # (3, S, S) float32
    rng = np.random.default_rng([SEED, 100])
    return {"file": f"images/{g.file}", "width": g.width, "height": g.height, "size": pre.size,
            "rgb_sha256": sha256(rgb), "caption": g.caption,
            "resized_sha256": sha256(resized), "resized_samples": samples(resized, rng),
            "pixel_values_sha256": sha256(pixels), "pixel_values_samples": samples(pixels, rng)}


# ---- text and prompts -------------------------------------------------------------------------------------------
def prompt_vectors(model: EdgeVLM, question: str) -> dict:
    ids = model.prompt_ids(question)
    return {"question": question, "prompt": model.template.prompt(question), "ids": ids,
            "image_index": ids.index(IMAGE_TOKEN_INDEX)}


# ---- bundles ----------------------------------------------------------------------------------------------------
def bundle_vectors(bundle: Path, root: Path, images: dict[str, np.ndarray], reference: dict[str, list[int]]) -> list:
    """Run one bundle in its own runtime on every golden image; its greedy tokens must be PyTorch's."""
    from edgevlm.runtimes import load_runtime

    runtime = load_runtime(bundle, threads=1)
    m, out = runtime.bundle.manifest, []
    for g in IMAGES:
        t = runtime.trace(Image.fromarray(images[g.file]), QUESTION, NEW_TOKENS)
        if t.tokens != reference[g.file]:
            raise EdgeVLMError(f"greedy tokens {t.tokens} on {g.file} differ from PyTorch's {reference[g.file]}",
                               bundle)
        gaps = [float(np.diff(np.sort(x)[-2:])[0]) for x in t.logits]
        top5 = np.argsort(-t.logits[0], kind="stable")[:5]
        emb = t.image_embeds.astype(np.float64)
        out.append({
            "dir": bundle.relative_to(root).as_posix(), "format": m["format"], "quant": m["quantization"]["name"],
            "image": f"images/{g.file}", "question": QUESTION, "prompt_positions": t.prompt_positions,
            "image_embeds": {"shape": list(t.image_embeds.shape), "sum": emb.sum(), "abs_sum": np.abs(emb).sum(),
                             "samples": samples(t.image_embeds, np.random.default_rng([SEED, 200]))},
            "top5": [[int(i), float(t.logits[0][i])] for i in top5],
            "greedy_ids": t.tokens, "text": runtime.bundle.tokenizer.decode(t.tokens),
            "top2_gaps": gaps, "min_top2_gap": min(gaps),
        })
    del runtime
    return out


def reference_tokens(model: EdgeVLM, images: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """PyTorch's NEW_TOKENS greedy tokens per image (EOS not stopping: the golden captions are longer)."""
    out = {}
    with torch.no_grad():
        for g in IMAGES:
            x = model.splice(model.prompt_ids(QUESTION), model.encode_image(model.pixel_values(images[g.file]))[0])
            ids: list[int] = []
            for _ in range(NEW_TOKENS):
                ids.append(int(model.llm(inputs_embeds=x[None]).logits[0, -1].argmax()))
                x = torch.cat([x, model.embed(torch.tensor(ids[-1:]))])
            out[g.file] = ids
    return out


# ---- the whole set ----------------------------------------------------------------------------------------------
def write_goldens(out: str | Path, progress: bool = True) -> Path:
    """Write tests/goldens (README.md, tokenizer.json, images/, bundles/, vectors.json) to `out`, atomically."""
    out = Path(out)
    say = print if progress else (lambda *a, **k: None)
    with atomic_dir(out, "goldens") as tmp, torch.random.fork_rng():
        (tmp / "images").mkdir()
        images = {}
        for i, g in enumerate(IMAGES):
            Image.fromarray(draw(g, i)).save(tmp / "images" / g.file)
            images[g.file] = np.asarray(load_image(tmp / "images" / g.file))  # what a client decodes
        say("training the golden model (float64, a few seconds)")
        model = golden_model(images).eval()
        model.tokenizer.save(tmp / TOKENIZER)
        reference = reference_tokens(model, images)
        entries = []
        for fmt, quant in BUNDLES:
            say(f"exporting {fmt} {quant}")
            bundle = export(model, ExportConfig(fmt, quant, verify_limit=0), tmp / "bundles" / f"{fmt}-{quant}",
                            progress=False).path
            entries += bundle_vectors(bundle, tmp, images, reference)
        manifests = [read_json(tmp / "bundles" / f"{f}-{q}" / MANIFEST) for f, q in BUNDLES]
        vectors = {
            "spec_version": spec_version(manifests, tmp),
            "generator": "edgevlm goldens",
            "tokenizer": TOKENIZER,
            "new_tokens": NEW_TOKENS,
            "image_token_index": IMAGE_TOKEN_INDEX,
            "text": [{"text": t, "ids": model.tokenizer.encode(t)} for t in TEXTS],
            "prompts": [prompt_vectors(model, q) for q in QUESTIONS],
            "images": [image_vectors(g, images[g.file], model.preprocess) for g in IMAGES],
            "reference": [{"image": f"images/{g.file}", "question": QUESTION, "greedy_ids": reference[g.file]}
                          for g in IMAGES],
            "bundles": entries,
        }
        write_text(tmp / VECTORS, dump_vectors(vectors))
        write_text(tmp / "README.md", readme(tmp, model))
    return out


def spec_version(manifests: list[dict], root: Path):
    """The bundle spec version the manifests declare (None before manifests carried one); all must agree."""
    versions = {json.dumps(m.get("spec_version")) for m in manifests}
    if len(versions) != 1:
        raise EdgeVLMError(f"the golden bundles declare different spec versions: {sorted(versions)}", root)
    return json.loads(versions.pop())


def dump_vectors(vectors: dict) -> str:
    """Indented JSON with every innermost list (ids, samples, top-5 pairs) on one line, UTF-8 as is."""
    text = json.dumps(vectors, indent=1, ensure_ascii=False)
    return re.sub(r"\[\s*([^\[\]{}\"]*?)\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text) + "\n"


def write_text(path: Path, text: str) -> None:
    with atomic_file(path, "wb") as f:
        f.write(text.encode("utf-8"))


def readme(root: Path, model: EdgeVLM) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    n = sum(p.numel() for p in model.parameters())
    rows = "\n".join(f"| `{d}` | {sum(p.stat().st_size for p in (root / d).rglob('*') if p.is_file()) / 1e3:.0f} kB |"
                     for d in [f"bundles/{f}-{q}" for f, q in BUNDLES])
    return README.format(params=n / 1e6, total=total / 1e6, rows=rows, new_tokens=NEW_TOKENS, question=QUESTION,
                         steps=MEMORISE_STEPS) + "\n"


README = """# Golden vectors

What every bundle client (the Python runtimes, the browser sample, the native runner, the Kotlin / Swift cores)
checks itself against. Generated, never edited: regenerate with

    edgevlm goldens --out tests/goldens

and commit the result; `tests/test_goldens.py` regenerates them and fails on any difference.

## Files
- `tokenizer.json`: the tokenizer every bundle carries (each `bundles/*/tokenizer.json` is this file).
- `images/*.png`: 8-bit RGB PNGs drawn from seeded noise and `shapes` figures at odd sizes: one smaller than
  the tower's 336 px (upscaled), one larger (downscaled), one already 336 x 336 (not resized). PNG, not JPEG:
  JPEG decoders differ.
- `bundles/<format>-<quant>/`: complete bundles (manifest.json, tokenizer.json, the format's files) of the
  golden model: ONNX fp32 and int4, GGUF f16 (GGUF's widest scheme) and q4_0, ExecuTorch fp32 and int4.
- `vectors.json`, the expected values:
  - `text`: `{{text, ids}}`: tokenizer.json on plain text (no BOS; special-token text is matched as the token).
  - `prompts`: `{{question, prompt, ids, image_index}}`: the rendered prompt and its ids as the bundle spec builds
    them: BOS, the text pieces around `<image>` tokenized separately, `-200` (`image_token_index`) where the image
    goes, at `ids[image_index]`.
  - `images`: `{{file, width, height, size, rgb_sha256, resized_sha256, resized_samples, pixel_values_sha256,
    pixel_values_samples}}`: the PNG's decoded RGB bytes, the PIL-bicubic resize to `size` x `size` as HWC uint8
    (samples `[y, x, c, value]`) and the normalised CHW float32 tensor (samples `[c, y, x, value]`); hashes are
    sha256 of the raw bytes (float32 little-endian). Both must match exactly: float32 arithmetic in the spec's
    order, `(v * (1/255) - mean) / std`, is exact in every language.
  - `bundles`: per bundle and image, from its own Python runtime, asked "{question}": `prompt_positions`
    (prefill length, image tokens included), `image_embeds` (`shape`, `sum`, `abs_sum`, samples `[i, j, value]`),
    `top5` `[id, logit]` after prefill, `greedy_ids` ({new_tokens} tokens; EOS does not stop them), their `text`
    (the tokenizer's raw decode; the answer a client shows is it stripped), and `top2_gaps` / `min_top2_gap`, the top-1 minus top-2 logit at each greedy step: a client whose logits
    differ from these by less than half that gap must produce the same tokens.
  - `reference`: PyTorch's greedy tokens for the same inputs; every bundle's must equal them.

## The golden model
The tiny MobileVLM V2 (`mobilevlm-v2-tiny`: CLIP 336/14, 576 patches → LDPv2 → 144 image tokens → Llama, the
`shapes` tokenizer) at 32-wide, 2-layer tower and 64-wide, 2-layer LLM, {params:.2f} M parameters, so that
everything here is {total:.2f} MB (the limit is 5 MB). It memorised each image's caption in {steps} Adam steps, so
that greedy steps are clear choices rather than the near-ties of random weights (float64 training, weights rounded
to float16 values after every step: the same bits on any CPU).

| bundle | size |
|---|---|
{rows}

## Comparing
Every file here is byte-deterministic (regenerations with 1 and 2 torch threads gave the same bytes, on an
AVX512 Xeon before the per-step rounding and on an AVX2-only EPYC after it),
so `tests/test_goldens.py` compares every file by sha256 and vectors.json value by value: integers, strings
and hashes exactly, floats within 1e-4 (relative and absolute; here they are equal); a client on another engine (onnxruntime-web, llama.cpp's C++ API,
ExecuTorch's C++ runtime) should match fp32 bundles to ~1e-4 relative, and quantized bundles produce the same
greedy tokens (their `min_top2_gap` says by how much). ONNX int4 uses `MatMulNBits` at accuracy level 4, whose
x86 kernel quantizes activations to int8 and whose wasm kernel does not: its logits differ more there, its
tokens should not.
"""
