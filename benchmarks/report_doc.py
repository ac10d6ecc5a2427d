"""docs/benchmarks.md from a benchmarks/run.py work dir: the tables, the plots, the machine and the commands.

The numbers all come from the JSON files `edgevlm bench` and the steps wrote; the prose between them is
benchmarks/notes.md (what the numbers mean, where each runtime's time goes), included as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgevlm.bench.report import plot, plot_sweep
from edgevlm.io import atomic_file

HERE = Path(__file__).resolve().parent


def write_doc(w, a, docs: Path) -> Path:
    main = json.loads((w.results / "main.json").read_text())
    sweep = json.loads((w.results / "sweep.json").read_text()) if (w.results / "sweep.json").exists() else None
    split = w.results / "vision_split.json"
    vision = json.loads(split.read_text()) if split.exists() else None
    steps = json.loads(w.steps_file.read_text()) if w.steps_file.exists() else {}
    plot(main, docs / "benchmarks-main.png")
    parts = [HEADER, machine_section(main, w), commands_section(a), results_section(main, missing(main))]
    if sweep:
        plot_sweep(sweep, docs / "benchmarks-sweep.png")
        parts.append(sweep_section(sweep))
    parts.append(split_section(main, vision))
    onnx_split = w.results / "onnx_vision_split.json"
    if onnx_split.exists():
        parts.append(onnx_split_section(json.loads(onnx_split.read_text())))
    et_split = w.results / "et_vision_split.json"
    if et_split.exists():
        parts.append(et_split_section(json.loads(et_split.read_text())))
    notes = HERE / "notes.md"
    if notes.exists():
        parts.append(notes.read_text().strip())
    ops = w.results / "et_decoder_ops.json"
    if ops.exists():
        parts.append(et_ops_section(json.loads(ops.read_text())))
    parts.append(steps_section(steps))
    out = docs / "benchmarks.md"
    old = out.read_text() if out.exists() else ""
    if KEEP in old:  # sections other scripts measured (web, native, workers): not this run's to rewrite
        parts.append(old[old.index(KEEP):].strip())
    with atomic_file(out) as f:
        f.write("\n\n".join(parts) + "\n")
    return out


HEADER = """# Benchmarks: MobileVLM V2 1.7B on a CPU, in every runtime

The `mobilevlm-v2-1.7b` architecture (CLIP ViT-L/14-336 tower, LDPv2 projector: 576 patches → 144 image
tokens, MobileLLaMA-1.4B: 24 layers, width 2048, FFN 5632, 32000-token vocabulary) with **random weights**:
speed does not depend on the values, so these are the real model's costs, but its answers mean nothing and
no accuracy is reported. Every bundle was exported by `edgevlm export --verify smoke` (loaded in its runtime
and made to generate; no comparison with PyTorch at this size). `llamacpp-ref-*` is the same LLM converted by
llama.cpp's own `convert_hf_to_gguf.py` and quantized by llama.cpp's quantizer, run with our mmproj in the same
runtime code: the speed our GGUF export must match.

Each number is the median over the runs after one warm-up run (± half the range); with `--rounds`, the median
over interleaved rounds of each round's median. Decode is measured separately from prefill; TTFT is image
encode plus prefill. The roofline is the decode bound from memory bandwidth: the machine's copy bandwidth (read
beside each measurement) ÷ the bytes one decoded token reads: the LLM's weights (from the GGUF / ONNX file and
the ExecuTorch program) plus the KV cache at the decoded tokens' mean position (every layer's keys and values)."""


# what follows this line in docs/benchmarks.md was written by other scripts or by hand, and is kept as it is
KEEP = "<!-- kept by report_doc.py: the sections below come from other benchmark scripts -->"

# why a bundle is missing from the table (the bench step measures every bundle under bundles/)
NOT_MEASURED = ("The bench step measures every bundle under `bundles/`: a bundle missing here was not exported "
                "or its bench failed (`run.log` under the work dir says which).")


def machine_section(main: dict, w) -> str:
    m = main["machine"]
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    before = _read(w.results / "uptime-before.txt")
    after = _read(w.results / "uptime-after.txt")
    return f"""## Machine

- CPU: {m['cpu']}, {m['cores']} cores, {int(mem) / 2**20:.0f} GiB RAM; {m['system']}; Python {m['python']}
- threads: {m['threads']}; measured copy bandwidth {main['bandwidth_bytes_s'] / 1e9:.1f} GB/s
- date: {main['date']}; edgevlm {main['edgevlm_version']}, commit {main['git_commit']} (plus the working tree)
- load (`uptime`) before the bench: `{before}`; after: `{after}`

No other job ran during the bench: the load average counts the bench's own threads. Numbers move by a few
percent between runs; the ratios between bundles measured in the same run are the more reliable part."""


def commands_section(a) -> str:
    return f"""## Commands

```
.venv/bin/python benchmarks/run.py                        # create, export, reference, sweep, bench, report
.venv/bin/python benchmarks/run.py --steps bench,report   # re-measure the exported bundles, rewrite this page
```
This page: `--threads {a.threads} --runs {a.runs} --new-tokens {a.new_tokens}`, work dir `{a.work}`
(bundles under `bundles/`, raw JSON under `results/`, the log in `run.log`). The bench step runs
`edgevlm bench BUNDLE... --runs {a.runs} --new-tokens {a.new_tokens} --threads {a.threads} --json ... --md ...`."""


def _ref_for(row: dict, rows: list[dict]) -> dict | None:
    """llama.cpp's conversion at the same bit width: q8_0 for 8-bit, q4_k for every 4-bit scheme."""
    want = "llamacpp-ref-q8_0" if row["scheme"] in ("q8_0", "int8") else "llamacpp-ref-q4_k"
    return next((r for r in rows if Path(r["bundle"]).name == want), None)


def missing(main: dict) -> list[str]:
    """The bundles run.py makes that this report has no row for (not exported, or failed)."""
    from run import EXPORTS, REFERENCE

    have = {Path(r["bundle"]).name for r in main["results"]}
    return [n for n in [f"{f}-{q}" for f, q in EXPORTS] + [f"llamacpp-ref-{q}" for q in REFERENCE] if n not in have]


def results_section(main: dict, absent: list[str]) -> str:
    rows = main["results"]
    lines = ["## Results", "",
             "| bundle | runtime | scheme | GB on disk | image s | prefill tok/s | TTFT s | decode tok/s "
             "| roofline tok/s | % of roofline | decode vs llama.cpp's conversion | peak RSS GB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = _ref_for(r, rows)
        ratio = (f"{r['decode_tok_s']['median'] / ref['decode_tok_s']['median']:.2f}× "
                 f"({Path(ref['bundle']).name.removeprefix('llamacpp-ref-')})" if ref else "–")
        bound = f"{r['roofline_tok_s']:.1f}" if r["roofline_tok_s"] else "–"
        per_token = r["decode_weight_bytes"] + (r.get("decode_kv_bytes") or 0)  # weights + KV cache
        pct = (f"{r['roofline_pct']:.0f}% ({per_token / 1e9:.2f} GB/token, "
               f"{r['decode_weight_bytes_from']})") if r["roofline_pct"] is not None else "–"
        lines.append(
            f"| {Path(r['bundle']).name} | {r['runtime']} {r['runtime_version']} | {r['scheme']} "
            f"| {r['bytes_on_disk'] / 1e9:.2f} | {_s(r['image_ms'])} | {_pm(r['prefill_tok_s'], 0)} "
            f"| {_s(r['ttft_ms'])} | {_pm(r['decode_tok_s'], 2)} | {bound} | {pct} | {ratio} "
            f"| {r['peak_rss_bytes'] / 1e9:.1f} |")
    r0 = rows[0]
    lines += ["", f"Prompt: {r0['prefill_tokens']} positions (image tokens included); {r0['decode_tokens'] + 1} "
              "tokens generated per run."]
    if all(r.get("ratios") for r in rows):  # `edgevlm bench --rounds`: ratios within each round survive noise
        first = Path(r0["bundle"]).name
        lines += ["", f"Within-round ratios (each round measures every bundle once; median [min–max] over the "
                  f"{r0['ratios']['decode_vs_first']['rounds']} rounds), the goals' measure:", "",
                  f"| bundle | decode ÷ {first} | TTFT ÷ {first} | TTFT ÷ the round's best |", "|---|---:|---:|---:|"]
        for r in rows:
            cells = [_range(r["ratios"][k]) for k in ("decode_vs_first", "ttft_vs_first", "ttft_vs_best")]
            lines.append(f"| {Path(r['bundle']).name} | {' | '.join(cells)} |")
    if absent:
        lines += ["", f"**Not measured in this run**: {', '.join(absent)}. " + NOT_MEASURED]
    lines += ["", "![TTFT split and decode vs roofline](benchmarks-main.png)"]
    return "\n".join(lines)


def sweep_section(sweep: dict) -> str:
    rows = sorted(sweep["results"], key=lambda r: r["image_tokens"])
    lines = ["## Projector sweep: TTFT against image tokens (GGUF q4_k, llama.cpp)", "",
             "The same LLM behind three projectors. `pixel_shuffle` (r = 3, SmolVLM / Idefics3) runs in llama.cpp "
             "as its `idefics3` projector type, which follows a SigLIP tower: that bundle's tower is a SigLIP of "
             "CLIP ViT-L's size (24 layers, width 1024, 576 patches, no class token), so its image time is "
             f"comparable. Measured {sweep['date']} (copy bandwidth then {sweep['bandwidth_bytes_s'] / 1e9:.1f} GB/s).",
             "",
             "| projector | image tokens | prompt positions | image s | prefill s | TTFT s | prefill tok/s "
             "| decode tok/s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.get('projector')} | {r['image_tokens']} | {r['prefill_tokens']} | {_s(r['image_ms'])} "
                     f"| {_s(r['prefill_ms'])} | {_s(r['ttft_ms'])} | {_pm(r['prefill_tok_s'], 0)} "
                     f"| {_pm(r['decode_tok_s'], 2)} |")
    noisy = [r.get("projector") for r in rows if _spread(r["ttft_ms"]) > 0.2]
    if noisy:
        lines += ["", f"TTFT of {', '.join(noisy)} varied by more than ±20% between runs: other jobs took the "
                  "cores during it, so read that point with its spread."]
    lines += ["", "![TTFT vs image tokens](benchmarks-sweep.png)"]
    return "\n".join(lines)


def split_section(main: dict, vision: dict | None) -> str:
    lines = ["## Where the time goes", "",
             "Per phase, the time inside the engine's own calls (ONNX Runtime session runs, ExecuTorch method "
             "executions, llama.cpp's `llama_decode` / `mtmd_*` calls) and the rest of the phase around them "
             "(preprocessing, building inputs, copying outputs, the Python loop, argmax over the logits). "
             "Medians, milliseconds.", "",
             "| bundle | image: engine | image: outside | prefill: engine | prefill: outside "
             "| per token: engine | per token: outside (Python) | outside share of decode |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in main["results"]:
        s = r.get("split") or {}
        if "token_engine_ms" not in s:
            continue
        per = s["token_engine_ms"] + s["token_outside_ms"]
        lines.append(f"| {Path(r['bundle']).name} | {s['image_engine_ms']:.0f} | {s['image_outside_ms']:.1f} "
                     f"| {s['prefill_engine_ms']:.0f} | {s['prefill_outside_ms']:.1f} | {s['token_engine_ms']:.1f} "
                     f"| {s['token_outside_ms']:.2f} | {100 * s['token_outside_ms'] / per:.1f}% |")
    if vision:
        lines += ["", f"Image encode, tower vs projector (PyTorch eager fp32, {vision['threads']} threads: no "
                  "runtime runs them separately, so this gives the proportion, benchmarks/vision_split.py):", "",
                  "| projector | tower | image tokens | tower ms | projector ms | projector share |",
                  "|---|---|---:|---:|---:|---:|"]
        for name, v in vision["projectors"].items():
            share = 100 * v["projector_ms"] / (v["tower_ms"] + v["projector_ms"])
            lines.append(f"| {name} | {v['tower']} | {v['image_tokens']} | {v['tower_ms']:.0f} "
                         f"| {v['projector_ms']:.1f} | {share:.1f}% |")
    return "\n".join(lines)


def onnx_split_section(r: dict) -> str:
    """benchmarks/onnx_vision_split.py's JSON: the tower / projector split in onnxruntime's own kernel times."""
    total = sum(sum(p["ms_per_image"].values()) for p in r["parts"].values())
    lines = [f"The same split in onnxruntime, on the {Path(r['bundle']).name} bundle (`onnx_vision_split.py`: "
             f"onnxruntime's own kernel times over {r['runs']} image encodes after one warm-up, {r['threads']} "
             "threads, the graph it optimized cut at the tower's named weights; the profiler adds its per-kernel "
             "overhead, so the proportion is the point, not the total):", "",
             "| part | nodes | ms per image | share | top operators (ms) |", "|---|---:|---:|---:|---|"]
    for name, part in r["parts"].items():
        ops, ms = part["ms_per_image"], sum(part["ms_per_image"].values())
        top = ", ".join(f"{op} {t:.0f}" for op, t in sorted(ops.items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"| {name} | {part['nodes']} | {ms:.1f} | {ms / total:.1%} | {top} |")
    return "\n".join(lines)


def et_split_section(r: dict) -> str:
    """benchmarks/et_vision_split.py's JSON: the encoder and its tower as two methods of one ExecuTorch program."""
    enc, tower = r["median_encoder_ms"], r["median_tower_ms"]
    return "\n".join([
        f"And in ExecuTorch (`et_vision_split.py`: one program holding the bundle's `vision_encoder` and the same "
        f"method without the projector, {r['mechanism']} as the {r['quant']} scheme quantizes the tower, XNNPACK, "
        f"{r['threads']} threads, median of {r['runs']} alternating runs after a warm-up each):", "",
        "| method | ms per image |", "|---|---:|",
        f"| tower (preprocessing included) | {tower:.0f} |",
        f"| vision_encoder (tower + projector) | {enc:.0f} |", "",
        f"Run to run the encoder − tower difference moved between {min(r['paired_diff_ms']):.0f} and "
        f"{max(r['paired_diff_ms']):.0f} ms: the projector's few tens of ms are within that noise; the tower is "
        "the image encode here too."])


def et_ops_section(r: dict) -> str:
    c, (e, o) = r["config"], (r["variants"]["slice_cache"], r["variants"]["custom_ops"])
    return "\n".join([
        f"ExecuTorch text decoder, {c['layers']} real-width MobileLLaMA layers + the 32000-row head, 8da4w, "
        f"context {c['context']}, {c['threads']} threads, a {c['prompt']}-position prompt then {c['steps']} decoded "
        "tokens (`benchmarks/et_decoder_ops.py`, run on the same loaded machine, so absolute times are inflated; "
        "the two rows ran one after the other):", "",
        "| decoder | prefill ms | ms per decoded token | export + lowering s | .pte MB |", "|---|---:|---:|---:|---:|",
        *[f"| {name} | {v['prefill_ms']:.0f} | {v['token_ms']:.1f} | {v['export_s']:.0f} | {v['pte_mb']:.1f} |"
          for name, v in (("slice-assigned static cache, masked attention over the context (before)", e),
                          ("llama::update_cache + llama::custom_sdpa (TextDecoder, now)", o))],
        "", f"Decode {e['token_ms'] / o['token_ms']:.2f}× faster with ExecuTorch's custom ops; prefill "
        f"{e['prefill_ms'] / o['prefill_ms']:.2f}×."])


def steps_section(steps: dict) -> str:
    if not steps:
        return ""
    lines = ["## What each step cost on this machine", "",
             "| step | wall s | peak RSS GB | load before → after |", "|---|---:|---:|---|"]
    for name, s in steps.items():
        lines.append(f"| {name} | {s['seconds']:.0f} | {s['peak_rss_gb']:.1f} | {s['load_before']} → "
                     f"{s['load_after']} |")
    return "\n".join(lines)


def _spread(stat: dict) -> float:
    """Half-range over median."""
    return (stat["max"] - stat["min"]) / 2 / stat["median"]


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else "not recorded"


def _s(stat: dict) -> str:
    return f"{stat['median'] / 1e3:.2f} ±{(stat['max'] - stat['min']) / 2e3:.2f}"


def _range(stat: dict) -> str:
    """`median [min–max]` of a ratio over rounds."""
    return f"{stat['median']:.2f} [{stat['min']:.2f}–{stat['max']:.2f}]"


def _pm(stat: dict, digits: int) -> str:
    return f"{stat['median']:.{digits}f} ±{(stat['max'] - stat['min']) / 2:.{digits}f}"

