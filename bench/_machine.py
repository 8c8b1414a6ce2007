"""What every benchmark reports about the machine: the CPU's name and an fp32 matmul reference."""

from __future__ import annotations

import os
import time

# the bench scripts' "machine:" line: the CPU's name and its widest vector ISA ("AMD EPYC (avx2)"), since a
# cloud VM of one name can run on hosts with and without AVX-512 from one session to the next
from napari_medseg.precision_probe import cpu_description as cpu_name  # noqa: F401  (re-exported)


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


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, ``"a / b / c"``."""
    return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())
