"""Golden vectors for the browser sample, in the shape of tests/goldens/vectors.json, built from a model dir.

Until the shared goldens land in tests/goldens/, tests/test_web.py builds these: the tiny trained model
exported to ONNX fp32 and int4, PNG images (the `shapes` eval images, plus sizes that exercise every path
of the bicubic resize: up, down, one axis only, grey, RGBA), and Python's answers. Fields:
  text     [{text, ids}]                            tokenizer.encode, no special tokens
  prompts  [{question, prompt, ids}]                Template.prompt, encode_prompt (-200 at the image)
  images   [{file, size, resized_sha256, resized_samples [[y, x, c, v]], pixel_values_sha256,
             pixel_values_samples [[c, y, x, v]]}]  PIL's bicubic resize (HWC uint8), ImagePreprocess (CHW f32 LE)
  bundles  [{dir, format, quant, image, question, max_new_tokens, image_embeds {shape, sum, samples [[i, j, v]]},
             top5 [[id, logit]], greedy_ids, text}] load_runtime(dir).generate_many(image, [question], n)
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgevlm.data.llava import read_llava
from edgevlm.export import ExportConfig, export
from edgevlm.export import onnx as onnx_export
from edgevlm.models.vlm import EdgeVLM
from edgevlm.runtimes import load_runtime

NEW_TOKENS = 32
QUANTS = ("fp32", "int4")
TEXTS = ["USER: ", " ASSISTANT:", "What shape is in the top left cell?", "red circle", "0 1 2 3 4 5 6 7 8 9",
         "héllo wörld ✓ ünïcode", "two  spaces and\na newline", "Is there a 7?", "  leading and trailing  "]
QUESTIONS = ["What shape is in the image?", "<image>\nWhat color is the square?", "How many digits are there?",
             "What is in the bottom right cell?\n<image>"]


def _synthetic_images(rng: np.random.Generator, scene: Image.Image) -> dict[str, Image.Image]:
    """Images whose resize takes each path of Pillow's algorithm (a model-size image is not resized)."""
    return {
        "noise-130x100.png": Image.fromarray(rng.integers(0, 256, (100, 130, 3), dtype=np.uint8)),  # up, both axes
        "noise-517x401.png": Image.fromarray(rng.integers(0, 256, (401, 517, 3), dtype=np.uint8)),  # down
        "noise-336x200.png": Image.fromarray(rng.integers(0, 256, (200, 336, 3), dtype=np.uint8)),  # vertical only
        "grey-90x90.png": Image.fromarray(rng.integers(0, 256, (90, 90), dtype=np.uint8), "L"),
        "rgba-64x48.png": Image.fromarray(rng.integers(0, 256, (48, 64, 4), dtype=np.uint8), "RGBA"),
        "scene-448.png": scene.resize((448, 448), Image.Resampling.NEAREST),  # a scene the model knows, resized
    }


def _image_vector(path: Path, rel: str, preprocess) -> dict:
    image = Image.open(path).convert("RGB")
    size = preprocess.size
    hwc = preprocess.resized(image)  # (S, S, 3) uint8
    chw = preprocess.normalize(hwc).astype("<f4")  # (3, S, S)
    rng = np.random.default_rng(len(rel))
    ys, xs, cs = rng.integers(0, size, 8), rng.integers(0, size, 8), rng.integers(0, 3, 8)
    return {
        "file": rel, "size": size,
        "resized_sha256": hashlib.sha256(hwc.tobytes()).hexdigest(),
        "resized_samples": [[int(y), int(x), int(c), int(hwc[y, x, c])] for y, x, c in zip(ys, xs, cs)],
        "pixel_values_sha256": hashlib.sha256(chw.tobytes()).hexdigest(),
        "pixel_values_samples": [[int(c), int(y), int(x), float(chw[c, y, x])] for y, x, c in zip(ys, xs, cs)],
    }


def _bundle_vectors(bundle: Path, rel: str, quant: str, cases: list[tuple[str, str]], root: Path) -> list[dict]:
    """Python's answers: ids from generate_many, plus the first step's top-5 logits and the image embeddings."""
    rt = load_runtime(bundle, threads=1)
    out = []
    for image_rel, question in cases:
        image = Image.open(root / image_rel).convert("RGB")
        emb = rt.encode_image(image)  # (N_img, D)
        embeds = rt.prefill_embeds(emb, question)
        rt.reset()
        logits = rt.text_decoder(embeds, 0)  # (V,)
        top = np.argsort(-logits, kind="stable")[:5]
        ids = rt.generate_many(image, [question], NEW_TOKENS)[0]
        picks = [(i, j) for i in (0, len(emb) // 2, len(emb) - 1) for j in (0, emb.shape[1] - 1)]
        out.append({
            "dir": rel, "format": "onnx", "quant": quant, "image": image_rel, "question": question,
            "max_new_tokens": NEW_TOKENS,
            "image_embeds": {"shape": list(emb.shape), "sum": float(emb.astype(np.float64).sum()),
                             "samples": [[i, j, float(emb[i, j])] for i, j in picks]},
            "top5": [[int(i), float(logits[i])] for i in top],
            "greedy_ids": [int(i) for i in ids], "text": rt.decode(ids),
        })
    return out


def write_goldens(out: Path, model_dir: Path, data_dir: Path, images: int = 6) -> Path:
    """vectors.json + images/ + bundles/onnx-{fp32,int4}/ under `out`; returns `out`."""
    model = EdgeVLM.from_pretrained(model_dir)
    (out / "images").mkdir(parents=True)
    records = read_llava(data_dir)
    scenes = sorted({r.image for r in records})[:images]
    rels = []
    for i, p in enumerate(scenes):
        rels.append(f"images/scene-{i}.png")
        Image.open(p).convert("RGB").save(out / rels[-1])
    for name, image in _synthetic_images(np.random.default_rng(0), Image.open(scenes[0]).convert("RGB")).items():
        image.save(out / "images" / name)
        rels.append(f"images/{name}")

    traced = onnx_export.export_graphs(model)  # one trace, both schemes (the exporter is deterministic)
    for quant in QUANTS:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(onnx_export, "export_graphs", lambda m: copy.deepcopy(traced))
            export(model, ExportConfig("onnx", quant, verify_limit=0), out / "bundles" / f"onnx-{quant}", progress=False)

    # every eval question about the first images, the fixed questions about the resized scene
    cases = [(f"images/scene-{scenes.index(r.image)}.png", r.question) for r in records if r.image in scenes[:3]]
    cases += [("images/scene-448.png", q) for q in QUESTIONS]
    vectors = {
        "text": [{"text": t, "ids": model.tokenizer.encode(t)} for t in TEXTS],
        "prompts": [{"question": q, "prompt": model.template.prompt(q),
                     "ids": model.tokenizer.encode_prompt(model.template.prompt(q))} for q in QUESTIONS],
        "images": [_image_vector(out / rel, rel, model.preprocess) for rel in rels],
        "bundles": [v for quant in QUANTS
                    for v in _bundle_vectors(out / "bundles" / f"onnx-{quant}", f"bundles/onnx-{quant}", quant,
                                             cases, out)],
    }
    (out / "vectors.json").write_text(json.dumps(vectors, indent=1))
    return out
