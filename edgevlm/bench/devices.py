"""Where `edgevlm bench --device TARGET` runs bundles: the native runner (`edgevlm-run`, native/) on this host
(`local`), under user-mode emulation (`qemu-aarch64`), or on an Android phone over adb (`adb`, `adb:SERIAL`).

A target puts the runner and the bundle where it runs them (adb pushes them, skipping files whose sha256
already matches on the phone), runs one bench request per bundle (the Python bench worker's request, answered
with the worker's result keys plus the generated ids and the device) and says what it is: CPU, cores, and on
Android the product and SoC names and the thermal state. Emulated targets check correctness only: their
timings are not speed, and the runner drops them (docs/device-bench.md). No torch here.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

import edgevlm
from edgevlm.bundle.manifest import MANIFEST, open_bundle, sha256_file
from edgevlm.errors import EdgeVLMError
from edgevlm.registry import Registry

REPO = Path(edgevlm.__file__).resolve().parent.parent
RUNNER = "edgevlm-run"
# where scripts/setup builds the runner, per target architecture
NATIVE_BUILDS = {"x86_64": REPO / "build" / "native", "aarch64": REPO / "build" / "native-aarch64"}
RUN_TIMEOUT_S = 1800  # a real-size bundle on a slow phone, many runs

DEVICES: Registry[type["Device"]] = Registry("bench device")


def native_runner(arch: str) -> Path:
    """The `edgevlm-run` built for `arch`; a missing one is an error saying how to build it."""
    if arch not in NATIVE_BUILDS:
        raise EdgeVLMError(f"no native runner build for {arch} (builds: {', '.join(NATIVE_BUILDS)})")
    path = NATIVE_BUILDS[arch] / RUNNER
    if not path.is_file():
        raise EdgeVLMError(f"the native runner for {arch} is not built (scripts/setup builds it)", path)
    return path


def host_facts() -> dict:
    """This machine: CPU model (Linux: /proc/cpuinfo), cores, architecture, system."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine(), "system": platform.platform()}


def parse_result(stdout: str, stderr: str, where: str) -> dict:
    """The runner's last stdout line as JSON; its {"error": ...} or a crash as one-line EdgeVLMError."""
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeVLMError(f"the native runner failed on {where}: {last}")
    if "error" in result:
        raise EdgeVLMError(f"the native runner failed on {where}: {result['error']}")
    return result


class Device(ABC):
    """One bench target. `measure` answers a bench request for a bundle dir on this host."""

    target = ""  # the --device name, e.g. `qemu-aarch64`
    emulated = False  # timings mean nothing: correctness only

    def __init__(self, serial: str | None = None):
        if serial is not None:
            raise EdgeVLMError(f"bench device {self.target!r} takes no serial (only adb:SERIAL does)")

    @abstractmethod
    def measure(self, bundle: Path, request: dict) -> dict:
        """Run one bench request (bundle, image paths on this host) on the target: the runner's result."""

    @abstractmethod
    def facts(self) -> dict:
        """What the report says about the machine: at least `cpu`, `cores`, `system`."""

    @abstractmethod
    def bandwidth(self, threads: int) -> float | None:
        """Copy bandwidth on the target in bytes/s (None where a number would mean nothing)."""


@DEVICES.register("local")
class LocalDevice(Device):
    """The native runner on this host, on the host's files."""

    target = "local"
    arch = platform.machine()
    prefix: tuple[str, ...] = ()  # what the runner is started under

    def _run(self, args: list[str], where: str) -> dict:
        cmd = [*self.prefix, str(native_runner(self.arch)), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        except FileNotFoundError:
            raise EdgeVLMError(f"cannot start {cmd[0]} for bench device {self.target}") from None
        return parse_result(done.stdout, done.stderr, where)

    def measure(self, bundle: Path, request: dict) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "request.json"
            path.write_text(json.dumps({**request, "bundle": str(bundle)}))
            return self._run([str(path)], str(bundle))

    def facts(self) -> dict:
        return host_facts()

    def bandwidth(self, threads: int) -> float | None:
        return self._run(["bandwidth", str(threads)], "bandwidth")["bandwidth_bytes_s"]


@DEVICES.register("qemu-aarch64")
class QemuDevice(LocalDevice):
    """The arm64 runner under qemu-aarch64-static on this host: the same ids as x86, timings meaningless."""

    target = "qemu-aarch64"
    arch = "aarch64"
    prefix = ("qemu-aarch64-static",)
    emulated = True

    def facts(self) -> dict:
        host = super().facts()
        return {**host, "cpu": f"qemu-aarch64 (emulated on {host['cpu']})", "arch": "aarch64", "emulated": True}

    def bandwidth(self, threads: int) -> float | None:
        return None


@DEVICES.register("adb")
class AdbDevice(Device):
    """An arm64 Android phone over adb: the static arm64 runner and the bundle under /data/local/tmp."""

    target = "adb"
    root = "/data/local/tmp/edgevlm"

    def __init__(self, serial: str | None = None):
        self.serial = serial
        self.adb = shutil.which("adb")
        if self.adb is None:
            raise EdgeVLMError("adb not found on PATH: install Android platform-tools (Debian: apt install adb)")

    def command(self, *args: str) -> list[str]:
        """The adb command line, addressed to this device's serial when one was given."""
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def call(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if check and done.returncode != 0:
            last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
            raise EdgeVLMError(f"adb {args[0]} failed ({last})")
        return done.stdout

    def shell(self, command: str, check: bool = True) -> str:
        return self.call("shell", command, check=check)

    def remote_sha256(self, paths: list[str]) -> dict[str, str]:
        """sha256 of the files that exist on the phone (toybox sha256sum), by remote path."""
        out = self.shell("sha256sum " + " ".join(_quote(p) for p in paths) + " 2>/dev/null", check=False)
        return {m.group(2): m.group(1) for m in re.finditer(r"^([0-9a-f]{64})\s+\*?(\S.*)$", out, re.M)}

    def sync(self, files: dict[str, Path]) -> list[str]:
        """Push local files to remote paths unless the phone already has the same bytes; the pushed paths."""
        have = self.remote_sha256(list(files))
        pushed = []
        for remote, local in files.items():
            if have.get(remote) != sha256_file(local):
                self.shell(f"mkdir -p {_quote(remote.rsplit('/', 1)[0])}")
                self.call("push", str(local), remote)
                pushed.append(remote)
        return pushed

    def measure(self, bundle: Path, request: dict) -> dict:
        b = open_bundle(bundle)  # the phone's runner checks again; a bad bundle fails here before any push
        remote_bundle = f"{self.root}/bundles/{b.path.name}"
        image = Path(request["image"])
        files = {f"{self.root}/{RUNNER}": native_runner("aarch64"),
                 f"{self.root}/image{image.suffix}": image,
                 f"{remote_bundle}/{MANIFEST}": b.path / MANIFEST,
                 **{f"{remote_bundle}/{name}": b.path / name for name in b.manifest["files"]}}
        if f"{self.root}/{RUNNER}" in self.sync(files):
            self.shell(f"chmod 755 {self.root}/{RUNNER}")
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "request.json"
            # paths relative to the root, where the runner starts
            req.write_text(json.dumps({**request, "bundle": f"bundles/{b.path.name}", "image": f"image{image.suffix}"}))
            self.call("push", str(req), f"{self.root}/request.json")
        out = self.shell(f"cd {self.root} && ./{RUNNER} request.json", check=False)
        result = parse_result(out, "", f"{self.target} {bundle}")
        return {**result, "bundle": str(bundle), "device_bundle": remote_bundle}

    def facts(self) -> dict:
        props = {key: self.shell(f"getprop {key}", check=False).strip() for key in
                 ("ro.product.model", "ro.soc.manufacturer", "ro.soc.model", "ro.product.cpu.abi",
                  "ro.build.version.release")}
        cpuinfo = self.shell("cat /proc/cpuinfo", check=False)
        hardware = re.search(r"^Hardware\s*:\s*(.+)$", cpuinfo, re.M)
        cores = len(re.findall(r"^processor\s*:", cpuinfo, re.M)) or None
        soc = " ".join(v for v in (props["ro.soc.manufacturer"], props["ro.soc.model"]) if v)
        return {
            "cpu": soc or (hardware.group(1).strip() if hardware else "unknown arm64"),
            "cores": cores,
            "arch": props["ro.product.cpu.abi"] or "arm64-v8a",
            "system": f"Android {props['ro.build.version.release']}".strip(),
            "model": props["ro.product.model"] or None,
            "thermal": self.thermal(),
        }

    def thermal(self) -> dict:
        """Android's thermal status (0 none … 6 shutdown) and the hottest zone in °C, where readable."""
        status = re.search(r"Thermal Status:\s*(\d+)", self.shell("dumpsys thermalservice", check=False))
        temps = [int(t) for t in re.findall(r"^-?\d+$", self.shell(
            "cat /sys/class/thermal/thermal_zone*/temp 2>/dev/null", check=False), re.M)]
        return {"status": int(status.group(1)) if status else None,
                "max_zone_c": max(temps) / 1000 if temps else None}

    def bandwidth(self, threads: int) -> float | None:
        out = self.shell(f"cd {self.root} && ./{RUNNER} bandwidth {threads}", check=False)
        return parse_result(out, "", f"{self.target} bandwidth")["bandwidth_bytes_s"]


def _quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


def open_device(spec: str) -> Device:
    """`local`, `qemu-aarch64`, `adb` or `adb:SERIAL` → the target."""
    name, _, serial = spec.partition(":")
    return DEVICES[name](serial or None)
