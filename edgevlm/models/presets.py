"""Named model presets: component builders with the published numbers, and each preset a few lines citing its source.

Real-size presets reproduce the upstream checkpoints' architectures (the numbers are those of the cited
`config.json` files); `edgevlm create` builds them with random weights for benchmarks, and `edgevlm convert`
fills them with the upstream weights. Tiny presets keep the real image geometry (CLIP 336/14: 576 patches, 144
tokens after LDP / LDPv2; SigLIP 384/14: 27 x 27 = 729 patches) and the family's own LLM architecture, and
shrink only widths and depths, because runtimes hard-code geometry (llama.cpp's LDPv2 graph assumes 24 x 24
patches). Their LLM vocabulary is the locally trained `shapes` tokenizer's, their prompt template `edgevlm`.
Each preset's family (template, default projector) is its row in `models.families.FAMILIES`, which lists it.
"""

from __future__ import annotations

from typing import Callable

from edgevlm.config import LLMConfig, MoEConfig, ProjectorConfig, VisionConfig, VisionKind, VLMConfig
from edgevlm.data.tokenizer import SHAPES_VOCAB
from edgevlm.models.families import FAMILIES
from edgevlm.registry import Registry

PRESETS: Registry[Callable[[], VLMConfig]] = Registry("preset")
SIGLIP_MEAN_STD = (0.5, 0.5, 0.5)
TINY_TEMPLATE = "edgevlm"  # the `shapes` prompts the tiny twins are trained on


def preset(name: str):
    return PRESETS.register(name)


# ---- vision towers ----------------------------------------------------------------------------------------------
def clip_vit_l_336() -> VisionConfig:
    """openai/clip-vit-large-patch14-336: 24 layers, 1024 wide, 16 heads, FFN 4096, quick_gelu, 336/14."""
    return VisionConfig()  # the defaults are this tower's


def siglip_so400m(num_layers: int = 27, feature_layer: int = -2, drop_first_token: bool | None = None) -> VisionConfig:
    """google/siglip-so400m-patch14-384: 27 layers, 1152 wide, 16 heads, FFN 4304, gelu_pytorch_tanh, eps 1e-6,
    384/14 (729 patches, no class token), mean = std = 0.5."""
    return VisionConfig(kind=VisionKind.SIGLIP, image_size=384, patch_size=14, hidden_size=1152,
                        intermediate_size=4304, num_layers=num_layers, num_heads=16, layer_norm_eps=1e-6,
                        hidden_act="gelu_pytorch_tanh", feature_layer=feature_layer,
                        drop_first_token=drop_first_token, image_mean=SIGLIP_MEAN_STD, image_std=SIGLIP_MEAN_STD)


def tiny_tower(kind: VisionKind, **kw) -> VisionConfig:
    """A 4-layer, 96-wide tower with the real tower's geometry (CLIP 336/14 or SigLIP 384/14)."""
    real = clip_vit_l_336() if kind is VisionKind.CLIP else siglip_so400m()
    return VisionConfig(kind=kind, image_size=real.image_size, patch_size=real.patch_size, hidden_size=96,
                        intermediate_size=384, num_layers=4, num_heads=3, layer_norm_eps=real.layer_norm_eps,
                        hidden_act=real.hidden_act, image_mean=real.image_mean, image_std=real.image_std, **kw)


# ---- language models --------------------------------------------------------------------------------------------
def mobilellama_1_4b() -> LLMConfig:
    """mtgv/MobileLLaMA-1.4B-Chat: Llama, hidden 2048, 24 layers, 16 heads, FFN 5632, 32k vocab, 2k context."""
    return LLMConfig(arch="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_layers=24,
                     num_heads=16, num_kv_heads=16, max_position_embeddings=2048, rms_norm_eps=1e-6)


def mobilellama_2_7b() -> LLMConfig:
    """mtgv/MobileLLaMA-2.7B-Chat: Llama, hidden 2560, 32 layers, 32 heads (head 80), FFN 6912, 32k vocab."""
    return LLMConfig(arch="llama", vocab_size=32000, hidden_size=2560, intermediate_size=6912, num_layers=32,
                     num_heads=32, num_kv_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6)


PHI2_EXTRA = {"partial_rotary_factor": 0.4, "hidden_act": "gelu_new", "qk_layernorm": False}
STABLELM2_EXTRA = {"partial_rotary_factor": 0.25, "use_qkv_bias": True, "use_parallel_residual": False,
                   "qk_layernorm": False, "hidden_act": "silu"}


def phi2() -> LLMConfig:
    """microsoft/phi-2: hidden 2560, 32 layers, 32 heads, FFN 10240 (gelu_new), vocab 51200, LayerNorm 1e-5,
    rotary on 40% of each head, untied LM head with bias."""
    return LLMConfig(arch="phi", vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_layers=32,
                     num_heads=32, num_kv_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-5,
                     extra=dict(PHI2_EXTRA))


def phi3_mini_4k() -> LLMConfig:
    """microsoft/Phi-3-mini-4k-instruct: hidden 3072, 32 layers, 32 heads, FFN 8192, vocab 32064, RMSNorm 1e-5,
    4k context with a 2047-token sliding window."""
    return LLMConfig(arch="phi3", vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_layers=32,
                     num_heads=32, num_kv_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                     extra={"sliding_window": 2047, "hidden_act": "silu"})


def tinyllama_1_1b() -> LLMConfig:
    """TinyLlama/TinyLlama-1.1B-Chat-v1.0: Llama, hidden 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632."""
    return LLMConfig(arch="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_layers=22,
                     num_heads=32, num_kv_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5)


def stablelm2_1_6b() -> LLMConfig:
    """stabilityai/stablelm-2-1_6b: hidden 2048, 24 layers, 32 heads, FFN 5632, vocab 100352, LayerNorm 1e-5,
    rotary on 25% of each head, biases on q/k/v."""
    return LLMConfig(arch="stablelm", vocab_size=100352, hidden_size=2048, intermediate_size=5632, num_layers=24,
                     num_heads=32, num_kv_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                     extra=dict(STABLELM2_EXTRA))


def tiny_llm(arch: str, eps: float = 1e-6, context: int = 512, **extra) -> LLMConfig:
    """The 4-layer, 128-wide LM every tiny twin uses, in the family's own architecture. RoPE base 1e6 (as
    recent long-context LMs use) rather than 1e4: with 32-wide heads, base 1e4 rotates every frequency pair
    by radians over the ~150 positions between a question and the image tokens, so attention cannot match a
    cell's position code by content; at 1e6 the slow pairs barely turn (measured: 0.48 → 0.60 on `shapes`
    after the same 625 steps). `context` must hold the family's image tokens plus a prompt and an answer: 512
    for the 144-token MobileVLM twins, 1024 where the projector keeps every patch (576 or 729 tokens)."""
    return LLMConfig(arch=arch, vocab_size=SHAPES_VOCAB, hidden_size=128, intermediate_size=384, num_layers=4,
                     num_heads=4, num_kv_heads=4, max_position_embeddings=context, rope_theta=1e6, rms_norm_eps=eps,
                     extra=extra)


def tiny_vlm(family: str, projector: str, **projector_kw) -> VLMConfig:
    """The tiny shape the MobileVLM twins share: CLIP-336/14 geometry, a 4-layer 128-wide Llama."""
    return FAMILIES[family].config(tiny_tower(VisionKind.CLIP), tiny_llm("llama"),
                                   ProjectorConfig(kind=projector, **projector_kw), template=TINY_TEMPLATE)


# ---- MobileVLM --------------------------------------------------------------------------------------------------
@preset("mobilevlm-tiny")
def mobilevlm_tiny() -> VLMConfig:
    """MobileVLM (arXiv:2312.16886) geometry with LDP: 576 patches → 144 tokens."""
    return tiny_vlm("mobilevlm", "ldp")


@preset("mobilevlm-v2-tiny")
def mobilevlm_v2_tiny() -> VLMConfig:
    """MobileVLM V2 (arXiv:2402.03766) geometry with LDPv2: 576 patches → 144 tokens."""
    return tiny_vlm("mobilevlm", "ldpv2")


def mobilevlm(projector: str, llm: LLMConfig) -> VLMConfig:
    """CLIP ViT-L/14-336 (hidden_states[-2], patch tokens) + LDP / LDPv2 + MobileLLaMA, Vicuna v1 prompts."""
    return FAMILIES["mobilevlm"].config(clip_vit_l_336(), llm, ProjectorConfig(kind=projector))


@preset("mobilevlm-1.7b")
def mobilevlm_1_7b() -> VLMConfig:
    """mtgv/MobileVLM-1.7B: openai/clip-vit-large-patch14-336 + LDP + mtgv/MobileLLaMA-1.4B-Chat."""
    return mobilevlm("ldp", mobilellama_1_4b())


@preset("mobilevlm-v2-1.7b")
def mobilevlm_v2_1_7b() -> VLMConfig:
    """mtgv/MobileVLM_V2-1.7B: openai/clip-vit-large-patch14-336 + LDPv2 + MobileLLaMA-1.4B-Chat."""
    return mobilevlm("ldpv2", mobilellama_1_4b())


@preset("mobilevlm-v2-3b")
def mobilevlm_v2_3b() -> VLMConfig:
    """mtgv/MobileVLM_V2-3B: openai/clip-vit-large-patch14-336 + LDPv2 + mtgv/MobileLLaMA-2.7B-Chat."""
    return mobilevlm("ldpv2", mobilellama_2_7b())


# ---- TinyLLaVA --------------------------------------------------------------------------------------------------
@preset("tinyllava-phi2-siglip-3.1b")
def tinyllava_phi2_siglip() -> VLMConfig:
    """tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B (TinyLLaVA_Factory): SigLIP-so400m + mlp2x_gelu + microsoft/phi-2.

    The Factory takes hidden_states[-2] with its "patch" strategy, which drops token 0 for SigLIP as for CLIP:
    728 image tokens."""
    return FAMILIES["tinyllava"].config(siglip_so400m(drop_first_token=True), phi2())


@preset("tinyllava-tinyllama-siglip-1.5b")
def tinyllava_tinyllama_siglip() -> VLMConfig:
    """bczhou/TinyLLaVA-1.5B (the LLaVA-style TinyLLaVA): SigLIP-so400m + mlp2x_gelu + TinyLlama-1.1B-Chat.

    Its SigLIP tower is stored without its last block and its output taken (= hidden_states[-2] of the full
    tower), all 729 patches."""
    return FAMILIES["tinyllava"].config(siglip_so400m(num_layers=26, feature_layer=-1), tinyllama_1_1b())


@preset("tinyllava-tiny")
def tinyllava_tiny() -> VLMConfig:
    """TinyLLaVA-Phi-2-SigLIP's shape, shrunk: SigLIP 384/14 (728 tokens, Factory rule), mlp2x_gelu, Phi."""
    return FAMILIES["tinyllava"].config(tiny_tower(VisionKind.SIGLIP, drop_first_token=True),
                                        tiny_llm("phi", 1e-5, context=1024, **PHI2_EXTRA), template=TINY_TEMPLATE)


# ---- Bunny ------------------------------------------------------------------------------------------------------
def bunny(llm: LLMConfig) -> VLMConfig:
    """Bunny (arXiv:2402.11530): SigLIP-so400m hidden_states[-2] (all 729 patches) + mlp2x_gelu, `bunny` prompts."""
    return FAMILIES["bunny"].config(siglip_so400m(), llm)


@preset("bunny-v1.0-3b")
def bunny_v1_0_3b() -> VLMConfig:
    """BAAI/Bunny-v1_0-3B: google/siglip-so400m-patch14-384 + mlp2x_gelu + microsoft/phi-2."""
    return bunny(phi2())


@preset("bunny-v1.0-4b")
def bunny_v1_0_4b() -> VLMConfig:
    """BAAI/Bunny-v1_0-4B: google/siglip-so400m-patch14-384 + mlp2x_gelu + microsoft/Phi-3-mini-4k-instruct."""
    return bunny(phi3_mini_4k())


@preset("bunny-tiny")
def bunny_tiny() -> VLMConfig:
    """Bunny-v1.0-3B's shape, shrunk: SigLIP 384/14 (729 tokens), mlp2x_gelu, Phi."""
    return FAMILIES["bunny"].config(tiny_tower(VisionKind.SIGLIP), tiny_llm("phi", 1e-5, context=1024, **PHI2_EXTRA),
                                    template=TINY_TEMPLATE)


# ---- MoE-LLaVA --------------------------------------------------------------------------------------------------
def moe_llava(llm: LLMConfig) -> VLMConfig:
    """MoE-LLaVA (arXiv:2401.15947): CLIP ViT-L/14-336 + mlp2x_gelu + an LM whose every 2nd FFN is 4 experts, top-2."""
    return FAMILIES["moe-llava"].config(clip_vit_l_336(), llm, moe=MoEConfig(num_experts=4, top_k=2))


@preset("moe-llava-stablelm-1.6bx4")
def moe_llava_stablelm() -> VLMConfig:
    """LanguageBind/MoE-LLaVA-StableLM-1.6B-4e: openai/clip-vit-large-patch14-336 + stabilityai/stablelm-2-1_6b."""
    return moe_llava(stablelm2_1_6b())


@preset("moe-llava-phi2-2.7bx4")
def moe_llava_phi2() -> VLMConfig:
    """LanguageBind/MoE-LLaVA-Phi2-2.7B-4e: openai/clip-vit-large-patch14-336 + microsoft/phi-2."""
    return moe_llava(phi2())


@preset("moe-llava-tiny")
def moe_llava_tiny() -> VLMConfig:
    """MoE-LLaVA-StableLM's shape, shrunk: CLIP 336/14 (576 tokens), mlp2x_gelu, StableLM with 4 experts, top-2."""
    return FAMILIES["moe-llava"].config(tiny_tower(VisionKind.CLIP),
                                        tiny_llm("stablelm", 1e-5, context=1024, **STABLELM2_EXTRA),
                                        template=TINY_TEMPLATE, moe=MoEConfig(num_experts=4, top_k=2))


# Towers that upstream configs name by hub id; `edgevlm convert` uses these numbers when the tower's weights are
# inside the checkpoint but its config.json is not.
KNOWN_TOWERS: dict[str, Callable[[], VisionConfig]] = {
    "openai/clip-vit-large-patch14-336": clip_vit_l_336,
    "google/siglip-so400m-patch14-384": siglip_so400m,
}


def get_preset(name: str) -> VLMConfig:
    return PRESETS[name]()
