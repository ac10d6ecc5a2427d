"""The vision warm-up stage: teach a from-scratch tower + projector what the objects in `shapes` images are.

Published VLMs start from a pre-trained CLIP / SigLIP tower; a tiny tower starts from random weights, and
learning vision only through the LLM's answers is slow (a ViT is sample-hungry, and 577 tokens per image
make every sample dear on a CPU). This stage stands in for the pre-trained tower, in two phases:
- object windows: the tower runs on a `window` x `window` patch crop of its own 24 x 24 grid around each
  object (with those patches' own position embeddings), and a throw-away linear head classifies the object
  from the max over its projector tokens (object evidence sits in a few tokens; a mean drowns it). At 101
  tokens instead of 577 a window costs about a twelfth of an image and holds one object, so the tower sees
  several times more objects per second, without distractors.
- full images: every cell's content is classified from the max over that cell's projector tokens, so the
  tower learns to do the same with all four cells in view, as the LLM will see them; each token also learns
  which cell it lies in.
Labels come from the data dir's `scenes.json`, so this stage needs `shapes` data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.data.shapes import CELL, CELL_CLASSES, CellObject


class CellHead(nn.Module):
    """Classifies pooled tokens into CELL_CLASSES; `where` tells each token's cell from the token alone."""

    def __init__(self, d_llm: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_llm)
        self.fc = nn.Linear(d_llm, len(CELL_CLASSES))
        self.where = nn.Linear(d_llm, 4)
        self.score = nn.Linear(d_llm, 1)  # attention pooling: how much each token speaks for its cell

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(pooled))


def token_cells(n_tokens: int) -> torch.Tensor:
    """For a square token grid in reading order, the cell (0-3, reading order) each token lies in."""
    side = math.isqrt(n_tokens)
    rows = torch.arange(side).repeat_interleave(side) * 2 // side
    cols = torch.arange(side).repeat(side) * 2 // side
    return rows * 2 + cols


def cell_logits(head: CellHead, image_embeds: torch.Tensor) -> torch.Tensor:
    """(B, N_img, D) → (B, 4, n_classes): each cell classified from an attention-weighted mean of its tokens,
    the read-out an LLM attention head can do (a max, which the window phase uses, is not one)."""
    cells = token_cells(image_embeds.shape[1]).to(image_embeds.device)
    pooled = []
    for c in range(4):
        x = image_embeds[:, cells == c]
        pooled.append((head.score(x).softmax(1) * x).sum(1))
    return head(torch.stack(pooled, dim=1))


def cell_loss(head: CellHead, image_embeds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cell content from each cell's tokens, plus every token's own cell (meant to let the LLM find "the top
    left" by token content rather than from positions alone)."""
    logits = cell_logits(head, image_embeds)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    cells = token_cells(image_embeds.shape[1]).to(image_embeds.device).expand(len(image_embeds), -1)
    loss = loss + F.cross_entropy(head.where(image_embeds).flatten(0, 1), cells.flatten())
    return loss, (logits.argmax(-1) == labels).float().mean().item()


def object_windows(scenes: dict[str, list], patch: int, grid: int, window: int) -> dict[str, list[tuple]]:
    """Per image id, (row0, col0, class) of a window x window patch crop centred on each object."""
    index = {name: i for i, name in enumerate(CELL_CLASSES)}
    out = {}
    for image_id, cells in scenes.items():
        wins = []
        for pos, obj in enumerate(cells):
            if obj is None:
                continue
            label = CellObject(**obj).label
            cy = (pos // 2) * CELL + obj["y"] + obj["size"] / 2
            cx = (pos % 2) * CELL + obj["x"] + obj["size"] / 2
            r0, c0 = (min(max(round(c / patch - window / 2), 0), grid - window) for c in (cy, cx))
            wins.append((r0, c0, index[label]))
        out[image_id] = wins
    return out


def encode_windows(model, pixel_values: torch.Tensor, windows: list[tuple[int, int]], window: int) -> torch.Tensor:
    """Tower + projector on patch windows: (B, 3, H, W) + B (row0, col0) → (B, N_win_tokens, D_llm)."""
    tower, cfg = model.vision.tower, model.cfg.vision
    emb = tower.embeddings
    patches = emb.patch_embedding(pixel_values.to(emb.patch_embedding.weight.dtype))  # (B, D, 24, 24)
    pos = emb.position_embedding.weight
    has_cls = hasattr(emb, "class_embedding")
    pos_grid = pos[1:] if has_cls else pos
    pos_grid = pos_grid.reshape(cfg.grid, cfg.grid, -1)
    rows = []
    for b, (r0, c0) in enumerate(windows):
        x = patches[b, :, r0 : r0 + window, c0 : c0 + window].flatten(1).T  # (W*W, D)
        x = x + pos_grid[r0 : r0 + window, c0 : c0 + window].reshape(window * window, -1)
        if has_cls:
            x = torch.cat([(emb.class_embedding + pos[0])[None], x])
        rows.append(x)
    h = torch.stack(rows)
    if hasattr(tower, "pre_layrnorm"):
        h = tower.pre_layrnorm(h)
    for layer in tower.encoder.layers[: cfg.layers_used]:
        h = layer(h, None)
    if has_cls:
        h = h[:, 1:]
    return model.projector(h)


def window_cells(windows: list[tuple[int, int]], window: int, grid: int, n_tokens: int) -> torch.Tensor:
    """(B, n_tokens): the image cell each of a window's projector tokens lies in (tokens in reading order), or -100
    (ignored) for a token whose patches straddle a cell border."""
    side = math.isqrt(n_tokens)
    stride = window // side  # patches per token side
    first = torch.arange(side) * stride
    out = []
    for r0, c0 in windows:
        r_lo, c_lo = (r0 + first) * 2 // grid, (c0 + first) * 2 // grid
        r_hi, c_hi = (r0 + first + stride - 1) * 2 // grid, (c0 + first + stride - 1) * 2 // grid
        cells = (r_lo[:, None] * 2 + c_lo[None, :]).flatten()
        straddles = ((r_lo != r_hi)[:, None] | (c_lo != c_hi)[None, :]).flatten()
        out.append(cells.masked_fill(straddles, -100))
    return torch.stack(out)


def window_loss(head: CellHead, window_embeds: torch.Tensor, labels: torch.Tensor,
                cells: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The object's class from the max over the window's tokens, plus every token's own image cell: the tower's
    position embeddings learn the cell layout here, where it is cheap, so the LLM can later find "the top left"
    by token content (without it a linear probe reads a token's cell only 0.37 of the time)."""
    logits = head(window_embeds.amax(1))
    where = F.cross_entropy(head.where(window_embeds).flatten(0, 1), cells.flatten().to(window_embeds.device))
    return F.cross_entropy(logits, labels) + where, (logits.argmax(-1) == labels).float().mean().item()
