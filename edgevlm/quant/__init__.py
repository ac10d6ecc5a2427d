"""Named quantization schemes and what each export format does for them."""
