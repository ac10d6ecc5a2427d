"""The runtime contract's three functions as modules over an EdgeVLM's parts, for every exporter that traces them.

`vision_encoder` (tower + projector), `token_embedding` (the LM's input table) and `text_decoder` (the LM on
embeddings, its KV cache the format's own: `export.decoder`, `executorch.TextDecoder`, `onnx.PastPresentDecoder`,
`coreml_decoder.CoreMLTextDecoder`) are what ExecuTorch, ONNX and CoreML bundles carry (docs/bundle-spec.md,
section 7); `EdgeVLM.encode_image` / `embed` compute the same. The modules share the parts' weights
(exporters that quantize in place pass copies), so weights keep their module paths, e.g. MoE routers'
`deepspeed_moe.gate.wg`, by which quantizers leave them float.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from edgevlm.bundle.image import ImagePreprocess


class VisionEncoder(nn.Module):
    """`vision_encoder`: pixels (1, 3, S, S) → image embeddings (1, N_img, D).

    With `preprocess`, the input is the resized uint8 RGB image and rescaling and normalization run inside the
    program (what ExecuTorch's MultimodalRunner passes, as in ExecuTorch's LLaVA); without, it is the float
    pixel values `ImagePreprocess` makes.
    """

    def __init__(self, vision: nn.Module, projector: nn.Module, preprocess: ImagePreprocess | None = None):
        super().__init__()
        self.vision, self.projector = vision, projector
        self.rescale = None if preprocess is None else preprocess.rescale
        if preprocess is not None:
            self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = image if self.rescale is None else (image.float() * self.rescale - self.mean) / self.std
        return self.projector(self.vision(pixels))  # (1, N_img, D)


class TokenEmbedding(nn.Module):
    """`token_embedding`: ids (1, T) → embeddings (1, T, D)."""

    def __init__(self, table: nn.Embedding):
        super().__init__()
        self.table = table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)  # (1, T, D)


def contract_modules(vision: nn.Module, projector: nn.Module, llm: nn.Module,
                     text_decoder: Callable[[nn.Module], nn.Module],
                     preprocess: ImagePreprocess | None = None) -> dict[str, nn.Module]:
    """The three functions, by their contract names, in eval mode; `text_decoder` wraps the LM its format's way."""
    return {
        "vision_encoder": VisionEncoder(vision, projector, preprocess).eval(),
        "token_embedding": TokenEmbedding(llm.get_input_embeddings()).eval(),
        "text_decoder": text_decoder(llm).eval(),
    }
