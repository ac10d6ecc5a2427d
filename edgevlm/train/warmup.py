"""The vision warm-up stage: teach a from-scratch tower + projector what is in each cell of a `shapes` image.

Published VLMs start from a pre-trained CLIP / SigLIP tower; a tiny tower starts from random weights, and
learning vision only through the LLM's answers is slow (a ViT is sample-hungry, and 577 tokens per image
make every sample dear on a CPU). This stage stands in for the pre-trained tower:
- object windows: the tower runs on a `window` x `window` patch crop of its own 24 x 24 grid around each
  object, and around the middle of each empty cell (with those patches' own position embeddings). At 101
  tokens instead of 577 a window costs about a twelfth of an image and holds one object, so the tower sees
  several times more objects per second, without distractors.
- the read-out is one an LLM attention layer can do: a few attention heads pool the RMS-normalised tokens
  (as the LLM's first norm sees them) and a linear layer classifies the concatenation. A max over tokens
  trains features no attention head can read (the LLM then learnt position-keyed questions poorly); a plain
  mean drowns the few tokens that hold the object.
- every token also states its cell in two fixed channels (`position_loss`), so the LLM can find "the top
  left" by token content.
- full images (optional, `vision_window=0`): every cell classified from its own tokens the same way.
Labels come from the data dir's `scenes.json`, so this stage needs `shapes` data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.data.shapes import CELL, CELL_CLASSES, CellObject

POSITION_CODE = 4.0  # see position_loss


def rms_normalised(tokens: torch.Tensor) -> torch.Tensor:
    """Each token scaled to unit RMS, as the LLM's first RMSNorm sees it (before its learnt gain)."""
    return tokens * torch.rsqrt(tokens.pow(2).mean(-1, keepdim=True) + 1e-6)


class CellHead(nn.Module):
    """Attention pooling (HEADS heads over RMS-normalised tokens), then a linear classifier into CELL_CLASSES.
    (Tried and dropped: extra heads for the class's factors, what and colour, meant to help "How many circles";
    they did not, and "Where is the red circle?" fell from 0.89 to 0.61.)"""

    HEADS = 4

    def __init__(self, d_llm: int):
        super().__init__()
        self.score = nn.Linear(d_llm, self.HEADS)
        self.fc = nn.Linear(d_llm * self.HEADS, len(CELL_CLASSES))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., n, D) → (..., HEADS * D)."""
        r = rms_normalised(tokens)
        weights = self.score(r).softmax(-2)  # (..., n, HEADS)
        return (weights.transpose(-1, -2) @ r).flatten(-2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., n, D) tokens of one object or cell → (..., n_classes)."""
        return self.fc(self.pool(tokens))

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Cross-entropy and accuracy."""
        logits, labels = logits.flatten(0, -2), labels.flatten()
        return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean().item()


def token_cells(n_tokens: int) -> torch.Tensor:
    """For a square token grid in reading order, the cell (0-3, reading order) each token lies in."""
    side = math.isqrt(n_tokens)
    rows = torch.arange(side).repeat_interleave(side) * 2 // side
    cols = torch.arange(side).repeat(side) * 2 // side
    return rows * 2 + cols


def cell_logits(head: CellHead, image_embeds: torch.Tensor) -> torch.Tensor:
    """(B, N_img, D) → (B, 4, n_classes): each cell classified from its own tokens."""
    cells = token_cells(image_embeds.shape[1]).to(image_embeds.device)
    return torch.stack([head(image_embeds[:, cells == c]) for c in range(4)], dim=1)


def position_loss(embeds: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Every token states its cell in two fixed channels of its RMS-normalised self (as the LLM's first norm
    sees it): channel 0 is +POSITION_CODE in the top row of cells and -POSITION_CODE in the bottom one, channel 1
    likewise for left / right. A cell classifier alone leaves position a few percent of a token's variance,
    and the LLM then cannot learn to find "the top left" in minutes; with this code it can (measured on oracle
    tokens: position lookups learnt within the same 600 steps that content lookups take). `cells` (B, N) holds
    each token's cell, -100 for tokens to ignore."""
    r = rms_normalised(embeds.float())  # (B, N, D)
    keep = cells >= 0
    c = cells[keep]
    target = torch.stack([1 - 2 * (c // 2), 1 - 2 * (c % 2)], -1).to(r.dtype) * POSITION_CODE  # (n, 2)
    return F.mse_loss(r[..., :2][keep], target) / POSITION_CODE**2


def cell_loss(head: CellHead, image_embeds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cell content from each cell's tokens, plus every token's position code."""
    loss, acc = head.loss(cell_logits(head, image_embeds), labels)
    cells = token_cells(image_embeds.shape[1]).to(image_embeds.device).expand(len(image_embeds), -1)
    return loss + position_loss(image_embeds, cells), acc


def object_windows(scenes: dict[str, list], patch: int, grid: int, window: int) -> dict[str, list[tuple]]:
    """Per image id and cell (reading order), (row0, col0, class) of a window x window patch crop centred on the
    cell's object, or on the cell's middle for an empty cell (class `nothing`): the LLM must tell empty too."""
    index = {name: i for i, name in enumerate(CELL_CLASSES)}
    out = {}
    for image_id, cells in scenes.items():
        wins = []
        for pos, obj in enumerate(cells):
            if obj is None:
                label, cy, cx = "nothing", (pos // 2 + 0.5) * CELL, (pos % 2 + 0.5) * CELL
            else:
                label = CellObject(**obj).label
                cy = (pos // 2) * CELL + obj["y"] + obj["size"] / 2
                cx = (pos % 2) * CELL + obj["x"] + obj["size"] / 2
            r0, c0 = (min(max(round(c / patch - window / 2), 0), grid - window) for c in (cy, cx))
            wins.append((r0, c0, index[label]))
        out[image_id] = wins
    return out


def window_boxes(model, windows: list[tuple[int, int]], window: int) -> tuple[list[tuple[int, int]], int]:
    """Patch windows (row0, col0) → their pixel boxes (top, left) and side."""
    p = model.cfg.vision.patch_size
    return [(r0 * p, c0 * p) for r0, c0 in windows], window * p


def encode_windows(model, pixels: torch.Tensor, windows: list[tuple[int, int]], window: int) -> torch.Tensor:
    """Tower + projector on patch windows: the windows' pixels (B, 3, W*p, W*p) (see `window_boxes`; patches
    are disjoint, so the rest of the image is not needed) + their B (row0, col0) → (B, N_win_tokens, D_llm)."""
    tower, cfg = model.vision.tower, model.cfg.vision
    emb = tower.embeddings
    patches = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype))  # (B, D, W, W)
    pos = emb.position_embedding.weight
    has_cls = hasattr(emb, "class_embedding")
    pos_grid = pos[1:] if has_cls else pos
    pos_grid = pos_grid.reshape(cfg.grid, cfg.grid, -1)
    rows = []
    for b, (r0, c0) in enumerate(windows):
        x = patches[b].flatten(1).T  # (W*W, D)
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
    """The window's class from its tokens, plus every token's position code: the tower's position embeddings
    learn the cell layout here, where it is cheap."""
    loss, acc = head.loss(head(window_embeds), labels)
    return loss + position_loss(window_embeds, cells.to(window_embeds.device)), acc
