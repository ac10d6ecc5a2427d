"""Reading Hugging Face checkpoint dirs: weights, LLM / tower configs, tokenizers, and strict prefix renaming.

Upstream files were written by transformers 4.x, whose CLIP / SigLIP vision models name their tensors
`vision_model.*`; transformers 5 drops that level (edgevlm's tower tensors are `vision.tower.embeddings.*`), so a
tower re-saved by 5.x reads `embeddings.*`, `encoder.*`: `tower_tensors` accepts both.
LLaVA-family checkpoints are a transformers causal LM with the tower and projector added as submodules, so
their tensors are the LM's own names plus `model.vision_tower.*` / `model.mm_projector.*` (TinyLLaVA_Factory:
`language_model.*`, `vision_tower._vision_tower.*`, `connector._connector.*`). edgevlm keeps the same module
trees under `llm.`, `vision.tower.` and `projector.`, so converting is an ordered list of prefix renames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer

from edgevlm.config import LLMConfig, VisionConfig, VisionKind
from edgevlm.bundle.tokenizer import SPECIALS_FILE, TextTokenizer, read_specials
from edgevlm.errors import EdgeVLMError
from edgevlm.io import read_json
from edgevlm.models.archs import ARCHS

# Tensors upstream files carry that no forward pass reads: rotary caches and position-id buffers of older
# transformers versions, SigLIP's pooling head, and the text half of a full CLIP / SigLIP model.
NOT_WEIGHTS = re.compile(r"(rotary_emb\.inv_freq|embeddings\.position_ids|vision_model\.head\.|^text_model\.|"
                         r"^logit_scale|^logit_bias|^visual_projection|^text_projection)")
CONFIG_META = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path", "torch_dtype",
               "dtype", "text_config", "vision_config")


# ---- weights ----------------------------------------------------------------------------------------------------
def weight_files(src: Path) -> list[Path]:
    """The checkpoint's weight files: one or sharded (index.json), safetensors preferred over .bin."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (src / single).is_file():
            return [src / single]
        if (src / index).is_file():
            shards = sorted(set(read_json(src / index).get("weight_map", {}).values()))
            return [src / s for s in shards]
    raise EdgeVLMError("no model.safetensors or pytorch_model.bin (or their .index.json) in the checkpoint", src)


def read_tensors(src: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in weight_files(src):
        if not f.is_file():
            raise EdgeVLMError("weight shard named by the index is missing", f)
        try:
            part = load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu",
                                                                                   weights_only=True)
        except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as e:
            raise EdgeVLMError(f"cannot read weights ({str(e).splitlines()[0]})", f) from None
        out.update(part)
    return out


def rename(tensors: dict[str, torch.Tensor], rules: list[tuple[str, str]], path: Path) -> dict[str, torch.Tensor]:
    """Apply the first matching (old prefix, new prefix) rule to every tensor name; unmatched names raise."""
    out, unexpected = {}, []
    for name, t in tensors.items():
        if NOT_WEIGHTS.search(name):
            continue
        rule = next(((a, b) for a, b in rules if name.startswith(a)), None)
        if rule is None:
            unexpected.append(name)
        else:
            out[rule[1] + name[len(rule[0]):]] = t
    if unexpected:
        unexpected.sort()
        raise EdgeVLMError(f"unexpected tensors: {', '.join(unexpected[:8])}{' …' if len(unexpected) > 8 else ''}",
                           path)
    return out


def take(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove and return the tensors under `prefix`, the prefix cut off."""
    names = [n for n in tensors if n.startswith(prefix)]
    return {n[len(prefix):]: tensors.pop(n) for n in names}


# ---- configs ----------------------------------------------------------------------------------------------------
def llm_config(d: dict, arch: str, path: Path) -> LLMConfig:
    """A transformers LM config dict (defaults filled by transformers' own class) → LLMConfig."""
    row = ARCHS[arch]
    try:
        c = row.hf_config(**{k: v for k, v in d.items() if k not in CONFIG_META})
    except (TypeError, ValueError) as e:
        raise EdgeVLMError(f"invalid {arch} config ({e})", path) from None
    rope = dict(getattr(c, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise EdgeVLMError(f"rope scaling {rope['rope_type']!r} is not supported", path)
    eps = getattr(c, row.norm.value)  # the config key the row names
    extra = {k: getattr(c, k) for k in row.extra_keys if hasattr(c, k)}
    if "partial_rotary_factor" in row.extra_keys:
        extra["partial_rotary_factor"] = rope.get("partial_rotary_factor", 1.0)
    return LLMConfig(arch=arch, vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                     intermediate_size=c.intermediate_size, num_layers=c.num_hidden_layers,
                     num_heads=c.num_attention_heads, num_kv_heads=c.num_key_value_heads or c.num_attention_heads,
                     max_position_embeddings=c.max_position_embeddings, rope_theta=rope.get("rope_theta", 10000.0),
                     rms_norm_eps=eps, tie_word_embeddings=bool(c.tie_word_embeddings), extra=extra)


def vision_config(d: dict, path: Path, **kw) -> VisionConfig:
    """A CLIP / SigLIP (vision) config dict → VisionConfig; `kw` sets the feature selection."""
    d = d.get("vision_config", d)
    kind = VisionKind.SIGLIP if "siglip" in d.get("model_type", "") else VisionKind.CLIP
    half = (0.5, 0.5, 0.5)
    mean_std = dict(image_mean=half, image_std=half) if kind is VisionKind.SIGLIP else {}
    defaults = {"siglip": ("gelu_pytorch_tanh", 1e-6), "clip": ("quick_gelu", 1e-5)}[kind.value]
    try:
        return VisionConfig(kind=kind, image_size=d["image_size"], patch_size=d["patch_size"],
                            hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
                            num_layers=d["num_hidden_layers"], num_heads=d["num_attention_heads"],
                            layer_norm_eps=d.get("layer_norm_eps", defaults[1]),
                            hidden_act=d.get("hidden_act", defaults[0]), **{**mean_std, **kw})
    except KeyError as e:
        raise EdgeVLMError(f"vision config lacks {e}", path) from None


def with_preprocessor(cfg: VisionConfig, tower_dir: Path | None) -> VisionConfig:
    """Take image mean / std from the tower's preprocessor_config.json when there is one."""
    f = None if tower_dir is None else tower_dir / "preprocessor_config.json"
    if f is not None and f.is_file():
        p = read_json(f)
        cfg.image_mean, cfg.image_std = tuple(p.get("image_mean", cfg.image_mean)), tuple(p.get("image_std", cfg.image_std))
    return cfg


def stored_layers(tensors: dict[str, torch.Tensor]) -> int:
    """Encoder blocks in a tower's tensors named as `tower_tensors` returns them (some upstreams store the tower
    without its unused last block)."""
    pat = re.compile(r"encoder\.layers\.(\d+)\.")
    found = {int(m.group(1)) for n in tensors if (m := pat.match(n))}
    return max(found) + 1 if found else 0


def fit_layers(cfg: VisionConfig, n: int, path: Path) -> VisionConfig:
    """A tower stored with n < num_layers blocks ran truncated, its last output taken (Imp / early TinyLLaVA)."""
    if n == cfg.num_layers:
        return cfg
    if not 0 < n < cfg.num_layers:
        raise EdgeVLMError(f"the checkpoint holds {n} vision blocks, the config says {cfg.num_layers}", path)
    cfg.num_layers, cfg.feature_layer = n, -1
    return cfg


# ---- the vision tower -------------------------------------------------------------------------------------------
def tower_dir(name: str, flag: Path | None, src: Path) -> Path:
    """The local dir holding the tower named by the config (`mm_vision_tower`), or the --vision-tower flag's."""
    if flag is not None:
        if not (flag / "config.json").is_file():
            raise EdgeVLMError("no config.json in the vision tower directory", flag)
        return flag
    for cand in (Path(name), src / name):
        if name and (cand / "config.json").is_file():
            return cand
    raise EdgeVLMError(f"the vision tower {name!r} is a hub id or missing dir, not a local directory: download "
                       f"it and pass --vision-tower DIR", src / "config.json")


def read_tower(d: Path) -> dict[str, torch.Tensor]:
    """A CLIPVisionModel / SiglipVisionModel (or full CLIP / SigLIP) dir's tower weights, via `tower_tensors`."""
    return tower_tensors(read_tensors(d), weight_files(d)[0])


TOWER_LEVEL = "vision_model."  # transformers 4's level above a CLIP / SigLIP tower's own tensor names
TOWER_UNUSED = ("head.",)  # SigLIP's pooling head: no LLaVA-style model reads it


def tower_tensors(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """A tower's tensors named as transformers 5 names them (`embeddings.*`, `encoder.*`, `post_layernorm.*`),
    whether 4.x (`vision_model.embeddings.*`) or 5.x saved them; names of neither kind are kept as they are
    (a full CLIP / SigLIP model's `text_model.*` is dropped by `rename`, anything else is listed as unexpected)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        short = name[len(TOWER_LEVEL):] if name.startswith(TOWER_LEVEL) else name
        if short.startswith(TOWER_UNUSED):
            continue
        if short in out:
            raise EdgeVLMError(f"the tower tensor {short!r} is stored twice (as {name!r} and without "
                               f"{TOWER_LEVEL!r})", path)
        out[short] = t
    return out


# ---- tokenizers -------------------------------------------------------------------------------------------------
def read_tokenizer(src: Path, vocab_size: int) -> TextTokenizer:
    """The checkpoint's tokenizer.json as it is (converted offline by transformers when only slow files exist),
    its special tokens from tokenizer_config.json / special_tokens_map.json, padded to the LM's vocabulary."""
    if (src / "tokenizer.json").is_file():
        try:
            tok = Tokenizer.from_file(str(src / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise EdgeVLMError(f"not a valid tokenizer.json ({str(e).splitlines()[0]})", src / "tokenizer.json") from None
    else:
        tok = _convert_slow(src)
    meta = next((src / f for f in (SPECIALS_FILE, "special_tokens_map.json") if (src / f).is_file()), None)
    if meta is None:
        raise EdgeVLMError("no tokenizer_config.json or special_tokens_map.json naming BOS / EOS", src)
    specials, add_bos = read_specials(meta, default_add_bos=_post_processor_adds_bos(tok))
    tokenizer = TextTokenizer.named(tok, *specials, add_bos=add_bos, path=meta)
    if len(tokenizer) > vocab_size:
        raise EdgeVLMError(f"the tokenizer has {len(tokenizer)} tokens, the LM only {vocab_size}", src)
    return tokenizer.pad_to(vocab_size)


def _convert_slow(src: Path) -> Tokenizer:
    """tokenizer.model / vocab.json + merges.txt → a fast tokenizer, offline, with transformers' converters."""
    slow = [f for f in ("tokenizer.model", "vocab.json") if (src / f).is_file()]
    if not slow:
        raise EdgeVLMError("no tokenizer.json (nor tokenizer.model / vocab.json to convert) in the checkpoint", src)
    try:
        from transformers import AutoTokenizer

        t = AutoTokenizer.from_pretrained(str(src), local_files_only=True, use_fast=True)
        return Tokenizer.from_str(t.backend_tokenizer.to_str())
    except Exception as e:  # transformers raises many kinds here; the message says which
        raise EdgeVLMError(f"no tokenizer.json, and transformers could not convert {slow[0]} offline "
                           f"({str(e).splitlines()[0]})", src / slow[0]) from None


def _post_processor_adds_bos(tok: Tokenizer) -> bool:
    """Does encoding with special tokens add a BOS (Llama's TemplateProcessing) or not (Phi-2's ByteLevel)?"""
    post = json.loads(tok.to_str()).get("post_processor") or {}
    procs = post.get("processors", [post])
    return any(p.get("type") == "TemplateProcessing" and "SpecialToken" in json.dumps(p.get("single", [])[:1])
               for p in procs)


# ---- LLaVA-style layouts (MobileVLM, Bunny, the first TinyLLaVA) ------------------------------------------------
LLAVA_TOWER = "model.vision_tower.vision_tower."


def llava_tower(src: Path, cfg: dict, tensors: dict[str, torch.Tensor], flag: Path | None,
                **select) -> tuple[VisionConfig, dict[str, torch.Tensor]]:
    """The tower of a LLaVA-style checkpoint: its weights from the checkpoint (`model.vision_tower.vision_tower.*`,
    removed from `tensors`) or from the local dir `mm_vision_tower` / --vision-tower names; its config from that
    dir, else from edgevlm's table of the towers upstream configs name by hub id."""
    from edgevlm.models.presets import KNOWN_TOWERS

    name = cfg.get("mm_vision_tower") or cfg.get("vision_tower") or ""
    inside = tower_tensors(take(tensors, LLAVA_TOWER), weight_files(src)[0])
    try:
        d = tower_dir(name, flag, src)
    except EdgeVLMError:
        if not inside or name not in KNOWN_TOWERS:
            raise
        d = None
    if d is not None:
        vis = with_preprocessor(vision_config(read_json(d / "config.json"), d / "config.json", **select), d)
    else:
        vis = KNOWN_TOWERS[name]()
        for k, v in select.items():
            setattr(vis, k, v)
        vis.__post_init__()
    weights, read_from = (inside, weight_files(src)[0]) if inside else (read_tower(d), weight_files(d)[0])
    vis = fit_layers(vis, stored_layers(weights), read_from)
    return vis, rename(weights, [("", "vision.tower.")], read_from)


# ---- heads ------------------------------------------------------------------------------------------------------
def zero_head_bias(tensors: dict[str, torch.Tensor], llm: LLMConfig) -> dict[str, torch.Tensor]:
    """Add a zero `lm_head.bias` to a Phi checkpoint saved without one, and nothing else.

    Bunny's BunnyPhiForCausalLM and MoE-LLaVA's MoELLaVAPhiForCausalLM build Phi's head as
    `nn.Linear(..., bias=False)`, so their files (BAAI/Bunny-v1_0-3B among them) have no `lm_head.bias`, while
    transformers' PhiForCausalLM, which edgevlm builds, has one. Adding zero is exact; loading stays strict."""
    head = tensors.get("lm_head.weight")
    if llm.arch == "phi" and head is not None and "lm_head.bias" not in tensors:
        tensors["lm_head.bias"] = torch.zeros(head.shape[0], dtype=head.dtype)
    return tensors
