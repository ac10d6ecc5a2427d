"""The trainer's image table: every training image decoded once, kept as uint8, normalized per batch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edgevlm.data.images import ImagePreprocess, load_image


class ImageTable:
    def __init__(self, paths: list[Path], prep: ImagePreprocess, progress: bool = True):
        self.paths = paths
        self.prep = prep
        with ThreadPoolExecutor(2) as pool:  # PNG decoding releases the GIL
            arrays = list(tqdm(pool.map(self._load, paths), total=len(paths), desc="load images",
                               disable=not progress, leave=False))
        self.pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
        self.mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std).view(1, 3, 1, 1)

    def _load(self, path: Path) -> np.ndarray:
        im = load_image(path)
        if im.size != (self.prep.size, self.prep.size):
            im = im.resize((self.prep.size, self.prep.size), resample=3)  # bicubic, as ImagePreprocess does
        return np.asarray(im, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, idx: list[int], device: torch.device) -> torch.Tensor:
        x = self.pixels[idx].float() * self.prep.rescale
        return ((x - self.mean) / self.std).to(device)
