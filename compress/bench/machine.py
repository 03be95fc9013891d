"""What a host profile describes: the CPU, the instruction-set flags onnxruntime picks kernels by,
and the onnxruntime version; and the warning when a profile is used on another machine.

A host profile's coefficients hold only for the machine and runtime that measured them: MLAS
(onnxruntime's CPU kernels) blocks conv channels by 16 under AVX-512 and by 8 under AVX2, and
uses int8 dot-product kernels only with VNNI or AMX, so a profile from one x86 host misprices
another. `calibrate host` records the fingerprint; `costmodel.predict` compares it with the host
it runs on.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

# /proc/cpuinfo flag names that change which MLAS kernels run (fp32 blocking, int8 dot products)
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
RECALIBRATE = "python -m compress.bench.calibrate host"


class HostMismatchWarning(UserWarning):
    """A host profile predicts for a machine or onnxruntime other than the one that calibrated it."""


@dataclass(frozen=True)
class HostFingerprint:
    cpu: str
    flags: tuple[str, ...]  # the KERNEL_FLAGS this CPU has
    onnxruntime: str
    cache_bytes: int = 0  # the last-level cache (0: unknown), which a network's conv weights may outgrow

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "flags": list(self.flags)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostFingerprint:
        return cls(
            str(data.get("cpu", "")),
            tuple(data.get("flags") or ()),
            str(data.get("onnxruntime", "")),
            int(data.get("cache_bytes") or 0),
        )


def channel_block(flags: tuple[str, ...] | list[str]) -> int:
    """The NCHWc channel block MLAS uses with these flags: 16 on AVX-512, 8 on AVX2, else 1 (no blocking assumed)."""
    if "avx512f" in flags:
        return 16
    return 8 if "avx2" in flags else 1


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """CPU model and every feature flag (x86 `flags`, ARM `Features`); empty where unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "", set()
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return model, flags


# numpy's names of the KERNEL_FLAGS it detects (numpy._core._multiarray_umath.__cpu_features__)
NUMPY_FLAG_NAMES = {
    "AVX2": "avx2",
    "AVX512F": "avx512f",
    "AVX512VNNI": "avx512_vnni",
    "AVXVNNI": "avx_vnni",
    "AMX_TILE": "amx_tile",
    "AMX_INT8": "amx_int8",
    "AMX_BF16": "amx_bf16",
}


@functools.cache  # executed.analyse asks for every network it prices
def last_level_cache_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The size of CPU 0's highest-level cache from Linux's sysfs (e.g. index3/size "32768K"); 0 where unreadable."""
    best = (0, 0)
    for index in root.glob("index*"):
        try:
            level, size = int((index / "level").read_text()), (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        digits = size.rstrip("KMG")
        if digits.isdigit():
            best = max(best, (level, int(digits) * scale))
    return best[1]


def numpy_flags() -> set[str]:
    """The kernel flags numpy detected on this CPU at import, in /proc/cpuinfo's spelling: the fallback
    where there is no /proc/cpuinfo (macOS, Windows). numpy's feature table is private, so it may be empty."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return set()
    return {NUMPY_FLAG_NAMES[name] for name, present in features.items() if present and name in NUMPY_FLAG_NAMES}


def _brand_string() -> str:
    """The CPU model on macOS (sysctl), else ""."""
    try:
        run = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return run.stdout.strip()


def this_host() -> HostFingerprint:
    """This machine's fingerprint: /proc/cpuinfo on Linux; elsewhere sysctl (macOS) or `platform` for the
    model and numpy's CPU feature detection for the flags."""
    model, flags = read_cpuinfo()
    if not flags:
        model, flags = model or _brand_string(), numpy_flags()
    try:
        ort = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort = "not installed"
    kernel_flags = tuple(f for f in KERNEL_FLAGS if f in flags)
    return HostFingerprint(
        model or platform.processor() or platform.machine(), kernel_flags, ort, last_level_cache_bytes()
    )


def differences(recorded: HostFingerprint, here: HostFingerprint) -> list[str]:
    """What differs between the calibrated machine and this one, each as a short phrase."""
    out = []
    if recorded.cpu != here.cpu:
        out.append(f"CPU {recorded.cpu!r} vs {here.cpu!r} here")
    gained, lost = sorted(set(here.flags) - set(recorded.flags)), sorted(set(recorded.flags) - set(here.flags))
    if gained or lost:
        out.append("flags " + " ".join([f"+{f}" for f in gained] + [f"-{f}" for f in lost]) + " here")
    if recorded.onnxruntime != here.onnxruntime:
        out.append(f"onnxruntime {recorded.onnxruntime} vs {here.onnxruntime} here")
    return out


def warn_if_elsewhere(profile_name: str, recorded: dict[str, Any] | None, here: HostFingerprint | None = None) -> None:
    """One warning line when a host profile is used on a machine other than the one it describes."""
    here = here or this_host()
    if recorded is None:
        found = ["it records no machine"]
    else:
        found = differences(HostFingerprint.from_json(recorded), here)
    if found:
        warnings.warn(
            f"profile:{profile_name} was calibrated elsewhere ({'; '.join(found)}): its predictions may be off; "
            f"recalibrate here with `{RECALIBRATE}`",
            HostMismatchWarning,
            stacklevel=3,
        )
