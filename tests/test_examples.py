"""Keeps the app samples honest (examples/android, examples/ios).

- The golden vectors every client checks are the ones Python writes: each list in vectors.json (but `reference`,
  PyTorch's tokens, which engine backends check) has a `testGolden<Group>` test in the Kotlin core and in the Swift
  kit, and the Swift kit's XCTests are the Kotlin suite's tests, class by class and name by name (read from the
  sources: no Swift toolchain here), so the sibling that cannot run here is held to the one that does.
- No app code resizes an image with a platform call: the bundle spec's resize is Pillow's bicubic, which only
  the cores reproduce (docs/bundle-spec.md section 4).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_android_core import CLIENT_GROUPS, GOLDENS

ROOT = Path(__file__).resolve().parents[1]
KOTLIN_TESTS = ROOT / "examples" / "android" / "core" / "src" / "test" / "kotlin"
SWIFT_TESTS = ROOT / "examples" / "ios" / "Tests" / "EdgeVLMKitTests"
APP_SOURCES = [
    ROOT / "examples" / "android" / "core" / "src" / "main",
    ROOT / "examples" / "android" / "app" / "src",
    ROOT / "examples" / "android" / "jni" / "src" / "main",
    ROOT / "examples" / "ios" / "Sources",
    ROOT / "examples" / "ios" / "App",
]
# Platform scalers (and decoders that scale while decoding): none gives Pillow's bicubic bytes.
PLATFORM_RESIZE = re.compile("|".join([
    r"createScaledBitmap", r"\bBitmap\.scale\(|\.scale\(\s*\w+\s*,", r"setTargetSize", r"inSampleSize",
    r"inTargetDensity", r"ThumbnailUtils", r"loadThumbnail", r"\b(post|pre|set)Scale\(",
    r"UIGraphicsImageRenderer", r"UIGraphicsBeginImageContext", r"CI(Lanczos|Bicubic)ScaleTransform",
    r"(lanczos|bicubic)ScaleTransform", r"vImageScale", r"[pP]reparingThumbnail", r"ThumbnailMaxPixelSize",
    r"CGImageSourceCreateThumbnail",
]))


def kotlin_tests() -> dict[str, set[str]]:
    out = {}
    for f in KOTLIN_TESTS.rglob("*Tests.kt"):
        text = f.read_text()
        out[re.search(r"^class (\w+)", text, re.M).group(1)] = set(re.findall(r"@Test\s+fun (\w+)\(", text))
    return out


def swift_tests() -> dict[str, set[str]]:
    out = {}
    for f in SWIFT_TESTS.glob("*Tests.swift"):
        text = f.read_text()
        out[re.search(r"^final class (\w+): XCTestCase", text, re.M).group(1)] = set(re.findall(r"func (test\w+)\(", text))
    return out


def code_only(text: str) -> str:
    """Kotlin / Swift source without its comments: a doc comment may name the calls it avoids."""
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", text, flags=re.S))


def platform_resizes(text: str) -> list[str]:
    return [m.group(0) for m in PLATFORM_RESIZE.finditer(code_only(text))]


def test_clients_check_every_golden_group_python_writes():
    vectors = json.loads((GOLDENS / "vectors.json").read_text())
    assert {k for k, v in vectors.items() if isinstance(v, list)} == {*CLIENT_GROUPS, "reference"}
    wanted = {f"testGolden{g.capitalize()}" for g in CLIENT_GROUPS}
    assert wanted <= kotlin_tests()["GoldenTests"], "Kotlin core misses golden groups"
    assert wanted <= swift_tests()["GoldenTests"], "Swift kit misses golden groups"


def test_swift_kit_runs_the_kotlin_core_tests():
    kotlin, swift = kotlin_tests(), swift_tests()
    assert sum(map(len, kotlin.values())) >= 20
    assert swift == kotlin


def test_no_app_code_resizes_with_a_platform_call():
    hits = {str(f.relative_to(ROOT)): platform_resizes(f.read_text())
            for d in APP_SOURCES for f in d.rglob("*") if f.suffix in (".kt", ".swift")}
    assert {f: h for f, h in hits.items() if h} == {}


@pytest.mark.parametrize("line", [
    "val small = Bitmap.createScaledBitmap(bitmap, 336, 336, true)",
    "options.inSampleSize = 4",
    "val renderer = UIGraphicsImageRenderer(size: CGSize(width: 336, height: 336))",
    'let f = CIFilter(name: "CILanczosScaleTransform")',
    "let f = CIFilter.lanczosScaleTransform()",
    "let thumb = image.preparingThumbnail(of: size)",
    "val s = bitmap.scale(336, 336)",
])
def test_the_resize_check_catches_platform_scalers(line):
    assert platform_resizes(line)
    assert not platform_resizes(f"// {line}\n/** {line} */")
