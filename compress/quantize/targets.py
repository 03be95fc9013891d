"""Which int8 types a target CPU runs well, after onnxruntime's guidance for static quantization.

x86 without VNNI multiplies u8 activations by s8 weights with VPMADDUBSW, whose 16-bit
intermediate sums can saturate: weights get 7 bits (`reduce_range`). VNNI (VPDPBUSD)
accumulates u8 x s8 in 32 bits, so full 8-bit weights are safe. ARM's int8 dot product
(SDOT) takes s8 x s8, and ARM kernels prefer symmetric int8 activations.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compress.bench.machine import read_cpuinfo
from compress.errors import CompressError

TARGETS = ("x86", "x86-vnni", "arm")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
ARM_DOT_PRODUCT_FLAG = "asimddp"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
ARM_MACHINES = ("aarch64", "arm64", "armv8l")


@dataclass(frozen=True)
class Int8Types:
    """The quantized types chosen for a target, and why."""

    target: str
    activation: str  # "uint8" or "int8"
    weight: str
    reduce_range: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """CPU feature flags of this host (x86 `flags`, ARM `Features`); empty where unreadable."""
    return read_cpuinfo(cpuinfo)[1]


def host_target(machine: str | None = None, flags: set[str] | None = None) -> str:
    """This host as a target name: x86, x86-vnni or arm."""
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    if machine in X86_MACHINES:
        return "x86-vnni" if flags & set(VNNI_FLAGS) else "x86"
    if machine in ARM_MACHINES:
        return "arm"
    raise CompressError(
        f"stages.quantize.target: auto cannot place this host's CPU ({machine!r}); "
        f"set it to one of {', '.join(TARGETS)}"
    )


def host_has_int8_dot_product(flags: set[str] | None = None) -> bool:
    """Whether this host has an int8 dot-product instruction (VNNI on x86, SDOT on ARM)."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {*VNNI_FLAGS, ARM_DOT_PRODUCT_FLAG})


def int8_types(target: str = "auto") -> Int8Types:
    """Activation/weight types and range for `target` ("auto": this host)."""
    resolved = host_target() if target == "auto" else target
    origin = "this host" if target == "auto" else "the recipe"
    if resolved == "x86":
        return Int8Types(
            "x86",
            "uint8",
            "int8",
            True,
            f"{origin}: x86 without VNNI: u8s8 with 7-bit weights (reduce_range) "
            "so that VPMADDUBSW's 16-bit sums cannot saturate",
        )
    if resolved == "x86-vnni":
        return Int8Types(
            "x86-vnni",
            "uint8",
            "int8",
            False,
            f"{origin}: x86 with VNNI: u8s8, VPDPBUSD accumulates in 32 bits so full 8-bit weights are safe",
        )
    if resolved == "arm":
        return Int8Types(
            "arm", "int8", "int8", False, f"{origin}: ARM: s8s8, the operand types of the SDOT int8 dot product"
        )
    raise CompressError(f"stages.quantize.target: unknown target {target!r}; use auto or one of {', '.join(TARGETS)}")
