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

Scribbles leave most pixels unlabelled, and the losses above say nothing about
where an organ ends between its stroke and the background strokes.  With
``smoothness_weight > 0`` and ``images`` given, batches holding unlabelled
pixels add an edge-aware smoothness term (:func:`edge_aware_smoothness`, a
pairwise CRF-style energy as in scribble-supervised segmentation): neighbouring
pixels of similar intensity should get the same class, so labels spread from
the strokes through homogeneous tissue and stop at edges.  Measured on the
sample CT and A' in ``bench/effort.py`` (docs/retrain.md).  With ``entropy_weight > 0``
such batches also add the mean normalised entropy of the prediction on the unlabelled
pixels (:func:`unlabelled_entropy`), which asks the model to decide there.
"""

from __future__ import annotations

import math

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
        smoothness_weight: weight of :func:`edge_aware_smoothness`, added only for
            batches that hold unlabelled pixels and when ``images`` are given.
        smoothness_sigma: its intensity scale (image values in [0, 1]).
        entropy_weight: weight of :func:`unlabelled_entropy`, added only for batches that
            hold unlabelled pixels.

    Forward:
        logits: ``(B, K, H, W)`` raw scores; target: ``(B, H, W)`` integer labels
        in ``0..K-1`` or ``ignore_index``; images: optional ``(B, C, H, W)`` model
        input (for the smoothness term).  Returns a scalar tensor.
    """

    def __init__(
        self,
        num_classes: int,
        ce_weight: float = 0.5,
        dice_weight: float = 0.5,
        include_background: bool = True,
        smooth: float = 1e-5,
        ignore_index: int | None = UNLABELLED,
        smoothness_weight: float = 0.0,
        smoothness_sigma: float = 0.05,
        smoothness_radius: int = 1,
        entropy_weight: float = 0.0,
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
        if smoothness_weight < 0 or smoothness_sigma <= 0:
            raise ValueError(f"smoothness weight must be >= 0 and sigma > 0, got {smoothness_weight}, {smoothness_sigma}")
        self.smoothness_weight = float(smoothness_weight)
        self.smoothness_sigma = float(smoothness_sigma)
        self.smoothness_radius = int(smoothness_radius)
        if self.smoothness_radius < 1:
            raise ValueError(f"smoothness radius must be >= 1 px, got {smoothness_radius}")
        if entropy_weight < 0:
            raise ValueError(f"entropy weight must be >= 0, got {entropy_weight}")
        self.entropy_weight = float(entropy_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
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
        if self.smoothness_weight and images is not None and labelled is not None and not bool(labelled.all()):
            loss = loss + self.smoothness_weight * edge_aware_smoothness(logits, images, self.smoothness_sigma,
                                                                            self.smoothness_radius)
        if self.entropy_weight and labelled is not None and not bool(labelled.all()):
            loss = loss + self.entropy_weight * unlabelled_entropy(logits, labelled)
        return loss


def unlabelled_entropy(logits: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the softmax over the pixels not ``labelled`` ``(B, H, W)``, divided by log K (0..1).

    Minimising it asks the model to decide on the pixels nobody labelled (entropy minimisation, a
    semi-supervised classic); 0 when every pixel is labelled.
    """
    logp = logits.float().log_softmax(dim=1)
    entropy = -(logp.exp() * logp).sum(1) / math.log(logits.shape[1])
    unlabelled = (~labelled).to(entropy.dtype)
    return (entropy * unlabelled).sum() / unlabelled.sum().clamp(min=1)


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


def typical_intensity_step(images: torch.Tensor) -> float:
    """Median of the non-zero absolute 4-neighbour intensity differences of ``images`` ``(B, C, H, W)``.

    The image's own scale of "similar neighbours" (image units): exact zeros (padding,
    air clipped by the CT window) are left out.  A blurred or resampled image gets a
    smaller value than a sharp one; a noisy one a larger.  1.0 when no pair differs.
    """
    images = images.float()
    steps = torch.cat([(images[..., 1:, :] - images[..., :-1, :]).abs().reshape(-1),
                       (images[..., :, 1:] - images[..., :, :-1]).abs().reshape(-1)])
    steps = steps[steps > 0]
    if steps.numel() > 1_000_000:  # a strided subsample keeps the median exact enough and cheap
        steps = steps[:: steps.numel() // 1_000_000 + 1]
    return float(steps.median()) if steps.numel() else 1.0


def edge_aware_smoothness(logits: torch.Tensor, images: torch.Tensor, sigma: float = 0.05,
                          radius: int = 1) -> torch.Tensor:
    """Weighted mean over pixel pairs of ``w * |p_i - p_j|^2``, ``w = exp(-|I_i - I_j|^2 / (2 sigma^2))``.

    Args:
        logits: ``(B, K, H, W)``; images: ``(B, C, H, W)`` in [0, 1] (channels summed in ``|I_i - I_j|^2``).
        sigma: intensity difference (image units) at which a pair's weight falls to ``exp(-1/2)``;
            0.05 is 20 HU in the default [-125, 275] HU CT window.
        radius: pairs up to this distance (px).  1 = the 4 neighbours; larger radii add farther
            pairs with a spatial weight ``exp(-(d^2 - 1) / (2 (radius / 2)^2))`` (1 for neighbours),
            normalised so the term keeps the scale of the 4-neighbour one.

    Returns a scalar: 0 for a prediction constant over every region of constant
    intensity, large where the class changes inside homogeneous tissue.
    """
    probs = logits.float().softmax(dim=1)
    images = images.float()
    total = probs.new_zeros(())
    h, w = probs.shape[2:]
    offsets = _pair_offsets(radius)
    norm = sum(g for _, _, g in offsets) / 2.0
    for dy, dx, g in offsets:  # dy >= 0 (half plane); dx of either sign
        xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
        dp = (probs[..., dy:, xs] - probs[..., : h - dy, xd]).pow(2).sum(1)
        di = (images[..., dy:, xs] - images[..., : h - dy, xd]).pow(2).sum(1)
        total = total + (g / norm) * (torch.exp(-di / (2 * sigma**2)) * dp).mean()
    return total


def _pair_offsets(radius: int) -> list[tuple[int, int, float]]:
    """``(dy, dx, spatial weight)`` of each pixel pair once (half plane), distance <= ``radius``.

    Radius 1 gives the 4 neighbours, ``(0, 1)`` and ``(1, 0)``, each with weight 1.
    """
    scale = radius / 2.0
    return [(dy, dx, math.exp(-(dy * dy + dx * dx - 1) / (2 * scale * scale)))
            for dy in range(0, radius + 1) for dx in range(-radius, radius + 1)
            if (dy > 0 or dx > 0) and dy * dy + dx * dx <= radius * radius]
