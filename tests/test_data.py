"""The `shapes` generator: deterministic, spec-exact, and every answer true of its scene."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edgevlm.data import shapes
from edgevlm.data.llava import read_llava
from edgevlm.data.shapes import CELL, COLORS, POSITIONS, generate


def _answers_from_scene(scene, question: str) -> str:
    """An independent re-derivation of every answer from the scene objects."""
    objs = {p: o for p, o in zip(POSITIONS, scene)}
    shapes_ = [o for o in scene if o and o.kind == "shape"]
    if question.startswith("What is in the "):
        o = objs[question[len("What is in the "):-1]]
        return "nothing" if o is None else (f"digit {o.name}" if o.kind == "digit" else f"{o.color} {o.name}")
    if question.startswith("What color is the "):
        (o,) = [o for o in shapes_ if o.name == question[len("What color is the "):-1]]
        return o.color
    if question.startswith("How many "):
        return str(sum(o.name + "s" == question.split()[2] for o in shapes_))
    if question.startswith("What digit is in the "):
        return objs[question[len("What digit is in the "):-1]].name
    if question.startswith("Where is the "):
        color, name = question[len("Where is the "):-1].split()
        (pos,) = [p for p, o in objs.items() if o and o.kind == "shape" and (o.color, o.name) == (color, name)]
        return pos
    if question.startswith("Is there a "):
        color, name = question[len("Is there a "):-1].split()
        return "yes" if any((o.color, o.name) == (color, name) for o in shapes_) else "no"
    assert question == "Describe the image."
    return "; ".join(f"{p}: {_answers_from_scene((o,) + (None,) * 3, 'What is in the top left?')}"
                     for p, o in objs.items())


def test_deterministic():
    a = [(i, px.tobytes(), qa) for i, px, _, qa in generate(5, seed=7, split="train")]
    b = [(i, px.tobytes(), qa) for i, px, _, qa in generate(5, seed=7, split="train")]
    c = [(i, px.tobytes(), qa) for i, px, _, qa in generate(5, seed=8, split="train")]
    assert a == b
    assert a != c


@pytest.mark.parametrize("split", ["train", "eval"])
def test_every_answer_matches_its_scene(split):
    kinds_seen = set()
    for _, pixels, scene, qas in generate(150, seed=1, split=split):
        assert pixels.shape == (336, 336, 3) and pixels.dtype == np.uint8
        assert [k for k, _, _ in qas] == [k for k in shapes.KINDS if k in {k for k, _, _ in qas}]  # spec order
        for kind, q, a in qas:
            kinds_seen.add(kind)
            assert a == _answers_from_scene(scene, q), (q, a)
            assert a == a.lower() and not a.endswith((".", "?", "!"))
        for pos, o in enumerate(scene):
            if o is None:
                continue
            assert 60 <= o.size <= 120 and 0 <= o.x <= CELL - o.size and 0 <= o.y <= CELL - o.size
            if o.kind == "digit":
                assert o.sample in shapes.DIGIT_SAMPLES[split]
            # the object is drawn where the scene says: a shape's centre has its colour
            cy, cx = (pos // 2) * CELL + o.y + o.size // 2, (pos % 2) * CELL + o.x + o.size // 2
            if o.kind == "shape":
                assert tuple(pixels[cy + (o.size // 4 if o.name == "triangle" else 0), cx]) == COLORS[o.color]
    assert kinds_seen == set(shapes.KINDS)


def test_background_and_exists_balance():
    answers, backgrounds = [], []
    for _, pixels, scene, qas in generate(200, seed=2, split="train"):
        answers += [a for k, _, a in qas if k == "exists"]
        if scene[0] is None:
            backgrounds.append(pixels[:CELL, :CELL].astype(int))
    assert abs(answers.count("yes") - answers.count("no")) <= 2
    for bg in backgrounds:
        assert 192 <= bg.min() and bg.max() <= 238 and (bg[..., 0] == bg[..., 1]).all()


def test_written_llava_format(tmp_path):
    out = shapes.write_shapes(tmp_path / "d", 4, seed=0, split="eval")
    data = json.loads((out / "data.json").read_text())
    rec = data[0]
    assert set(rec) == {"id", "image", "kind", "conversations"}
    assert rec["conversations"][0]["from"] == "human" and rec["conversations"][0]["value"].startswith("<image>\n")
    assert Image.open(out / rec["image"]).size == (336, 336)
    assert len(read_llava(out)) == len(data)
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_dense_adds_true_count_and_exists_questions_only():
    """`dense` keeps every image and plain question byte for byte, and each extra is true of its scene."""
    plain = list(generate(60, seed=3, split="train"))
    dense = list(generate(60, seed=3, split="train", dense=True))
    extras = 0
    for (i, px, scene, qas), (j, dpx, _, dqas) in zip(plain, dense):
        assert (i, px.tobytes(), qas) == (j, dpx.tobytes(), dqas[:len(qas)])
        more = dqas[len(qas):]
        assert {k for k, _, _ in more} <= {"count", "exists"}
        assert len({q for _, q, _ in dqas}) == len(dqas)  # nothing asked twice
        present = {(o.color, o.name) for o in scene if o and o.kind == "shape"}
        asked = {q for k, q, _ in dqas if k == "exists"}
        assert all(f"Is there a {c} {s}?" in asked for c, s in present)
        assert sum(k == "count" for k, _, _ in dqas) == len(shapes.SHAPES)
        for _, q, a in more:
            assert a == _answers_from_scene(scene, q), (q, a)
        extras += len(more)
    assert extras > 3 * len(plain)
    with pytest.raises(ValueError, match="training data"):
        next(generate(1, 0, "eval", dense=True))


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split"):
        next(generate(1, 0, "test"))


def test_object_windows_cover_their_objects():
    from edgevlm.train.warmup import object_windows

    for _, _, scene, _ in generate(30, seed=4, split="train"):
        scenes = {"x": [None if o is None else o.__dict__ for o in scene]}
        wins = object_windows(scenes, patch=14, grid=24, window=10)["x"]
        assert len(wins) == 4  # one per cell, empty cells included
        for pos, ((r0, c0, label), o) in enumerate(zip(wins, scene)):
            assert 0 <= r0 <= 14 and 0 <= c0 <= 14
            if o is None:
                assert shapes.CELL_CLASSES[label] == "nothing"
                assert (r0 * 14 // CELL, c0 * 14 // CELL) == (pos // 2, pos % 2)  # starts in its own cell
                continue
            top, left = (pos // 2) * CELL + o.y, (pos % 2) * CELL + o.x
            # a window of 140 px holds the whole object (120 px at most) unless clipped at the image edge
            assert r0 * 14 <= top + 10 and top + o.size <= (r0 + 10) * 14 + 10
            assert c0 * 14 <= left + 10 and left + o.size <= (c0 + 10) * 14 + 10
            assert shapes.CELL_CLASSES[label] == o.label
