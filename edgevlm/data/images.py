"""Image preprocessing, described by data so that Python runtimes and the mobile apps reproduce it exactly.

The recipe (resize to the tower's square size with bicubic filtering, scale to [0, 1], normalize by the
tower's mean / std) is CLIP's and SigLIP's image processor for square inputs; the manifest carries it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edgevlm.config import VisionConfig
from edgevlm.errors import EdgeVLMError


@dataclass(frozen=True)
class ImagePreprocess:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "bicubic"  # PIL filter used when the image is not already size x size
    rescale: float = 1 / 255

    @classmethod
    def for_vision(cls, cfg: VisionConfig) -> "ImagePreprocess":
        return cls(cfg.image_size, tuple(cfg.image_mean), tuple(cfg.image_std))

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """An RGB image → pixel_values (3, size, size) float32."""
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) * self.rescale).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


def load_image(path: str | Path) -> Image.Image:
    """Open an image fully (so a truncated file fails here, naming the file) as RGB."""
    path = Path(path)
    if not path.is_file():
        raise EdgeVLMError("image not found", path)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise EdgeVLMError(f"cannot read image ({e})", path) from None
