"""The Android sample's pure-Kotlin core (examples/android/core): compiled with kotlinc, its JUnit suite run on
tests/goldens/ in a plain JVM.

No Gradle or Android SDK exists on these machines, so this test drives the compiler and JUnitCore itself
(scripts/setup installs kotlinc from npm into examples/android/tools, JUnit 4 and Android's org.json from
Debian). A failing JUnit test fails here by name; the suite must also report every golden case it checked, so
that a test quietly reading fewer vectors than vectors.json holds cannot pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANDROID = ROOT / "examples" / "android"
KOTLIN = ANDROID / "tools" / "node_modules" / "kotlin-compiler"
SOURCES = [ANDROID / "core" / "src" / "main" / "kotlin", ANDROID / "core" / "src" / "test" / "kotlin"]
JAVA_LIBS = [Path("/usr/share/java") / n for n in ("junit4.jar", "hamcrest-core.jar", "com.android.json.jar")]
GOLDENS = ROOT / "tests" / "goldens"
# the vectors.json groups a client checks without an engine; `reference` is PyTorch's, checked by backends
CLIENT_GROUPS = ("text", "prompts", "images", "bundles")


def kotlin_files(sources: list[Path]) -> list[Path]:
    """The .kt files of `sources` (directories searched, files taken as they are)."""
    return sorted(p for s in sources for p in ([s] if s.is_file() else s.rglob("*.kt")))


def junit_classes() -> list[str]:
    return [f"edgevlm.core.{p.stem}" for p in sorted((SOURCES[1]).rglob("*Tests.kt"))]


def compiled_jar(name: str = "core", sources: list[Path] = SOURCES, needs: tuple[Path, ...] = ()) -> Path:
    """`sources` compiled into one jar under build/android-NAME, recompiled only when a source or the compiler
    changed; `needs` are other files the run needs (a missing one is a setup failure)."""
    missing = [str(p) for p in [KOTLIN / "bin" / "kotlinc", *JAVA_LIBS, *needs] if not p.exists()]
    assert not missing, f"scripts/setup did not build or install {', '.join(missing)}: run ./scripts/setup"
    digest = hashlib.sha256((KOTLIN / "build.txt").read_bytes())
    for f in kotlin_files(sources):
        digest.update(str(f.relative_to(ANDROID)).encode() + b"\0" + f.read_bytes())
    build = ROOT / "build" / f"android-{name}"
    jar = build / f"{name}-{digest.hexdigest()[:16]}.jar"
    if not jar.exists():
        build.mkdir(parents=True, exist_ok=True)
        tmp = build / f"partial-{jar.name}"  # renamed into place when whole
        run = subprocess.run(
            [str(KOTLIN / "bin" / "kotlinc"), *map(str, kotlin_files(sources)), "-cp",
             os.pathsep.join(map(str, JAVA_LIBS)), "-jvm-target", "17", "-nowarn", "-d", str(tmp)],
            capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, f"kotlinc failed:\n{run.stderr[-4000:]}"
        for old in build.glob(f"{name}-*.jar"):
            old.unlink()
        os.replace(tmp, jar)
    return jar


@pytest.fixture(scope="module")
def junit() -> subprocess.CompletedProcess:
    classpath = [compiled_jar(), KOTLIN / "lib" / "kotlin-stdlib.jar", *JAVA_LIBS]
    return subprocess.run(
        ["java", f"-Dedgevlm.goldens={GOLDENS}", "-cp", os.pathsep.join(map(str, classpath)),
         "org.junit.runner.JUnitCore", *junit_classes()],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


def test_kotlin_core_junit_suite_passes(junit):
    failed = re.findall(r"^\d+\) (\w+)\(([\w.]+)\)$", junit.stdout, re.M)
    assert junit.returncode == 0 and not failed, (
        "JUnit failures: " + ", ".join(f"{cls.rsplit('.', 1)[-1]}.{name}" for name, cls in failed)
        + "\n" + junit.stdout[-6000:] + junit.stderr[-2000:])
    ran = int(re.search(r"^OK \((\d+) tests?\)$", junit.stdout, re.M).group(1))
    written = sum(len(re.findall(r"^\s*@Test\b", p.read_text(), re.M)) for p in SOURCES[1].rglob("*Tests.kt"))
    assert ran == written, f"JUnit ran {ran} tests, the sources declare {written}"
    print(f"Kotlin core: JUnit OK, {ran} tests")


def test_kotlin_core_checked_every_golden_case(junit):
    vectors = json.loads((GOLDENS / "vectors.json").read_text())
    checked = {g: int(n) for g, n in re.findall(r"golden (\w+): (\d+)$", junit.stdout, re.M)}
    assert checked == {g: len(vectors[g]) for g in CLIENT_GROUPS}
