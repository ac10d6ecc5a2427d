"""Image preprocessing, described by data so that every runtime and client reproduces it exactly.

The recipe (resize to the tower's square size with PIL's bicubic filter on 8-bit RGB, scale to [0, 1],
normalize by the tower's mean / std) is CLIP's and SigLIP's image processor for square inputs; the manifest
carries it and docs/bundle-spec.md spells out its arithmetic, which the goldens pin bit for bit. numpy + PIL
only: training turns the array into a tensor itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgevlm.errors import EdgeVLMError


@dataclass(frozen=True)
class ImagePreprocess:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "bicubic"  # PIL filter used when the image is not already size x size
    rescale: float = 1 / 255

    def to_dict(self) -> dict:
        return asdict(self)

    def resized(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """An image → its RGB levels at size x size, (size, size, 3) uint8: PIL's bicubic resize on 8 bits."""
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8)

    def normalize(self, levels: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 → pixel_values (3, S, S) float32, every step in float32: (v * rescale - mean) / std."""
        x = levels.astype(np.float32) * np.float32(self.rescale)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))

    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """An RGB image → pixel_values (3, size, size) float32."""
        return self.normalize(self.resized(image))


def load_image(path: str | Path) -> Image.Image:
    """Open an image fully (so a truncated file fails here, naming the file) as RGB, upright.

    Upright: an EXIF orientation tag is applied (Pillow's `ImageOps.exif_transpose`), as phone cameras store
    rotated JPEGs; training, evaluation and every Python runtime load images here, so all see the same pixels.
    Alpha is dropped (as Hugging Face's CLIP processor's `convert_rgb`), an animation gives its first frame,
    16-bit grey is scaled to 8 bits, CMYK is converted by Pillow. A decompression bomb (more pixels than Pillow's
    `MAX_IMAGE_PIXELS`, 89.5 M: Pillow only warns below twice that) is refused before it is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeVLMError("image not found", path)
    try:
        # the size check is explicit, not a warnings filter: filters are process-wide and the trainer loads
        # images from two threads, so a filter set by one thread can be undone by the other mid-load
        with Image.open(path) as im:
            pixels = im.size[0] * im.size[1]
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                raise EdgeVLMError(f"refused as a decompression bomb ({im.size[0]} x {im.size[1]} = {pixels} "
                                   f"pixels, over Pillow's limit of {Image.MAX_IMAGE_PIXELS})", path)
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):  # 16-bit grey: Pillow's RGB conversion clips, scale to 8 bits
                im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
            return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise EdgeVLMError(f"refused as a decompression bomb ({e})", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise EdgeVLMError(f"cannot read image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                           path) from None
