"""The Android sample's JNI backend (examples/android/jni: edgevlm.jni.NativeBackend over native/jni's
libedgevlm_jni) in a plain JVM on this host: the core's Generator answers the golden GGUF and ExecuTorch bundles
with Python's greedy ids.

The glue is C++ over jni.h, so the library scripts/setup builds here (build/native/libedgevlm_jni.so, against
the JDK's jni.h, linked to libedgevlm_native) is the one a phone build compiles with the NDK. kotlinc and JUnit
as in tests/test_android_core.py; a failing JUnit test fails here by name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from test_android_core import ANDROID, GOLDENS, JAVA_LIBS, KOTLIN, ROOT, compiled_jar

SOURCES = [ANDROID / "core" / "src" / "main" / "kotlin", ANDROID / "core" / "src" / "test" / "kotlin" / "edgevlm"
           / "core" / "Goldens.kt", ANDROID / "jni" / "src" / "main" / "kotlin", ANDROID / "jni" / "src" / "test" / "kotlin"]
LIBRARY = ROOT / "build" / "native" / "libedgevlm_jni.so"
FORMATS = ("gguf", "executorch")  # what the host's native library runs (native/README.md)


@pytest.fixture(scope="module")
def junit() -> subprocess.CompletedProcess:
    classpath = [compiled_jar("jni", SOURCES, needs=(LIBRARY,)), KOTLIN / "lib" / "kotlin-stdlib.jar", *JAVA_LIBS]
    return subprocess.run(
        ["java", f"-Dedgevlm.goldens={GOLDENS}", f"-Dedgevlm.jni.library={LIBRARY}",
         f"-Dedgevlm.jni.formats={','.join(FORMATS)}", "-cp", os.pathsep.join(map(str, classpath)),
         "org.junit.runner.JUnitCore", "edgevlm.jni.NativeBackendTests"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


def test_jni_backend_answers_golden_bundles_with_pythons_ids(junit):
    failed = re.findall(r"^\d+\) (\w+)\(([\w.]+)\)$", junit.stdout, re.M)
    assert junit.returncode == 0 and not failed, (
        "JUnit failures: " + ", ".join(f"{cls.rsplit('.', 1)[-1]}.{name}" for name, cls in failed)
        + "\n" + junit.stdout[-6000:] + junit.stderr[-2000:])
    ran = int(re.search(r"^OK \((\d+) tests?\)$", junit.stdout, re.M).group(1))
    written = len(re.findall(r"^\s*@Test\b", (SOURCES[3] / "edgevlm" / "jni" / "NativeBackendTests.kt").read_text(), re.M))
    assert ran == written, f"JUnit ran {ran} tests, the source declares {written}"
    vectors = json.loads((GOLDENS / "vectors.json").read_text())
    want = [b for b in vectors["bundles"] if b["format"] in FORMATS]
    answered = re.findall(r"^\.*jni (\S+) (\S+): ([\d,]+) ", junit.stdout, re.M)  # JUnit's dots may lead
    assert {(d, i): ids for d, i, ids in answered} == {
        (b["dir"], b["image"]): ",".join(map(str, b["greedy_ids"])) for b in want}
    assert re.search(rf"^golden jni bundles: {len(want)}$", junit.stdout, re.M)
    print("\n".join(line.lstrip(".") for line in junit.stdout.splitlines() if line.lstrip(".").startswith("jni ")))
    print(f"Android JNI backend: JUnit OK, {ran} tests, {len(want)} golden cases")
