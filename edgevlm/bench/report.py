"""Benchmark reports: a Markdown table, and PNG plots for comparisons (TTFT split, decode vs roofline,
accuracy vs size)."""

from __future__ import annotations

from pathlib import Path

from edgevlm.bench.stats import fmt
from edgevlm.errors import EdgeVLMError
from edgevlm.io import atomic_file


def markdown(report: dict) -> str:
    m, cfg = report["machine"], report["config"]
    bw = report.get("bandwidth")
    bandwidth = (f"{bw['median'] / 1e9:.1f} GB/s ({bw['min'] / 1e9:.1f}–{bw['max'] / 1e9:.1f}, one reading beside "
                 "each measurement)" if bw else "–")
    head = (f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads; copy bandwidth {bandwidth}; commit "
            f"{report['git_commit']}; {cfg['new_tokens']} new tokens, {cfg['runs']} runs × {cfg['rounds']} "
            "interleaved rounds (median over rounds ±half-range); roofline = bandwidth ÷ (weight + KV bytes per "
            "token); ratios taken within each round, vs the first bundle (decode, TTFT) and the round's best (TTFT)")
    rows = [
        "| bundle | runtime | scheme | MB | image ms | prefill tok/s | TTFT ms | decode tok/s | roofline tok/s "
        "| % roofline | decode ÷ first | TTFT ÷ first | TTFT ÷ best | peak RSS MB | accuracy |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        acc = f"{r['accuracy']:.3f}" if "accuracy" in r else "–"
        ratios = [fmt(r["ratios"][k], 2) for k in ("decode_vs_first", "ttft_vs_first", "ttft_vs_best")]
        rows.append(
            f"| {Path(r['bundle']).name} | {r['runtime']} {r['runtime_version']} | {r['scheme']} "
            f"| {r['bytes_on_disk'] / 1e6:.2f} | {fmt(r['image_ms'])} | {fmt(r['prefill_tok_s'], 0)} "
            f"| {fmt(r['ttft_ms'])} | {fmt(r['decode_tok_s'])} | {fmt(r['roofline']['tok_s'], 0)} "
            f"| {fmt(r['roofline']['pct'], 0)} | {' | '.join(ratios)} | {r['peak_rss_bytes'] / 1e6:.0f} | {acc} |"
        )
    if m.get("emulated"):
        head += "\n\nEmulated target: correctness only (generated ids); its timings are not speed and are left out."
    return "\n".join([head, "", *rows])


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["image_ms"]]  # emulated runs carry no timings
    if not rows:
        raise EdgeVLMError("no timings to plot: an emulated device (qemu) reports correctness only")
    names = [Path(r["bundle"]).name for r in rows]
    scored = [r for r in rows if "accuracy" in r]
    fig, axes = plt.subplots(1, 3 if scored else 2, figsize=(16 if scored else 11, 4.8))
    ttft, dec = axes[:2]
    img = [r["image_ms"]["median"] for r in rows]
    pre = [r["prefill_ms"]["median"] for r in rows]
    ttft.barh(names, img, label="image encode")
    ttft.barh(names, pre, left=img, label="prefill")
    ttft.set(xlabel="time to first token (ms)", title="TTFT split")
    ttft.legend()
    dec.barh(names, [r["decode_tok_s"]["median"] for r in rows], label="measured")
    dec.scatter([r["roofline_tok_s"] or 0 for r in rows], names, color="k", marker="|", s=300, label="roofline")
    dec.set(xlabel="decode tokens/s", title="decode vs memory roofline")
    dec.legend()
    if scored:
        _accuracy_panel(axes[2], scored)
    fig.tight_layout()
    with atomic_file(out, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def _accuracy_panel(acc, scored: list[dict]) -> None:
    acc.scatter([r["bytes_on_disk"] / 1e6 for r in scored], [r["accuracy"] for r in scored])
    for r in scored:
        acc.annotate(Path(r["bundle"]).name, (r["bytes_on_disk"] / 1e6, r["accuracy"]), fontsize=7)
    acc.set(xlabel="MB on disk", ylabel="accuracy", title="accuracy vs size")


def plot_sweep(report: dict, out: Path) -> None:
    """Time to first token (image encode + prefill, stacked) against the number of image tokens: a projector
    sweep, one bundle per token count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report["results"], key=lambda r: r["image_tokens"])
    x = [r["image_tokens"] for r in rows]
    img = [r["image_ms"]["median"] / 1e3 for r in rows]
    pre = [r["prefill_ms"]["median"] / 1e3 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = [max(x) / 14] * len(x)
    ax.bar(x, img, width=width, label="image encode")
    ax.bar(x, pre, width=width, bottom=img, label="prefill")
    for xi, a, b, r in zip(x, img, pre, rows):
        ax.annotate(f"{r.get('projector') or Path(r['bundle']).name}\n{a + b:.1f} s", (xi, a + b), ha="center",
                    va="bottom", fontsize=8)
    ax.set(xlabel="image tokens", ylabel="time to first token (s)", title="TTFT vs image tokens (projector sweep)",
           ylim=(0, max(a + b for a, b in zip(img, pre)) * 1.25))
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_file(out, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
