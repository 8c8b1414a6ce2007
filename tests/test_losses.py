"""CE + Dice loss: weights, hand-checked values, gradients."""


import pytest
import torch
import torch.nn.functional as F

from napari_medseg.retrain.losses import DiceCELoss, soft_dice_loss
from napari_medseg.scribbles import UNLABELLED


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


def _two_region_image():
    """(1, 1, 8, 8): left half dark, right half bright (a sharp edge between columns 3 and 4)."""
    image = torch.zeros(1, 1, 8, 8)
    image[..., 4:] = 0.8
    return image


def _split_logits(column: int, k: int = 2):
    """(1, k, 8, 8) confident logits: class 1 from ``column`` on, class 0 left of it."""
    logits = torch.full((1, k, 8, 8), -10.0)
    logits[:, 0, :, :column] = 10.0
    logits[:, 1, :, column:] = 10.0
    return logits


def test_edge_aware_smoothness_prefers_boundaries_on_edges():
    from napari_medseg.retrain.losses import edge_aware_smoothness

    image = _two_region_image()
    on_edge = edge_aware_smoothness(_split_logits(4), image, sigma=0.05)
    inside = edge_aware_smoothness(_split_logits(2), image, sigma=0.05)  # the class changes in flat tissue
    constant = edge_aware_smoothness(torch.zeros(1, 2, 8, 8), image, sigma=0.05)
    assert float(constant) == 0.0
    assert float(on_edge) < 1e-6 < float(inside)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_edge_aware_smoothness_with_a_radius_equals_the_sum_over_pairs(radius):
    """Against a brute-force sum over every pixel pair within ``radius``, with the documented weights."""
    import math

    from napari_medseg.retrain.losses import edge_aware_smoothness

    gen = torch.Generator().manual_seed(radius)
    logits, image, sigma = torch.randn(1, 3, 6, 7, generator=gen), torch.rand(1, 1, 6, 7, generator=gen), 0.2
    probs = logits.softmax(1)[0]
    sums, counts = {}, {}
    for y0 in range(6):
        for x0 in range(7):
            for y1 in range(6):
                for x1 in range(7):
                    dy, dx = y1 - y0, x1 - x0
                    if not (dy > 0 or (dy == 0 and dx > 0)) or dy * dy + dx * dx > radius * radius:
                        continue
                    w = math.exp(-float((image[0, 0, y1, x1] - image[0, 0, y0, x0]) ** 2) / (2 * sigma**2))
                    term = w * float((probs[:, y1, x1] - probs[:, y0, x0]).pow(2).sum())
                    sums[dy, dx] = sums.get((dy, dx), 0.0) + term
                    counts[dy, dx] = counts.get((dy, dx), 0) + 1
    spatial = {k: math.exp(-(k[0] ** 2 + k[1] ** 2 - 1) / (2 * (radius / 2) ** 2)) if radius > 1 else 1.0 for k in sums}
    norm = sum(spatial.values()) / 2
    expected = sum(spatial[k] / norm * sums[k] / counts[k] for k in sums)  # mean per offset, weighted
    assert len(sums) == {1: 2, 2: 6, 3: 14}[radius]
    assert float(edge_aware_smoothness(logits, image, sigma, radius)) == pytest.approx(expected, rel=1e-5)
    assert float(edge_aware_smoothness(torch.zeros(1, 3, 6, 7), image, sigma, radius)) == 0.0
    with pytest.raises(ValueError, match="radius"):
        DiceCELoss(3, smoothness_weight=1.0, smoothness_radius=0)


def test_smoothness_term_only_for_partial_batches_with_images():
    image = _two_region_image()
    logits = _split_logits(2).requires_grad_(True)
    full = torch.ones(1, 8, 8, dtype=torch.long)
    full[..., :4] = 0
    partial = torch.full((1, 8, 8), UNLABELLED, dtype=torch.long)
    partial[..., 0] = 0  # a background stroke on the left
    partial[..., 7] = 1  # an organ stroke on the right
    plain, smooth = DiceCELoss(2), DiceCELoss(2, smoothness_weight=10.0)
    assert float(smooth(logits, full, image)) == pytest.approx(float(plain(logits, full)))  # nothing unlabelled
    assert float(smooth(logits, partial)) == pytest.approx(float(plain(logits, partial)))  # no image given
    assert float(smooth(logits, partial, image)) > float(plain(logits, partial)) + 1e-3
    # the strokes alone are satisfied by either boundary; the term moves it towards the edge
    on_edge = _split_logits(4)
    assert float(smooth(on_edge, partial, image)) < float(smooth(logits, partial, image))
    with pytest.raises(ValueError, match="smoothness"):
        DiceCELoss(2, smoothness_weight=-1.0)


def test_finetune_config_checks_smoothness():
    from napari_medseg.retrain.config import FinetuneConfig

    assert FinetuneConfig().smoothness_weight > 0
    with pytest.raises(ValueError, match="smoothness_weight"):
        FinetuneConfig(smoothness_weight=float("nan"))
    with pytest.raises(ValueError, match="smoothness_sigma"):
        FinetuneConfig(smoothness_sigma=0)
    with pytest.raises(ValueError, match="smoothness_radius"):
        FinetuneConfig(smoothness_radius=0)


def test_typical_intensity_step_follows_blur_and_ignores_padding():
    import torch.nn.functional as F

    from napari_medseg.retrain.losses import typical_intensity_step

    gen = torch.Generator().manual_seed(0)
    sharp = 0.3 + 0.4 * torch.rand(2, 1, 40, 40, generator=gen)
    blurred = F.avg_pool2d(sharp, 3, stride=1, padding=1, count_include_pad=False)
    padded = F.pad(sharp, (0, 24, 0, 24))  # zero padding as at model size
    assert typical_intensity_step(blurred) < 0.6 * typical_intensity_step(sharp)
    assert abs(typical_intensity_step(padded) - typical_intensity_step(sharp)) < 0.02
    assert typical_intensity_step(torch.zeros(1, 1, 8, 8)) == 1.0


def test_automatic_smoothness_sigma_scales_with_the_slices():
    from napari_medseg.retrain.config import FinetuneConfig

    assert FinetuneConfig(smoothness_sigma=None).smoothness_sigma is None
    with pytest.raises(ValueError, match="smoothness_sigma_per_step"):
        FinetuneConfig(smoothness_sigma=None, smoothness_sigma_per_step=0)
