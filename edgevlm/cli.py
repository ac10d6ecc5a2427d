"""The `edgevlm` command: one sub-command per step from data to a benchmarked bundle.

Every error caused by input is an `EdgeVLMError` and prints as one line naming the file and the problem, with
a non-zero exit status and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from edgevlm.errors import EdgeVLMError
from edgevlm.log import configure

TRAIN_STACK = {"torch", "transformers", "peft", "safetensors", "sklearn"}  # the `train` extra's imports

COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}  # name: (help, add_arguments, run)


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register `run(args)` as the sub-command `name`, its flags added by `add_arguments`."""

    def register(run):
        if name in COMMANDS:
            raise ValueError(f"command {name!r} is already registered")
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return register


def _add_out(p, help: str) -> None:
    """--out DIR and its --force: an existing --out is replaced only when it is an edgevlm output of the
    command's kind (edgevlm.io.check_out), so a mistyped path never wipes a user's directory."""
    p.add_argument("--out", required=True, type=Path, help=help)
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is not an edgevlm output of this kind (it is deleted)")


def _check_out(a, kind: str) -> None:
    from edgevlm.io import check_out

    check_out(a.out, kind, a.force)


def _add_create(p):
    p.add_argument("--preset", required=True, help="preset name (see `edgevlm info`)")
    _add_out(p, "model dir to write")
    p.add_argument("--seed", type=int, default=0)


@command("create", "create a model dir from a preset, with random weights", _add_create)
def _run_create(a):
    from edgevlm.models.factory import create

    _check_out(a, "model")
    model = create(a.preset, seed=a.seed)
    model.save_pretrained(a.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"created {a.preset} ({n / 1e6:.2f} M parameters, {model.num_image_tokens} image tokens) at {a.out}")



def _add_convert(p):
    p.add_argument("src", type=Path, help="the upstream checkpoint dir (config.json, weights, tokenizer files)")
    p.add_argument("--from", dest="family", required=True,
                   help="the checkpoint's family: mobilevlm, tinyllava, bunny or moe-llava")
    _add_out(p, "model dir to write")
    p.add_argument("--vision-tower", type=Path, default=None,
                   help="local dir of the vision tower, when the checkpoint names it by hub id and lacks its weights")


@command("convert", "convert an upstream checkpoint (MobileVLM, TinyLLaVA, Bunny, MoE-LLaVA) to a model dir",
         _add_convert)
def _run_convert(a):
    from edgevlm.convert import convert

    _check_out(a, "model")
    model = convert(a.src, a.out, a.family, a.vision_tower)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {a.family} checkpoint {a.src} ({n / 1e6:.2f} M parameters, {model.num_image_tokens} image "
          f"tokens) to {a.out}")



def _add_data(p):
    sub = p.add_subparsers(dest="dataset", required=True)
    s = sub.add_parser("shapes", help="generate the embedded `shapes` VQA data set (docs/data-spec.md)")
    _add_out(s, "data dir to write")
    s.add_argument("--images", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=["train", "eval"], default="train")
    s.add_argument("--dense", action="store_true",
                   help="training data: add every count and a yes + near-miss no exists question per image "
                        "(docs/data-spec.md)")


@command("data", "generate data sets", _add_data)
def _run_data(a):
    from edgevlm.data.llava import read_llava
    from edgevlm.data.shapes import write_shapes

    if a.dense and a.split != "train":
        raise EdgeVLMError("--dense adds training questions; evaluation data keeps the spec's proportions", a.out)
    _check_out(a, "data")
    write_shapes(a.out, a.images, a.seed, a.split, progress=True, dense=a.dense)
    print(f"wrote {a.images} images, {len(read_llava(a.out))} questions ({a.split}) to {a.out}")



def _add_train(p):
    import dataclasses
    import typing

    from edgevlm.train.config import TrainConfig

    p.add_argument("--model", required=True, type=Path, help="model dir to start from")
    p.add_argument("--data", required=True, type=Path, help="LLaVA-format data dir (data.json + images)")
    _add_out(p, "model dir to write")
    types = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        _add_config_flag(p, f, types[f.name])
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this --out")


def _add_config_flag(p, f, kind) -> None:
    """The flag of one TrainConfig field: named after it (or `metadata["name"]`), its type, default and help
    from the dataclass; an enum gives the choices, a bool a switch that turns it on."""
    import enum

    from edgevlm.train.config import flag as config_flag

    flag = config_flag(f)
    kw = {"dest": f.name, "help": f.metadata.get("help") or None}
    if kind is bool:
        if f.default:
            raise TypeError(f"TrainConfig.{f.name} defaults to True: a store_true flag could not turn it off")
        kw["action"] = "store_true"
    elif issubclass(kind, enum.Enum):
        kw.update(choices=[m.value for m in kind], default=f.default.value)
    else:
        kw.update(type=kind, default=f.default, choices=f.metadata.get("choices"),
                  metavar=None if "choices" in f.metadata else flag[2:].replace("-", "_").upper())
    p.add_argument(flag, **kw)


def _train_config(a):
    import dataclasses

    from edgevlm.train.config import TrainConfig

    return TrainConfig(**{f.name: vars(a)[f.name] for f in dataclasses.fields(TrainConfig)})


@command("train", "train a model dir (one stage)", _add_train)
def _run_train(a):
    from edgevlm.train import distributed
    from edgevlm.train.trainer import train

    _check_out(a, "model")
    cfg = _train_config(a)
    if distributed.under_torchrun():  # one of the processes torchrun started (by --nproc, or by the user)
        r = distributed.train(a.model, a.data, a.out, cfg, resume=a.resume)
        if not distributed.is_main():
            return
    elif cfg.nproc > 1:
        distributed.launch(a.model, a.data, a.out, cfg, resume=a.resume)
        return
    else:
        r = train(a.model, a.data, a.out, cfg, resume=a.resume)
    first, last = r.losses[0], sum(r.losses[-10:]) / len(r.losses[-10:])
    print(f"trained {r.steps} steps in {r.seconds:.1f} s: loss {first:.4f} -> {last:.4f}; model dir {r.out}")



def _add_eval(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="model dir (PyTorch)")
    src.add_argument("--bundle", type=Path, help="exported bundle dir, run in its own runtime")
    p.add_argument("--data", required=True, type=Path, help="LLaVA-format data dir")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N questions")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (bundles)")
    p.add_argument("--json", type=Path, default=None, help="write the full result (with predictions) here")


@command("eval", "exact-match accuracy, overall and per question kind", _add_eval)
def _run_eval(a):
    from edgevlm.evaluation import evaluate
    from edgevlm.io import check_file_out, write_json

    check_file_out(a.json)
    result = evaluate(_answerer(a), a.data, limit=a.limit)
    print(result.table())
    if a.json:
        write_json(a.json, result.to_dict())


def _answerer(a):
    """The PyTorch model for `--model`, or the bundle's runtime for `--bundle`."""
    if a.bundle is not None:
        from edgevlm.runtimes import load_runtime

        return load_runtime(a.bundle, threads=a.threads)
    from edgevlm.load import load_model

    return load_model(a.model)



def _add_generate(p):
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


@command("generate", "answer a prompt about an image with a model dir", _add_generate)
def _run_generate(a):
    import torch

    from edgevlm.bundle.image import load_image
    from edgevlm.load import load_model

    image = load_image(a.image)
    model = load_model(a.model)
    print(model.answer(image, a.prompt, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                       top_p=a.top_p, generator=torch.Generator().manual_seed(a.seed)))



def _add_export(p):
    from edgevlm.quant.schemes import FORMATS

    p.add_argument("--model", required=True, type=Path, help="model dir to export")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--quant", required=True, help="quantization scheme of the format (see `edgevlm info`)")
    _add_out(p, "bundle dir to write")
    p.add_argument("--verify-data", type=Path, default=None,
                   help="LLaVA-format data to verify the bundle on (default: a generated `shapes` eval slice)")
    p.add_argument("--verify-limit", type=int, default=100, help="questions to verify on (0: skip)")
    p.add_argument("--verify", choices=["accuracy", "smoke"], default="accuracy",
                   help="accuracy: answers compared with PyTorch; smoke: only load the bundle and generate a few "
                        "tokens (random-weight real-size models, benchmarks)")
    p.add_argument("--threads", type=int, default=None, help="runtime threads during verification")
    p.add_argument("--max-drop", nargs="?", const="default", default=None, metavar="D",
                   help="accuracy guard: most accuracy the bundle may lose against PyTorch in its verification; "
                        "over it, the most sensitive parts are re-exported at a higher precision (no value: 0.01 "
                        "for 8 bits and more, 0.02 below)")
    p.add_argument("--strict", action="store_true", help="with the guard: fail over D instead of re-exporting")


@command("export", "export a model dir to a bundle for one runtime, verified against PyTorch", _add_export)
def _run_export(a):
    from edgevlm.export import ExportConfig, export
    from edgevlm.load import load_model

    _check_out(a, "bundle")
    cfg = ExportConfig(a.format, a.quant, a.verify_data, a.verify_limit, a.threads, a.verify,
                       _max_drop(a.max_drop), a.strict)
    r = export(load_model(a.model), cfg, a.out)
    print(f"wrote {a.format} {a.quant} bundle {r.path} ({r.bytes / 1e6:.2f} MB)")
    for name, f in r.manifest["files"].items():
        print(f"  {name:<28} {f['bytes'] / 1e6:10.2f} MB")
    v = r.manifest.get("verification")
    if v and v.get("mode") == "smoke":
        print(f"smoke check only (no comparison with PyTorch): generated {v.get('generated_ids', v.get('skipped'))}")
        return
    if v and "skipped" in v:
        print(f"not run in its runtime: {v['skipped']}; the converted torch program, checked instead:")
        v = v["torch_program"]
    if v:
        print(f"verified on {v['n']} questions: answers identical to PyTorch {v['answers_identical']:.3f}, "
              f"token agreement {v['token_agreement']:.3f}, accuracy {v['accuracy']:.3f} "
              f"(PyTorch {v['reference_accuracy']:.3f})")
    g = (v or {}).get("guard")
    if g:
        kept = ", ".join(f"{part}: {gets}" for part, gets in g["kept"].items()) or "nothing"
        print(f"accuracy guard (max drop {g['max_drop']}): drop {g['before']['drop']:.3f} -> {g['after']['drop']:.3f}"
              f", kept at higher precision: {kept}")


def _max_drop(value: str | None) -> float | str | None:
    """`--max-drop`'s value: absent, "default" (no value given), or a number."""
    if value in (None, "default"):
        return value
    try:
        return float(value)
    except ValueError:
        raise EdgeVLMError(f"--max-drop takes an accuracy difference such as 0.02, got {value!r}") from None



def _add_run(p):
    p.add_argument("--bundle", required=True, type=Path, help="exported bundle dir")
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    _add_setting(p)


def _add_setting(p):
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", type=_setting,
                   help="an engine knob of the bundle's runtime (repeatable), e.g. load=read for GGUF and "
                        "ExecuTorch, spinning=off for ONNX (docs/benchmarks.md, Runtime settings)")


def _setting(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


@command("run", "answer a prompt about an image with an exported bundle, in its own runtime", _add_run)
def _run_run(a):
    from edgevlm.bundle.image import load_image
    from edgevlm.runtimes import load_runtime

    image = load_image(a.image)
    runtime = load_runtime(a.bundle, threads=a.threads, settings=dict(a.setting))
    print(runtime.answer(image, a.prompt, max_new_tokens=a.max_new_tokens))



def _add_bench(p):
    from edgevlm.bench.runner import DEFAULT_PROMPT

    p.add_argument("bundles", nargs="+", type=Path, help="bundle dirs to measure")
    p.add_argument("--image", type=Path, default=None, help="image to ask about (default: a `shapes` image)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per run (EOS does not stop it)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per bundle and round, after one warm-up run")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds: each measures every bundle once "
                   "(rotated order), beside a bandwidth reading; figures are medians over rounds")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: every core)")
    p.add_argument("--eval", type=Path, default=None, help="LLaVA-format data: also measure accuracy")
    p.add_argument("--eval-limit", type=int, default=None, help="questions of --eval to use")
    p.add_argument("--self-timing", action="store_true", help="also time each phase by the engine's own clock "
                   "(profiler / perf counters; a little slower): the JSON split's *_engine_self_ms")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument("--md", type=Path, default=None, help="write the Markdown table here")
    p.add_argument("--plot", type=Path, default=None, help="write comparison plots here (PNG)")
    p.add_argument("--device", default=None, metavar="TARGET",
                   help="measure with the native runner on: local | qemu-aarch64 | adb[:SERIAL] "
                        "(docs/device-bench.md); default: the Python runtimes on this host")
    _add_setting(p)


@command("bench", "time to first token, prefill / decode tokens/s, memory, size and accuracy of bundles", _add_bench)
def _run_bench(a):
    from edgevlm.bench.report import markdown, plot
    from edgevlm.bench.devices import open_device
    from edgevlm.bench.runner import BenchConfig, bench
    from edgevlm.io import atomic_file, check_file_out, write_json

    for out in (a.json, a.md, a.plot):
        check_file_out(out)
    cfg = BenchConfig(a.image, a.prompt, a.new_tokens, a.runs, 1, a.threads, a.eval, a.eval_limit, a.self_timing,
                      a.rounds)
    report = bench(a.bundles, cfg, device=open_device(a.device) if a.device else None,
                   settings=[dict(a.setting)] * len(a.bundles))
    table = markdown(report)
    print(table)
    if a.json:
        write_json(a.json, report)
    if a.md:
        with atomic_file(a.md) as f:
            f.write(table + "\n")
    if a.plot:
        plot(report, a.plot)



def _add_quickstart(p):
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the model's initial weights")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for training and evaluation (default: PyTorch's, one per core)")


@command("quickstart", "data → tiny MobileVLM V2 → train → eval, in about ten minutes on a laptop CPU", _add_quickstart)
def _run_quickstart(a):
    import torch

    from edgevlm.quickstart import Recipe, quickstart

    if a.threads is not None and a.threads < 1:
        raise EdgeVLMError(f"--threads must be >= 1, got {a.threads}")
    if a.threads:
        torch.set_num_threads(a.threads)
    quickstart(a.out, Recipe(seed=a.seed))



def _add_goldens(p):
    _add_out(p, "directory to (re)write, e.g. tests/goldens")


@command("goldens", "write the golden vectors and bundles every bundle client tests against (tests/goldens)",
         _add_goldens)
def _run_goldens(a):
    from edgevlm.goldens import write_goldens

    _check_out(a, "goldens")
    out = write_goldens(a.out)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote the goldens to {out} ({total / 1e6:.2f} MB)")



def _add_info(p):
    p.add_argument("--model", type=Path, default=None, help="a model dir to describe")


@command("info", "list presets, projectors and templates, or describe a model dir", _add_info)
def _run_info(a):
    from edgevlm.bundle.template import TEMPLATES
    from edgevlm.models.presets import PRESETS
    from edgevlm.models.projectors import PROJECTORS
    from edgevlm.quant.schemes import FORMATS

    if a.model is None:
        print("presets:    " + ", ".join(PRESETS))
        print("projectors: " + ", ".join(PROJECTORS))
        print("templates:  " + ", ".join(TEMPLATES))
        for fmt in FORMATS:
            print(f"{fmt + ':':<11} " + ", ".join(FORMATS[fmt]))
        return
    from edgevlm.load import load_model

    model = load_model(a.model)
    info = {"config": model.cfg.to_dict(), "parameters": sum(p.numel() for p in model.parameters()),
            "image_tokens": model.num_image_tokens}
    print(json.dumps(info, indent=2))



def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show the libraries' warnings and the engines' native log lines")
    p = argparse.ArgumentParser(prog="edgevlm", description="Small vision-language models, from training to a phone.",
                                parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help, description=help, parents=[common]))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(getattr(args, "verbose", False))
    try:
        COMMANDS[args.command][2](args)
    except EdgeVLMError as e:
        print(f"edgevlm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_STACK:
            raise
        print(f"edgevlm {args.command}: error: this command needs {e.name}, which a runtime-only install lacks: "
              "pip install 'edgevlm[train]' (or run scripts/setup)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"edgevlm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
