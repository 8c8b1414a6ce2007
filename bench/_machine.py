"""What every benchmark reports about the machine: the CPU's name and an fp32 matmul reference."""

from __future__ import annotations

import platform
import time


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Achieved FLOP/s of an fp32 ``n x n`` matmul, best of ``repeats`` (after one warm-up)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
