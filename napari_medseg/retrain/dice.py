"""Dice counting shared by fine-tuning, the protocol and recipe training (Qt- and napari-free).

``batch_dice`` accumulates per-class counts over batches; ``dice_from_counts``
turns them into per-class Dice; ``mean_foreground`` averages the foreground
classes that occur.  ``dice`` compares two boolean masks.
"""

from __future__ import annotations

import math

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape; ``nan`` when both are empty."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def batch_dice(pred: "torch.Tensor", ref: "torch.Tensor", num_classes: int,  # noqa: F821
               ignore_index: int | None = None) -> "torch.Tensor":  # noqa: F821
    """Per-class ``(intersection, pred_sum, ref_sum)`` counts for integer label tensors.

    Args:
        pred, ref: integer tensors of the same shape (any), values in [0, K).
        num_classes: K including background.
        ignore_index: ``ref`` value of pixels nobody labelled (partial labels: 255);
            those pixels count in no sum, whatever ``pred`` says there.

    Returns:
        float64 tensor ``(3, K)``; accumulate over batches, then take
        :func:`dice_from_counts`.
    """
    import torch

    pred = pred.reshape(-1).long()
    ref = ref.reshape(-1).long()
    if ignore_index is not None:
        labelled = ref != ignore_index
        pred, ref = pred[labelled], ref[labelled]
    inter = torch.bincount(pred[pred == ref], minlength=num_classes)[:num_classes]
    psum = torch.bincount(pred, minlength=num_classes)[:num_classes]
    rsum = torch.bincount(ref, minlength=num_classes)[:num_classes]
    return torch.stack([inter, psum, rsum]).double().cpu()


def dice_from_counts(counts) -> np.ndarray:
    """Per-class Dice ``(K,)`` from summed :func:`batch_dice` counts; ``nan`` where both sums are 0."""
    counts = np.asarray(counts, dtype=np.float64)
    inter, psum, rsum = counts
    denom = psum + rsum
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * inter / np.maximum(denom, 1e-12), np.nan)


def mean_foreground(per_class: np.ndarray) -> float:
    """Mean of the finite foreground entries (index >= 1) of a per-class Dice ``(K,)``; ``nan`` if none."""
    fg = np.asarray(per_class, dtype=np.float64)[1:]
    finite = fg[np.isfinite(fg)]
    return float(finite.mean()) if finite.size else math.nan
