"""Data: the `shapes` generator, LLaVA-format reading, prompt templates, tokenizer and image preprocessing."""
