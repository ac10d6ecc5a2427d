"""Shared-prefix packing: every question about one image in one sequence, each seeing only image + itself.

A `shapes` image has six or seven questions; trained one per sequence, the 144 image tokens and the prompt
prefix are recomputed for each. Packed, the prefix (BOS, template, image) runs once and each question/answer
segment attends to the prefix and causally to itself, with positions restarting after the prefix. That is
exactly single-turn training (same tokens, same attention sets, same positions) at a quarter of the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgevlm.bundle.tokenizer import IMAGE_TOKEN_INDEX

IGNORE = -100


@dataclass
class PackedImage:
    """One image's training sequence: a prefix ending in the image, then (prompt rest + answer) segments."""

    image_key: int  # index into the trainer's image table
    prefix: list[int]  # ends with IMAGE_TOKEN_INDEX
    segments: list[tuple[list[int], list[int]]]  # (prompt ids after the image, answer ids incl. EOS)


def pack(image_key: int, prompts: list[list[int]], answers: list[list[int]]) -> list[PackedImage]:
    """Group one image's QA pairs by their prompt prefix (ids up to and including the image)."""
    groups: dict[tuple, PackedImage] = {}
    for p, a in zip(prompts, answers):
        cut = p.index(IMAGE_TOKEN_INDEX) + 1
        key = tuple(p[:cut])
        groups.setdefault(key, PackedImage(image_key, list(key), [])).segments.append((p[cut:], a))
    return list(groups.values())


def build_batch(items: list[PackedImage], image_embeds: torch.Tensor, embed) -> dict[str, torch.Tensor]:
    """Right-padded inputs_embeds, a 4-D boolean attention mask, position ids and next-token targets."""
    n_img = image_embeds.shape[1]
    rows, positions, targets, blocks = [], [], [], []
    for item in items:
        at = item.prefix.index(IMAGE_TOKEN_INDEX)
        ids = item.prefix[:at] + [0] * n_img  # placeholder ids for the image span, replaced below
        pos = list(range(len(ids)))
        tgt = [IGNORE] * len(ids)
        blk = [0] * len(ids)
        for s, (prompt, answer) in enumerate(item.segments, start=1):
            seg = prompt + answer
            ids += seg
            pos += range(len(item.prefix) - 1 + n_img, len(item.prefix) - 1 + n_img + len(seg))
            # logits at a token predict the next one of the same segment, and only answer tokens are scored
            tgt += [IGNORE] * (len(prompt) - 1) + answer + [IGNORE]
            blk += [s] * len(seg)
        rows.append((ids, at))
        positions.append(pos)
        targets.append(tgt)
        blocks.append(blk)
    t = max(len(ids) for ids, _ in rows)
    dev = image_embeds.device
    id_tensor = torch.zeros(len(rows), t, dtype=torch.long, device=dev)
    for i, (ids, _) in enumerate(rows):
        id_tensor[i, : len(ids)] = torch.tensor(ids)
    x = embed(id_tensor)  # (B, T, D_llm)
    x = torch.stack([
        torch.cat([x[i, :at], image_embeds[i].to(x.dtype), x[i, at + n_img :]]) for i, (_, at) in enumerate(rows)
    ])
    return {
        "inputs_embeds": x,
        "attention_mask": _mask(blocks, t, dev),
        "position_ids": _pad(positions, t, 0, dev),
        "targets": _pad(targets, t, IGNORE, dev),
    }


def _pad(rows: list[list[int]], t: int, value: int, dev) -> torch.Tensor:
    out = torch.full((len(rows), t), value, dtype=torch.long, device=dev)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def _mask(blocks: list[list[int]], t: int, dev) -> torch.Tensor:
    """(B, 1, T, T) additive: 0 where query i may attend key j (causal, and within the prefix or its own
    segment), the float minimum elsewhere. Additive, not boolean: transformers' eager attention adds the mask
    to the scores (a boolean one would be added as 0/1), and eager is the trainer's choice on CPU."""
    blk = _pad(blocks, t, -1, dev)  # -1 marks padding
    causal = torch.ones(t, t, dtype=torch.bool, device=dev).tril()
    q, k = blk[:, :, None], blk[:, None, :]
    allowed = causal & (k != -1) & ((k == 0) | (k == q))
    allowed |= torch.eye(t, dtype=torch.bool, device=dev)  # padded queries attend to themselves (no NaN rows)
    return torch.zeros(allowed.shape, device=dev).masked_fill_(~allowed, torch.finfo(torch.float32).min)[:, None]
