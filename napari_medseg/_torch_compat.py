"""Work around two ways torch can kill the process: triton inside napari, AMX in a VM.

Triton: torch's optimizers import ``torch._dynamo`` on first use, which imports
``triton`` when the CUDA build of torch is installed.  triton bundles its own
LLVM; loading it after Mesa's software OpenGL (llvmpipe, which napari's
canvas uses on machines without a GPU driver) has loaded *its* LLVM segfaults
the process (seen with torch 2.14 + Mesa under Xvfb).  napari-medseg never
uses triton (no ``torch.compile``), so GUI code calls :func:`hide_triton`
before the first optimizer is created.

AMX: some virtual machines advertise AMX in CPUID without enabling its tile
state; oneDNN's bf16 matmul then dies with SIGILL.  :func:`cap_onednn_isa`,
run when the package is imported, caps oneDNN at AVX512-BF16 there.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys


def hide_triton() -> None:
    """Make ``import triton`` fail cleanly in this process (unless it is already loaded)."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # torch then reports "no triton" instead of loading it
    import torch._dynamo  # noqa: F401  (imported now, with triton hidden)


# ---------------------------------------------------------------- AMX guard

#: ``arch_prctl`` codes (Linux x86-64): the xstate features the kernel supports.
_ARCH_GET_XCOMP_SUPP = 0x1022
_XTILE_BITS = (1 << 17) | (1 << 18)  # XTILECFG | XTILEDATA
_SYS_ARCH_PRCTL = 158
_ISA_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _kernel_xfeatures() -> int | None:
    """The xstate feature mask the kernel supports, or ``None`` where it can't be asked."""
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mask = ctypes.c_ulong(0)
        if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_GET_XCOMP_SUPP, ctypes.byref(mask)) != 0:
            return None
        return int(mask.value)
    except (OSError, AttributeError):
        return None


def amx_unusable(flags: set[str] | None = None, xfeatures: int | None = -1) -> bool:
    """True when the CPU advertises AMX but the kernel has not enabled its tile state.

    Seen in virtual machines: CPUID reports ``amx_tile``, oneDNN picks its AMX
    kernels for bf16 matmuls, and the first one dies with SIGILL.
    """
    flags = _cpu_flags() if flags is None else flags
    if "amx_tile" not in flags:
        return False
    xfeatures = _kernel_xfeatures() if xfeatures == -1 else xfeatures
    return xfeatures is not None and (xfeatures & _XTILE_BITS) != _XTILE_BITS


def cap_onednn_isa() -> str | None:
    """Keep oneDNN off AMX where the kernel can't run it; returns the ISA cap set, if any.

    Must run before torch's first oneDNN (bf16) operation; it is called when
    ``napari_medseg`` is imported.  A cap the user set is left alone.
    """
    if any(os.environ.get(v) for v in _ISA_VARS) or not amx_unusable():
        return None
    os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_BF16"
    return os.environ["ONEDNN_MAX_CPU_ISA"]
