"""CE + Dice loss: weights, hand-checked values, gradients."""


import pytest
import torch
import torch.nn.functional as F

from napari_medseg.retrain.losses import DiceCELoss, soft_dice_loss


def test_weights_combine_ce_and_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    ce = F.cross_entropy(logits, target)
    d = soft_dice_loss(logits, target)
    assert DiceCELoss(3, 0.4, 0.6)(logits, target) == pytest.approx(float(0.4 * ce + 0.6 * d), rel=1e-6)
    assert DiceCELoss(3, 1.0, 0.0)(logits, target) == pytest.approx(float(ce), rel=1e-6)


def test_dice_loss_hand_computed():
    # perfect, confident prediction: Dice loss ~ 0; uniform prediction on a known target: computed by hand
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    target[0, 0, 0] = 1
    confident = torch.where(F.one_hot(target, 2).permute(0, 3, 1, 2).bool(), 30.0, -30.0)
    assert soft_dice_loss(confident, target) == pytest.approx(0.0, abs=1e-5)
    uniform = torch.zeros(1, 2, 2, 2)
    # p = 0.5 everywhere; class 0: inter 1.5, sum p^2 = 1, |g| = 3 -> 3/4; class 1: inter .5, 1 + 1 -> 1/2
    expected = 1 - (0.75 + 0.5) / 2
    assert soft_dice_loss(uniform, target, smooth=0) == pytest.approx(expected, rel=1e-6)


def test_gradient_flows_and_bad_shapes_raise():
    logits = torch.randn(1, 4, 5, 5, requires_grad=True)
    target = torch.randint(0, 4, (1, 5, 5))
    DiceCELoss(4)(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="logits"):
        DiceCELoss(3)(logits, target)
    with pytest.raises(ValueError, match="weights"):
        DiceCELoss(3, 0, 0)
