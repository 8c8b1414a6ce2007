"""Cross-entropy + soft Dice, the loss of both papers.

DCAU-Net: ``0.4 * CE + 0.6 * Dice``; U-DFA: ``CE + Dice`` (weights 0.5/0.5 in
the TransUNet code base it builds on).  The Dice term follows TransUNet's
``DiceLoss``: softmax probabilities, one soft Dice per class over the whole
batch, averaged over classes (background included by default).

Partial labels: target pixels equal to ``ignore_index`` (255, "not labelled",
see :mod:`napari_medseg.scribbles`) count in neither term.  Cross-entropy is
averaged over the labelled pixels only, and the Dice sums run over them only,
so the loss of a partially labelled slice equals the loss of its labelled
pixels alone.  A batch with no labelled pixel gives a loss of 0 with zero
gradients (not NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_medseg.scribbles import UNLABELLED


class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * (1 - mean soft Dice)``.

    Args:
        num_classes: K, classes including background.
        ce_weight: weight of the cross-entropy term.
        dice_weight: weight of the Dice term.
        include_background: include class 0 in the Dice mean (TransUNet does).
        smooth: additive smoothing of the soft Dice (TransUNet uses 1e-5).
        ignore_index: target value of pixels nobody labelled (default 255); ``None``: none.

    Forward:
        logits: ``(B, K, H, W)`` raw scores; target: ``(B, H, W)`` integer labels
        in ``0..K-1`` or ``ignore_index``.  Returns a scalar tensor.
    """

    def __init__(
        self,
        num_classes: int,
        ce_weight: float = 0.5,
        dice_weight: float = 0.5,
        include_background: bool = True,
        smooth: float = 1e-5,
        ignore_index: int | None = UNLABELLED,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + organs), got {num_classes}")
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got ce={ce_weight}, dice={dice_weight}")
        self.num_classes = num_classes
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.include_background = include_background
        self.smooth = float(smooth)
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class of the model (0..{num_classes - 1})")
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (B, {self.num_classes}, H, W), got {tuple(logits.shape)}")
        if target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"target must be (B, H, W) = {(logits.shape[0], *logits.shape[2:])}, got {tuple(target.shape)}")
        logits = logits.float()
        target = target.long()
        labelled = target != self.ignore_index if self.ignore_index is not None else None
        if labelled is not None:
            bad = target[labelled & ((target < 0) | (target >= self.num_classes))]
        else:
            bad = target[(target < 0) | (target >= self.num_classes)]
        if bad.numel():
            allowed = f"0..{self.num_classes - 1}" + (f" or {self.ignore_index}" if labelled is not None else "")
            raise ValueError(f"target holds label {int(bad[0])}, not one of {allowed}")
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * masked_cross_entropy(logits, target, labelled)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(
                logits, target, self.include_background, self.smooth, labelled
            )
        return loss


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor | None = None):
    """Cross-entropy averaged over the ``labelled`` pixels ``(B, H, W)`` bool (all when None); 0 if none."""
    if labelled is None:
        return F.cross_entropy(logits, target)
    per_pixel = F.cross_entropy(logits, torch.where(labelled, target, 0), reduction="none")
    return (per_pixel * labelled).sum() / labelled.sum().clamp(min=1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = True, smooth: float = 1e-5,
                   labelled: torch.Tensor | None = None):
    """``1 - mean_k dice_k`` with softmax probabilities, pooled over the batch.

    Args:
        logits: ``(B, K, H, W)``; target: ``(B, H, W)`` integer labels.
        labelled: optional ``(B, H, W)`` bool; only those pixels enter the sums
            (``target`` elsewhere is not read).
    """
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    if labelled is not None:
        target = torch.where(labelled, target, 0)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    if labelled is not None:
        weight = labelled[:, None].to(probs.dtype)
        probs, onehot = probs * weight, onehot * weight
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + onehot.sum(dims)  # TransUNet squares the probabilities
    per_class = (2 * inter + smooth) / (denom + smooth)
    if not include_background:
        per_class = per_class[1:]
    return 1.0 - per_class.mean()
