"""Engine knobs (`Runtime.settings`): every declared value reaches its engine and leaves the answers as they were;
a knob or value a runtime lacks is a one-line error. benchmarks/runtime_settings.py measures them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_errors import fails
from edgevlm.bench.runner import BenchConfig, bench
from edgevlm.cli import main
from edgevlm.bundle.image import load_image
from edgevlm.errors import EdgeVLMError
from edgevlm.runtimes import load_runtime

GOLDEN_BUNDLES = Path(__file__).parent / "goldens" / "bundles"
BUNDLES = ["gguf-q4_0", "onnx-int4", "executorch-int4"]
IMAGE = Path(__file__).parent / "goldens" / "images" / "exact-336x336.png"


def answer(bundle: Path, settings: dict | None = None) -> tuple:
    runtime = load_runtime(bundle, threads=1, settings=settings)
    return runtime, runtime.generate_many(load_image(IMAGE), ["What is in the top left?"], max_new_tokens=6)[0]


def mapped(path: Path) -> bool:
    """Whether this process maps `path` (/proc/self/maps)."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("name", BUNDLES)
def test_every_setting_answers_as_the_defaults(name):
    bundle = GOLDEN_BUNDLES / name
    runtime, ids = answer(bundle)
    assert runtime.chosen == {k: s.default for k, s in runtime.settings.items()} and runtime.settings
    for key, setting in runtime.settings.items():
        for value in setting.choices:
            other, got = answer(bundle, {key: value})
            assert other.setting(key) == value and got == ids, f"{name} {key}={value}"


def test_settings_reach_the_engines():
    gguf = GOLDEN_BUNDLES / "gguf-q4_0"
    text = gguf / "model-q4_0.gguf"
    mmap = load_runtime(gguf, threads=1, settings={"load": "mmap"})
    assert mapped(text)
    del mmap
    read = load_runtime(gguf, threads=1)  # the default
    assert not mapped(text), "load=read, yet llama.cpp maps the GGUF"
    del read
    pte = GOLDEN_BUNDLES / "executorch-int4" / "model.pte"
    mmap = load_runtime(pte.parent, threads=1)
    assert mapped(pte)
    del mmap
    read = load_runtime(pte.parent, threads=1, settings={"load": "read"})
    assert not mapped(pte), "load=read, yet ExecuTorch maps the program"
    del read
    onnx = load_runtime(GOLDEN_BUNDLES / "onnx-int4", threads=1,
                        settings={"spinning": "off", "prepacking": "off", "arena": "off"})
    options = onnx.sessions["decoder"].get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.disable_prepacking") == "1"
    assert not options.enable_cpu_mem_arena


@pytest.mark.parametrize("settings, words", [
    ({"mmap": "on"}, "llama.cpp has no setting 'mmap' (its settings: load)"),
    ({"load": "yes"}, "llama.cpp setting load='yes': choose one of read, mmap"),
])
def test_unknown_settings_are_one_line_errors(settings, words):
    with pytest.raises(EdgeVLMError, match=r"^.*" + words.replace("(", r"\(").replace(")", r"\)")) as e:
        load_runtime(GOLDEN_BUNDLES / "gguf-q4_0", threads=1, settings=settings)
    assert "\n" not in str(e.value) and "gguf-q4_0" in str(e.value)


def test_bench_measures_one_bundle_under_several_settings():
    bundle = GOLDEN_BUNDLES / "onnx-int4"
    report = bench([bundle, bundle], BenchConfig(new_tokens=2, runs=1, warmup=0, threads=1),
                   progress=False, settings=[{}, {"prepacking": "off", "arena": "off"}])
    first, second = report["results"]
    assert first["settings"] == {"spinning": "on", "prepacking": "on", "arena": "on"}
    assert second["settings"] == {"spinning": "on", "prepacking": "off", "arena": "off"}
    with pytest.raises(ValueError, match="1 settings for 2 bundles"):
        bench([bundle, bundle], BenchConfig(), progress=False, settings=[{}])


def test_cli_run_takes_settings(capsys):
    argv = ["run", "--bundle", str(GOLDEN_BUNDLES / "gguf-q4_0"), "--image", str(IMAGE),
            "--prompt", "What is in the top left?", "--max-new-tokens", "6", "--threads", "1"]
    assert main(argv) == 0
    default = capsys.readouterr().out
    assert main(argv + ["--setting", "load=mmap"]) == 0
    assert capsys.readouterr().out == default
    fails(argv + ["--setting", "spinning=off"], capsys, "llama.cpp has no setting 'spinning'")
