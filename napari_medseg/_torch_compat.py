"""Keep torch from loading triton inside napari.

torch's optimizers import ``torch._dynamo`` on first use, which imports
``triton`` when the CUDA build of torch is installed.  triton bundles its own
LLVM; loading it after Mesa's software OpenGL (llvmpipe, which napari's
canvas uses on machines without a GPU driver) has loaded *its* LLVM segfaults
the process (seen with torch 2.14 + Mesa under Xvfb).  napari-medseg never
uses triton (no ``torch.compile``), so GUI code calls :func:`hide_triton`
before the first optimizer is created.
"""

from __future__ import annotations

import sys


def hide_triton() -> None:
    """Make ``import triton`` fail cleanly in this process (unless it is already loaded)."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # torch then reports "no triton" instead of loading it
    import torch._dynamo  # noqa: F401  (imported now, with triton hidden)
