"""Median and spread over repeated runs: what every benchmark number is reported as."""

from __future__ import annotations

import statistics


def summarize(values: list[float]) -> dict:
    """{"median", "min", "max", "runs"}: the median is the number; min and max are its spread."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def fmt(s: dict | None, digits: int = 1) -> str:
    """`median ±half-range` for Markdown tables (a summary over runs or over rounds); '–' when not measured."""
    if not s:
        return "–"
    return f"{s['median']:.{digits}f} ±{(s['max'] - s['min']) / 2:.{digits}f}"
