"""The architecture table: everything edgevlm knows about one causal-LM architecture, in one row.

Each row is read where its facts are needed: `models.llm` builds the transformers config from it, the
converters (`convert.upstream`) read an upstream config with it and keep its `extra_keys`, the export decoder
(`export.decoder.PlainDecoder`) restates the layer wiring its `decoder` spec names, and the GGUF writer
(`export.gguf`) writes it as the llama.cpp architecture its `gguf` spec names. A new architecture is one row
here; `tests/test_tables.py` checks that every reader understands every row. (The pattern of mlc-llm's MODELS
table, python/mlc_llm/model/model.py, and llama.cpp's @ModelBase.register classes.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from transformers import LlamaConfig, PhiConfig, Phi3Config, PretrainedConfig, Qwen2Config, StableLmConfig

from edgevlm.registry import Registry


class Norm(str, enum.Enum):
    """The decoder's norm; the value is the transformers config key of its epsilon."""

    RMS = "rms_norm_eps"
    LAYER = "layer_norm_eps"


@dataclass(frozen=True)
class DecoderSpec:
    """How the architecture wires a decoder layer (the parts `export.decoder.PlainDecoder` restates).

    Norm kind, activation and biases need no field: the layer's own norm / MLP / Linear modules compute them.
    """

    parallel_residual: bool | str = False  # x + attn(n(x)) + mlp(n(x)); a str: the config flag that says
    fused_qkv: bool = False  # one `qkv_proj` (Phi-3) instead of q_proj / k_proj / v_proj
    out_proj: str = "o_proj"  # the attention's output projection
    final_norm: str = "norm"  # the norm before the LM head, in `model`
    unsupported: tuple[str, ...] = ()  # config flags the decoder does not restate: refused when set

    def parallel(self, cfg) -> bool:
        return getattr(cfg, self.parallel_residual) if isinstance(self.parallel_residual, str) \
            else self.parallel_residual


@dataclass(frozen=True)
class GGUFMoE:
    """The llama.cpp graph that runs the architecture with MoE-LLaVA's MoE layers (softmax, top-k renormalised,
    experts in every layer: a dense layer is written as identical experts behind a zero router).

    Its layer must compute ours exactly; what the exporter rewrites so that it does is said here.
    """

    arch: str  # the llama.cpp architecture name; its rotary layout must be the dense graph's (`permute_qk`)
    parallel_residual: bool = False  # the graph's layer wiring; a model wired otherwise is refused
    layer_norm_as_rms: bool = False  # the graph's RMSNorm (weight + bias) runs our LayerNorm: every tensor that
    # writes the residual stream is written zero-mean (x - mean(x) = x there, so RMSNorm(x) = LayerNorm(x))
    zero_biases: tuple[str, ...] = ()  # llama.cpp tensors whose bias the graph requires and our LM may lack


@dataclass(frozen=True)
class GGUFSpec:
    """How the architecture is written for llama.cpp (convert_hf_to_gguf.py's class for it)."""

    arch: str  # the llama.cpp architecture name (gguf.MODEL_ARCH_NAMES)
    activations: tuple[str, ...]  # transformers `hidden_act` values the llama.cpp graph computes (it fixes one)
    permute_qk: bool = False  # llama's graph rotates interleaved pairs (rope type NORM); the rest halves (NEOX)
    moe: GGUFMoE | None = None  # the graph for its MoE-LLaVA variant; None: MoE models of this row are refused


@dataclass(frozen=True)
class Arch:
    name: str  # LLMConfig.arch
    hf_config: type[PretrainedConfig]  # the transformers config class the LM is built from
    norm: Norm
    extra_keys: tuple[str, ...]  # arch-specific config keys an LLMConfig carries in `extra` (all that changes
    # the computation); converters keep them from upstream configs
    decoder: DecoderSpec
    gguf: GGUFSpec | None  # None: no llama.cpp graph computes it


ARCHS: Registry[Arch] = Registry("LLM architecture")


def _row(arch: Arch) -> None:
    ARCHS.register(arch.name)(arch)


_row(Arch("llama", LlamaConfig, Norm.RMS, ("hidden_act", "attention_bias", "mlp_bias"), DecoderSpec(),
          GGUFSpec("llama", ("silu",), permute_qk=True, moe=GGUFMoE("llama"))))  # as Mixtral
_row(Arch("qwen2", Qwen2Config, Norm.RMS, ("hidden_act", "sliding_window", "use_sliding_window"),
          DecoderSpec(unsupported=("use_sliding_window",)),  # q/k/v biases: the Linear modules'
          GGUFSpec("qwen2", ("silu",))))
_row(Arch("phi3", Phi3Config, Norm.RMS, ("hidden_act", "sliding_window"),
          DecoderSpec(fused_qkv=True, unsupported=("sliding_window",)),  # gate_up_proj: its mlp's
          GGUFSpec("phi3", ("silu",))))
_row(Arch("phi", PhiConfig, Norm.LAYER, ("hidden_act", "qk_layernorm", "partial_rotary_factor"),
          DecoderSpec(parallel_residual=True, out_proj="dense", final_norm="final_layernorm",
                      unsupported=("qk_layernorm",)),
          # ggml_gelu: the tanh approximation. No MoE graph: none has Phi's parallel layer with GELU experts
          # (README, "GGUF: what llama.cpp cannot run")
          GGUFSpec("phi2", ("gelu_new", "gelu_pytorch_tanh"))))
_row(Arch("stablelm", StableLmConfig, Norm.LAYER,
          ("hidden_act", "use_qkv_bias", "use_parallel_residual", "qk_layernorm", "partial_rotary_factor"),
          DecoderSpec(parallel_residual="use_parallel_residual", unsupported=("qk_layernorm",)),
          # MoE: Phi-3.5-MoE's graph (phi3's sequential layer, RMSNorm with bias, q/k/v biases, NEOX partial
          # rotary by rope.dimension_count, SwiGLU experts); the parallel-residual variant is refused
          GGUFSpec("stablelm", ("silu",), moe=GGUFMoE("phimoe", layer_norm_as_rms=True,
                                                      zero_biases=("attn_output", "output")))))
