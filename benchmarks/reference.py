"""The reference GGUF: our model's LLM converted by llama.cpp's own tools, in a bundle beside ours.

    reference.py --model MODEL_DIR --ours BUNDLE --quant q4_k --work DIR --out BUNDLE

1. The LLM is saved as a transformers Llama dir (config.json + safetensors), with a SentencePiece
   `tokenizer.model` trained here on the `shapes` corpus: llama.cpp's Llama converter reads SentencePiece first
   and pads the vocabulary with `[PAD{i}]` up to config.json's vocab_size, as for MobileLLaMA's own tokenizer.
2. llama.cpp's `convert_hf_to_gguf.py` (the one vendored with llama-cpp-python, .venv/src/llama.cpp) writes an
   F32 GGUF; llama.cpp's quantizer (`llama_model_quantize`, as `llama-quantize` runs it) makes Q4_K_M / Q8_0.
3. The bundle is ours (`--ours`: same mmproj, tokenizer.json, manifest) with the text model replaced, so the
   same runtime code, prompt ids and image embeddings run on llama.cpp's file. Only speed is compared: the
   weights are the same, the token list differs (theirs is SentencePiece's), which no measurement reads.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA_CPP = ROOT / ".venv" / "src" / "llama.cpp"
FTYPES = {"q4_k": "MOSTLY_Q4_K_M", "q8_0": "MOSTLY_Q8_0"}


def save_hf_llama(model_dir: Path, hf: Path) -> None:
    """The LLM of `model_dir` as a transformers Llama dir llama.cpp's converter accepts."""
    import sentencepiece as spm

    from edgevlm.data.tokenizer import shapes_corpus
    from edgevlm.models.vlm import EdgeVLM

    model = EdgeVLM.from_pretrained(model_dir)
    tmp = hf.with_name(hf.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.llm.save_pretrained(tmp)
    del model
    spm.SentencePieceTrainer.train(sentence_iterator=iter(shapes_corpus()), model_prefix=str(tmp / "tokenizer"),
                                   vocab_size=300, model_type="bpe", hard_vocab_limit=False, byte_fallback=False,
                                   minloglevel=2)
    (tmp / "tokenizer.vocab").unlink()
    tmp.rename(hf)


def convert(hf: Path, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    subprocess.run([sys.executable, str(LLAMA_CPP / "convert_hf_to_gguf.py"), str(hf), "--outtype", "f32",
                    "--outfile", str(tmp)], check=True)
    tmp.rename(out)


def assemble(ours: Path, text_model: Path, quant: str, out: Path) -> None:
    """Our bundle with its text model replaced by llama.cpp's; smoke-checked in our llama.cpp runtime."""
    import gguf

    from edgevlm.bundle.manifest import MANIFEST, file_entries, write_manifest
    from edgevlm.export.gguf import FT, file_tensor_types, quantize_text_model
    from edgevlm.io import atomic_dir, read_json
    from edgevlm.runtimes import load_runtime

    manifest = read_json(ours / MANIFEST)
    name = manifest["runtime"]["text_model"]
    with atomic_dir(out, "bundle") as tmp:
        for f in manifest["files"]:
            if f != name:
                shutil.copy2(ours / f, tmp / f)
        fallbacks = quantize_text_model(text_model, tmp / name, FT[FTYPES[quant]])
        manifest["runtime"]["tensor_types"][name] = file_tensor_types(tmp / name)
        manifest["runtime"]["fallbacks"] = fallbacks
        # the manifest schema has no field for this (runtime keys are closed): a note file, hashed like the rest
        (tmp / "CONVERTED_BY.txt").write_text(
            "llama.cpp convert_hf_to_gguf.py --outtype f32 + llama_model_quantize "
            f"({FTYPES[quant]}; gguf-py {getattr(gguf, '__version__', 'vendored')})\n")
        manifest["files"] = file_entries(tmp)
        manifest.pop("verification", None)
        write_manifest(tmp, manifest)
        runtime = load_runtime(tmp)
        from edgevlm.data.shapes import write_shapes
        from edgevlm.bundle.image import load_image

        images = write_shapes(tmp.parent / f".{out.name}-img", 1, seed=0, split="eval") / "images"
        ids = runtime.generate_many(load_image(next(images.iterdir())), ["What is in the top left?"], 4)[0]
        shutil.rmtree(images.parent)
        del runtime
        manifest["verification"] = {"mode": "smoke", "generated_ids": ids}
        write_manifest(tmp, manifest)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--ours", type=Path, required=True)
    p.add_argument("--quant", choices=sorted(FTYPES), required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    hf, f32 = a.work / "hf", a.work / "model-f32.gguf"
    if not f32.is_file():
        if not (hf / "config.json").is_file():
            print("saving the LLM as a transformers Llama dir", flush=True)
            save_hf_llama(a.model, hf)
        print("converting with convert_hf_to_gguf.py", flush=True)
        convert(hf, f32)
    print(f"quantizing to {FTYPES[a.quant]} and assembling {a.out}", flush=True)
    assemble(a.ours, f32, a.quant, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
