"""Rounds: every bundle measured once per round, in an order rotated each round, each beside a bandwidth reading
of its own minute; every figure is the median over rounds of the rounds' own values, with its spread.

A busy machine moves the absolute figures by tens of percent between minutes (docs/benchmarks.md); a ratio
taken within one round (decode ÷ the first bundle's, TTFT ÷ the round's best, decode ÷ the roofline of the
bandwidth read beside it) moves far less, so the goals are stated as those ratios.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from edgevlm.bench.roofline import decode_bound

# the per-run summaries a round's worker returns; a round's value is their median
TIMED = ("image_ms", "prefill_ms", "ttft_ms", "decode_ms", "prefill_tok_s", "decode_tok_s")
# within-round ratios: (key, figure, against): against "first" = the first bundle's, "best" = the round's best
RATIOS = {"decode_vs_first": ("decode_tok_s", "first"), "ttft_vs_first": ("ttft_ms", "first"),
          "ttft_vs_best": ("ttft_ms", "best")}
BEST = {"ttft_ms": min, "decode_tok_s": max}


def schedule(n: int, rounds: int) -> list[list[int]]:
    """Bundle indices per round, rotated so that no bundle always goes first (or always follows the same one)."""
    return [[(r + i) % n for i in range(n)] for r in range(rounds)]


def spread(values: list[float | None]) -> dict | None:
    """{"median", "min", "max", "rounds"} over the rounds' values; None when any round has none (emulated)."""
    if not values or any(v is None for v in values):
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def with_roofline(row: dict, bandwidth: float | None) -> dict:
    """One round's result with the roofline of the bandwidth read beside it: weights + KV bytes per token."""
    per_token = row["decode_weight_bytes"] + (row.get("decode_kv_bytes") or 0)
    bound = decode_bound(bandwidth, per_token) if bandwidth else None
    decode = row["decode_tok_s"]["median"] if row["decode_tok_s"] else None
    return {**row, "bandwidth_bytes_s": bandwidth, "roofline_tok_s": bound,
            "roofline_pct": 100 * decode / bound if bound and decode else None}


def combine(bundles: list[Path], per_round: list[list[dict]]) -> list[dict]:
    """per_round[r][b]: bundle b's result in round r (with_roofline's). One row per bundle, figures over rounds."""
    rows = []
    for b in range(len(bundles)):
        mine = [rnd[b] for rnd in per_round]
        first = mine[0]
        row = {k: v for k, v in first.items() if k not in ("split", "position")}
        for key in TIMED:
            row[key] = spread([_median(m[key]) for m in mine])
        row["load_ms"] = spread([m["load_ms"] for m in mine])
        row["bandwidth_bytes_s"] = spread([m["bandwidth_bytes_s"] for m in mine])
        row["roofline"] = {"tok_s": spread([m["roofline_tok_s"] for m in mine]),
                           "pct": spread([m["roofline_pct"] for m in mine])}
        row["roofline_tok_s"] = _median(row["roofline"]["tok_s"])  # the single figures report_doc.py reads
        row["roofline_pct"] = _median(row["roofline"]["pct"])
        row["peak_rss_bytes"] = max(m["peak_rss_bytes"] for m in mine)
        row["split"] = _split(mine)
        row["ratios"] = {name: spread([_ratio(rnd, b, fig, against) for rnd in per_round])
                         for name, (fig, against) in RATIOS.items()}
        row["rounds"] = [{"round": r, "position": m["position"], "bandwidth_bytes_s": m["bandwidth_bytes_s"],
                          "roofline_tok_s": m["roofline_tok_s"], "roofline_pct": m["roofline_pct"],
                          "peak_rss_bytes": m["peak_rss_bytes"], **{k: _median(m[k]) for k in TIMED}}
                         for r, m in enumerate(mine)]
        rows.append(row)
    return rows


def _median(s: dict | None) -> float | None:
    return s["median"] if s else None


def _ratio(rnd: list[dict], b: int, fig: str, against: str) -> float | None:
    values = [_median(r[fig]) for r in rnd]
    if any(v is None for v in values):
        return None
    ref = values[0] if against == "first" else BEST[fig](values)
    return values[b] / ref


def _split(mine: list[dict]) -> dict:
    """Each split figure's median over rounds; call counts are the same every round."""
    keys = [k for k in mine[0]["split"] if all(k in m["split"] for m in mine)]
    return {k: mine[0]["split"][k] if k.endswith("_calls") else statistics.median(m["split"][k] for m in mine)
            for k in keys}
