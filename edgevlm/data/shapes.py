"""The embedded `shapes` visual question-answering data set (docs/data-spec.md).

A generator, not a download: 336 px scenes of four cells, each empty or holding a coloured shape or a
scikit-learn handwritten digit, with exact-string questions about what, where and how many. It is small
enough for a tiny VLM to learn on a CPU in minutes and needs real use of the image, so every family,
runtime and quantization is measured on the same task.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgevlm.io import atomic_dir, write_json

IMAGE_SIZE = 336
CELL = IMAGE_SIZE // 2
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}
KINDS = ("what", "color", "count", "digit", "where", "exists", "caption")
DIGIT_SAMPLES = {"train": range(0, 1400), "eval": range(1400, 1797)}
DIGIT_INK = 20  # grey value of a fully inked digit pixel
P_EMPTY = 0.25
P_DIGIT = 0.5  # of the non-empty cells


@dataclass(frozen=True)
class CellObject:
    """One object in a cell: a coloured shape or a digit sample, with its box inside the cell."""

    kind: str  # "shape" | "digit"
    name: str  # shape name ("circle") or digit ("7")
    color: str | None  # shape colour; None for digits
    sample: int | None  # load_digits() index; None for shapes
    x: int
    y: int
    size: int

    @property
    def label(self) -> str:
        return f"digit {self.name}" if self.kind == "digit" else f"{self.color} {self.name}"


Scene = tuple  # four `CellObject | None`, in POSITIONS order


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(int)


def sample_scene(rng: np.random.Generator, split: str) -> Scene:
    images, targets = _digits()
    samples = DIGIT_SAMPLES[split]
    cells = []
    for _ in POSITIONS:
        if rng.random() < P_EMPTY:
            cells.append(None)
            continue
        size = int(rng.integers(60, 121))
        x, y = (int(v) for v in rng.integers(0, CELL - size + 1, size=2))
        if rng.random() < P_DIGIT:
            idx = int(rng.integers(samples.start, samples.stop))
            cells.append(CellObject("digit", str(targets[idx]), None, idx, x, y, size))
        else:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = list(COLORS)[int(rng.integers(len(COLORS)))]
            cells.append(CellObject("shape", shape, color, None, x, y, size))
    return tuple(cells)


def shape_mask(shape: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "circle":
        r = size / 2
        return (xx - r) ** 2 + (yy - r) ** 2 <= r * r
    if shape == "square":
        return np.ones((size, size), bool)
    # triangle: apex at the top centre, base along the bottom edge
    half_width = yy / size * (size / 2)
    return np.abs(xx - size / 2) <= half_width


def render_scene(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Draw a scene as (336, 336, 3) uint8: grey 200-230 with ±8 per-pixel noise, then the objects."""
    base = int(rng.integers(200, 231))
    noise = rng.integers(-8, 9, size=(IMAGE_SIZE, IMAGE_SIZE, 1))
    img = np.clip(base + noise, 0, 255).repeat(3, axis=2).astype(np.float32)
    for pos, obj in enumerate(scene):
        if obj is None:
            continue
        top, left = (pos // 2) * CELL + obj.y, (pos % 2) * CELL + obj.x
        box = img[top : top + obj.size, left : left + obj.size]
        if obj.kind == "shape":
            box[shape_mask(obj.name, obj.size)] = COLORS[obj.color]
        else:
            idx = np.arange(obj.size) * 8 // obj.size  # nearest-neighbour upscale of the 8x8 digit
            ink = _digits()[0][obj.sample][np.ix_(idx, idx)][..., None]
            box[:] = box * (1 - ink) + DIGIT_INK * ink
    return img.round().astype(np.uint8)


def _qa(question: str, answer: str, kind: str) -> tuple[str, str, str]:
    return kind, question, answer


def scene_questions(scene: Scene, rng: np.random.Generator, exists_balance: list[int]) -> list[tuple[str, str, str]]:
    """One question of each applicable kind, in the spec's order, as (kind, question, answer).

    `exists_balance` counts [yes, no] answers so far, so the `exists` kind stays balanced over a data set.
    """
    objs = [(pos, o) for pos, o in zip(POSITIONS, scene) if o is not None]
    shapes = [(pos, o) for pos, o in objs if o.kind == "shape"]
    digits = [(pos, o) for pos, o in objs if o.kind == "digit"]
    out = []

    pos_i = int(rng.integers(4))
    what = scene[pos_i].label if scene[pos_i] else "nothing"
    out.append(_qa(f"What is in the {POSITIONS[pos_i]}?", what, "what"))

    unique_shapes = sorted({o.name for _, o in shapes if sum(s.name == o.name for _, s in shapes) == 1})
    if unique_shapes:
        shape = unique_shapes[int(rng.integers(len(unique_shapes)))]
        color = next(o.color for _, o in shapes if o.name == shape)
        out.append(_qa(f"What color is the {shape}?", color, "color"))

    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    out.append(_qa(f"How many {shape}s are there?", str(sum(o.name == shape for _, o in shapes)), "count"))

    if digits:
        pos, o = digits[int(rng.integers(len(digits)))]
        out.append(_qa(f"What digit is in the {pos}?", o.name, "digit"))

    combos = [(o.color, o.name) for _, o in shapes]
    unique = [(pos, o) for pos, o in shapes if combos.count((o.color, o.name)) == 1]
    if unique:
        pos, o = unique[int(rng.integers(len(unique)))]
        out.append(_qa(f"Where is the {o.color} {o.name}?", pos, "where"))

    present = sorted(set(combos))
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    want_yes = exists_balance[0] <= exists_balance[1] and bool(present)
    pool = present if want_yes else absent
    color, shape = pool[int(rng.integers(len(pool)))]
    exists_balance[0 if want_yes else 1] += 1
    out.append(_qa(f"Is there a {color} {shape}?", "yes" if want_yes else "no", "exists"))

    caption = "; ".join(f"{p}: {o.label if o else 'nothing'}" for p, o in zip(POSITIONS, scene))
    out.append(_qa("Describe the image.", caption, "caption"))
    return out


def dense_questions(scene: Scene, asked: list[tuple[str, str, str]], rng: np.random.Generator) -> list[tuple]:
    """Training-only extras (`--dense`): the `count` and `exists` questions one image can answer contrastively.

    Every shape's count, and for each present colour + shape pair a `yes` and a near miss (the same shape in an
    absent colour, or the same colour on an absent shape) answered `no`, skipping what `asked` already holds.
    Aggregating over cells is what a tiny LLM learns last: with one `count` and one `exists` per image it fits
    its own training questions of these kinds at about 0.7 while it captions the same shapes without error.
    """
    shapes = [o for o in scene if o is not None and o.kind == "shape"]
    present = sorted({(o.color, o.name) for o in shapes})
    out = [_qa(f"How many {s}s are there?", str(sum(o.name == s for o in shapes)), "count") for s in SHAPES]
    for color, shape in present:
        out.append(_qa(f"Is there a {color} {shape}?", "yes", "exists"))
        near = [(c, shape) for c in COLORS if c != color] + [(color, s) for s in SHAPES if s != shape]
        near = [pair for pair in near if pair not in present]
        if near:
            c, s = near[int(rng.integers(len(near)))]
            out.append(_qa(f"Is there a {c} {s}?", "no", "exists"))
    seen, kept = {q for _, q, _ in asked}, []
    for qa in out:  # two present pairs may share a near miss
        if qa[1] not in seen:
            seen.add(qa[1])
            kept.append(qa)
    return kept


def _rng(seed: int, split: str, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, list(DIGIT_SAMPLES).index(split)] + ([stream] if stream else []))


def generate(n_images: int, seed: int, split: str, dense: bool = False):
    """Yield (image_id, pixels, scene, [(kind, question, answer)]) for `n_images` scenes, deterministically.

    `dense` appends `dense_questions` from a stream of their own: the scenes and the spec's questions stay
    exactly those of the plain data set."""
    if split not in DIGIT_SAMPLES:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(DIGIT_SAMPLES)}")
    if dense and split != "train":
        raise ValueError("dense questions are for training data; evaluation data keeps the spec's proportions")
    rng, extra_rng = _rng(seed, split), _rng(seed, split, stream=1)
    balance = [0, 0]
    for i in range(n_images):
        scene = sample_scene(rng, split)
        pixels = render_scene(scene, rng)
        qas = scene_questions(scene, rng, balance)
        yield f"{i:06d}", pixels, scene, qas + (dense_questions(scene, qas, extra_rng) if dense else [])


def write_shapes(out: str | Path, n_images: int, seed: int = 0, split: str = "train", progress: bool = False,
                 dense: bool = False) -> Path:
    """Write the data set in the LLaVA conversation format (`data.json` + `images/`), atomically."""
    from tqdm import tqdm

    out = Path(out)
    records, scenes = [], {}
    with atomic_dir(out, "data") as tmp, ThreadPoolExecutor(2) as pool:  # PNG encoding releases the GIL: overlap it
        (tmp / "images").mkdir()
        items = generate(n_images, seed, split, dense)
        saved = []
        for image_id, pixels, scene, qas in tqdm(items, total=n_images, desc=f"shapes {split}", disable=not progress):
            rel = f"images/{image_id}.png"
            # lossless at any level; level 1 encodes 4x faster than the default 6
            saved.append(pool.submit(Image.fromarray(pixels).save, tmp / rel, compress_level=1))
            scenes[image_id] = [None if o is None else o.__dict__ for o in scene]
            for kind, question, answer in qas:
                records.append({
                    "id": image_id,
                    "image": rel,
                    "kind": kind,
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{question}"},
                        {"from": "gpt", "value": answer},
                    ],
                })
        for f in saved:
            f.result()  # re-raises a failed write
        write_json(tmp / "data.json", records)
        write_json(tmp / "scenes.json", {"split": split, "seed": seed, "dense": dense, "scenes": scenes})
    return out


CELL_CLASSES = ("nothing",) + tuple(f"{c} {s}" for c in COLORS for s in SHAPES) + tuple(f"digit {d}" for d in range(10))


def read_cell_labels(data_dir: str | Path) -> dict[str, list[int]]:
    """Per image id, the class index (in CELL_CLASSES) of each of its four cells, from `scenes.json`."""
    from edgevlm.io import read_json

    scenes = read_json(Path(data_dir) / "scenes.json")["scenes"]
    index = {name: i for i, name in enumerate(CELL_CLASSES)}
    return {
        image_id: [index[CellObject(**o).label if o else "nothing"] for o in cells]
        for image_id, cells in scenes.items()
    }
