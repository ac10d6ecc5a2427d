"""EdgeVLM: vision tower → token-reducing projector → causal LM, LLaVA-style.

The projected image tokens replace the `<image>` placeholder in the prompt's token embeddings. The three
pieces map one to one onto the runtime contract every exporter carries: `encode_image` is
`vision_encoder`, `embed` is `token_embedding`, and the LM on embeddings with a KV cache is `text_decoder`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgevlm.config import VLMConfig
from edgevlm.bundle.image import ImagePreprocess
from edgevlm.bundle.template import TEMPLATES
from edgevlm.bundle.tokenizer import TextTokenizer, split_at_image
from edgevlm.errors import EdgeVLMError
from edgevlm.io import atomic_dir, read_json, require_dir, write_json
from edgevlm.models.checkpoint import MappedWeights, map_weights_into, save_weights, uninitialised, unique_state
from edgevlm.models.llm import build_llm
from edgevlm.models.projectors import build_projector, projector_tokens
from edgevlm.models.vision import VisionTower
from edgevlm.config import MAX_NEW_TOKENS

CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"
ADAPTER = "adapter"  # a LoRA adapter kept unmerged (edgevlm/train/lora.py writes it)


class EdgeVLM(nn.Module):
    def __init__(self, cfg: VLMConfig, tokenizer: TextTokenizer):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.template = TEMPLATES[cfg.template]
        v = cfg.vision
        self.preprocess = ImagePreprocess(v.image_size, tuple(v.image_mean), tuple(v.image_std))
        self.vision = VisionTower(cfg.vision)
        self.projector = build_projector(cfg.projector, cfg.vision.hidden_size, cfg.llm.hidden_size)
        self.llm = build_llm(cfg.llm)
        if cfg.moe.num_experts:
            from edgevlm.models.moe import upcycle

            upcycle(self.llm, cfg.moe)
        self.weights_file: MappedWeights | None = None  # the model dir's weights, when they back the parameters

    def page_out_weights(self) -> None:
        """Hand back the memory of weights mapped from the model dir (`MappedWeights.page_out`): for a step that
        no longer reads them, before a memory-hungry one (an exporter's quantizer or lowering). A model built in
        memory keeps its weights."""
        if self.weights_file is not None:
            self.weights_file.page_out()

    # ---- the runtime contract -------------------------------------------------------------------------------
    @property
    def num_image_tokens(self) -> int:
        return projector_tokens(self.cfg.projector, self.cfg.vision.num_features)

    def pixel_values(self, image) -> torch.Tensor:
        """A PIL image or (H, W, 3) uint8 array → (1, 3, S, S) float32 on the model's device (the bundle's
        preprocessing, docs/bundle-spec.md)."""
        return torch.from_numpy(self.preprocess(image))[None].to(self.device)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → image embeddings (B, N_img, D_llm)."""
        return self.projector(self.vision(pixel_values))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    # ---- prompts ----------------------------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        return self.tokenizer.encode_prompt(self.template.prompt(question))

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer.encode(self.template.answer_prefix + answer) + [self.tokenizer.eos_id]

    def splice(self, ids: list[int], image_embeds: torch.Tensor) -> torch.Tensor:
        """Token ids with one IMAGE_TOKEN_INDEX → embeddings (T + N_img - 1, D) with the image spliced in."""
        ids_before, ids_after = split_at_image(ids)
        dev = image_embeds.device
        before = self.embed(torch.tensor(ids_before, device=dev))
        after = self.embed(torch.tensor(ids_after, device=dev))
        return torch.cat([before, image_embeds.to(before.dtype), after])

    # ---- generation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        image_embeds: torch.Tensor,
        prompt: list[int],
        max_new_tokens: int = MAX_NEW_TOKENS,
        temperature: float = 0.0,
        top_p: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Greedy (temperature 0) or nucleus-sampled continuation of one prompt, stopping at EOS."""
        x = self.splice(prompt, image_embeds[0])[None]  # (1, T, D_llm)
        limit, pos = self.cfg.llm.max_position_embeddings, x.shape[1]
        if pos >= limit:  # the same check and stop as every runtime (edgevlm.runtimes.base.ContractRuntime)
            raise EdgeVLMError(f"prompt of {pos} positions does not fit the model's context of {limit}")
        out = self.llm(inputs_embeds=x, use_cache=use_cache)
        new: list[int] = []
        while len(new) < max_new_tokens and pos < limit:
            pos += 1
            tok = _pick(out.logits[0, -1].float(), temperature, top_p, generator)
            if tok == self.tokenizer.eos_id:
                break
            new.append(tok)
            step = self.embed(torch.tensor([[tok]], device=x.device))
            if use_cache:
                out = self.llm(inputs_embeds=step, past_key_values=out.past_key_values, use_cache=True)
            else:
                x = torch.cat([x, step], dim=1)
                out = self.llm(inputs_embeds=x, use_cache=False)
        return new

    @torch.no_grad()
    def answer_many(self, image, questions: list[str], **kw) -> list[str]:
        """Answer questions about one PIL image or (H, W, 3) array, encoding the image once."""
        emb = self.encode_image(self.pixel_values(image))
        return [self.tokenizer.decode(self.generate(emb, self.prompt_ids(q), **kw)).strip() for q in questions]

    def answer(self, image, question: str, **kw) -> str:
        return self.answer_many(image, [question], **kw)[0]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- model dirs -----------------------------------------------------------------------------------------
    def save_pretrained(self, out: str | Path) -> Path:
        """Write config.json + model.safetensors + tokenizer.json atomically.

        A model whose LLM carries a LoRA adapter is saved by `edgevlm.train.lora.save_pretrained`, which knows
        the adapter's names; models/ stays the bare model and never imports train/.
        """
        with atomic_dir(out, "model") as tmp:
            write_model_dir(tmp, self, unique_state(self))
        return Path(out)

    @classmethod
    def from_pretrained(cls, path: str | Path, base_of_adapter: bool = False) -> "EdgeVLM":
        """Read an edgevlm model dir. A dir that keeps a LoRA `adapter/` is refused unless `base_of_adapter`
        (the caller applies the adapter: `edgevlm.load.load_model` opens any model dir that way, or an upstream
        checkpoint's layout)."""
        path = require_dir(path, "model directory")
        if not is_model_dir(path):
            raise EdgeVLMError("not an edgevlm model config (no `vision` section); an upstream checkpoint "
                               "opens through edgevlm.load.load_model or `edgevlm convert`", path / CONFIG)
        if (path / ADAPTER).is_dir() and not base_of_adapter:  # the base alone is not the model
            raise EdgeVLMError("the model dir keeps a LoRA adapter: open it with edgevlm.load.load_model",
                               path / ADAPTER)
        cfg = VLMConfig.from_dict(read_json(path / CONFIG))
        tokenizer = TextTokenizer.load(path / TOKENIZER)
        with uninitialised():  # every parameter is mapped from the file next: none is written first
            model = cls(cfg, tokenizer)
        model.weights_file = map_weights_into(model, path / WEIGHTS)
        return model.eval()


def is_model_dir(path: Path) -> bool:
    """Whether `path/config.json` is an edgevlm `VLMConfig` (upstream configs have no `vision` section)."""
    return "vision" in read_json(path / CONFIG)


def write_model_dir(tmp: Path, model: EdgeVLM, state: dict[str, torch.Tensor]) -> None:
    """The three files of a model dir, `state` as its weights, into `tmp` (the caller renames it into place)."""
    write_json(tmp / CONFIG, model.cfg.to_dict())
    save_weights(state, tmp / WEIGHTS)
    model.tokenizer.save(tmp / TOKENIZER)


def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    keep = sorted_p.cumsum(0) - sorted_p < top_p  # smallest prefix whose mass reaches top_p
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
    return int(order[choice])
