"""The bundle contract, with no torch in it: what every runtime and client reads (docs/bundle-spec.md).

A bundle dir is one format's files at one quantization, `tokenizer.json` and `manifest.json`. This package
reads and checks manifests (`manifest`), preprocesses images in numpy + PIL (`image`), renders prompts
(`template`) and tokenizes them with the image's place marked (`tokenizer`). Exporters, runtimes and the bench
import it; it imports nothing from them, nor torch, so `pip install edgevlm[onnx-runtime]` can run a bundle.
"""
