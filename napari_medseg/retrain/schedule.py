"""Learning-rate factors shared by fine-tuning (budget fractions) and recipe training (steps)."""

from __future__ import annotations

import math


def decay_factor(progress: float, kind: str = "cosine", power: float = 0.9) -> float:
    """Factor in [0, 1] at ``progress`` in [0, 1] after warm-up: ``cosine`` to 0, ``poly`` ``(1-p)^power``, ``constant``."""
    progress = min(1.0, max(0.0, progress))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "poly":
        return (1.0 - progress) ** float(power)
    if kind == "constant":
        return 1.0
    raise ValueError(f"schedule.kind must be poly, cosine or constant, got {kind!r}")


def warmup_cosine(fraction: float, warmup: float) -> float:
    """Fine-tuning's factor at ``fraction`` of the budget: linear warm-up (from 0.05) over ``warmup``, then cosine to 0."""
    if warmup > 0 and fraction < warmup:
        return max(fraction / warmup, 0.05)
    return decay_factor((fraction - warmup) / max(1e-9, 1 - warmup), "cosine")
