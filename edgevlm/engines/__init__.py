"""Glue for an engine's library that both its exporter and its runtime need (the lowest layer beside bundle/)."""
