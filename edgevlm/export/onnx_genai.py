"""The onnxruntime-genai view of an ONNX bundle: the bundle dir is also a text-only genai model folder.

onnxruntime-genai 0.18's Generator feeds a decoder-only model token ids (its CPU embedding split needs the
dynamic-batching Engine, and its multimodal types are specific: phi3v, gemma3, qwen2_5_vl, no LLaVA), so the
genai decoder is `text_decoder.onnx`: `embedding.onnx` composed with `decoder.onnx` by `onnx.compose`, taking
`input_ids`. Its initializers are the very tensors of the other two graphs, stored once in the shared
`weights.bin`, so it adds only graph structure. `genai_config.json` follows the keys onnxruntime-genai's model
builder writes (onnxruntime_genai/models/builders/base.py `make_genai_config`), with
`past_present_share_buffer` on, as the builder sets it for GroupQueryAttention graphs (genai allocates one
whole-context cache per layer and the op writes into it); `tokenizer_config.json` lets
genai's tokenizer read our `tokenizer.json`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
from onnx import compose

from edgevlm.io import write_json

TEXT_GRAPH, CONFIG, TOKENIZER_CONFIG = "text_decoder.onnx", "genai_config.json", "tokenizer_config.json"


def text_graph(embedding: onnx.ModelProto, decoder: onnx.ModelProto) -> onnx.ModelProto:
    """input_ids → embedding → decoder: the decoder's signature with `input_ids` in place of `inputs_embeds`.

    Composed by hand rather than by `onnx.compose.merge_models`, whose in-memory check cannot follow the
    external data the initializers already point to.
    """
    emb = compose.add_prefix(embedding, "embedding/")  # no name shared with the decoder's
    outer = {"embedding/input_ids": "input_ids", "embedding/inputs_embeds": "inputs_embeds"}
    for node in emb.graph.node:
        node.input[:] = [outer.get(x, x) for x in node.input]
        node.output[:] = [outer.get(x, x) for x in node.output]
    text = copy.deepcopy(decoder)
    nodes = [*emb.graph.node, *text.graph.node]
    del text.graph.node[:]
    text.graph.node.extend(nodes)
    text.graph.initializer.extend(emb.graph.initializer)
    ids = next(v for v in emb.graph.input if v.name == "embedding/input_ids")
    ids.name = "input_ids"
    rest = [v for v in text.graph.input if v.name != "inputs_embeds"]
    del text.graph.input[:]
    text.graph.input.extend([ids, *rest])
    domains = {o.domain for o in text.opset_import}
    text.opset_import.extend(o for o in emb.opset_import if o.domain not in domains)
    text.graph.doc_string = "edgevlm text decoder for onnxruntime-genai: embedding.onnx then decoder.onnx"
    return text


def write_config(model, out_dir: Path, head_dim: int) -> dict:
    """Write genai_config.json and tokenizer_config.json; return the manifest's note about them."""
    c, tok = model.llm.config, model.tokenizer
    context = model.cfg.llm.max_position_embeddings
    decoder = {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
        "filename": TEXT_GRAPH,
        "head_size": head_dim,
        "hidden_size": c.hidden_size,
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                   "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
        "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"},
    }
    write_json(out_dir / CONFIG, {
        "model": {"type": model.cfg.llm.arch, "vocab_size": c.vocab_size, "context_length": context,
                  "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
                  "decoder": decoder},
        "search": {"do_sample": False, "num_beams": 1, "max_length": context, "min_length": 0,
                   "past_present_share_buffer": True, "temperature": 1.0, "top_k": 1, "top_p": 1.0,
                   "repetition_penalty": 1.0, "early_stopping": True},
    })
    write_json(out_dir / TOKENIZER_CONFIG, {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tok.tok.id_to_token(tok.bos_id),
        "eos_token": tok.tok.id_to_token(tok.eos_id), "pad_token": tok.tok.id_to_token(tok.pad_id),
        "add_bos_token": tok.add_bos,  # read by genai's tokenizer and by edgevlm's (TextTokenizer.load)
    })
    return {"config": CONFIG, "decoder": TEXT_GRAPH, "tokenizer_config": TOKENIZER_CONFIG,
            "scope": "text only: input_ids in, no image"}
