"""Benchmarks: time to first token split into image encode and prefill, decode speed against the memory
roofline, peak memory, size and accuracy, for any set of bundles (docs/architecture.md, Benchmarks)."""
