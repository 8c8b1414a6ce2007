"""Dice / HD95 against hand-computed cases and an independent brute-force implementation."""

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_medseg.retrain.dice import batch_dice, dice, dice_from_counts
from training.metrics import (
    hd95,
    surface,
    transunet_metric_percase,
    volume_metrics,
)


def _brute_hd95(pred, ref, spacing):
    """Independent: surface voxels by explicit 6-neighbour test, distances with a k-d tree."""

    def border(mask):
        pts = []
        padded = np.pad(mask, 1)
        for idx in zip(*np.nonzero(mask)):
            p = tuple(i + 1 for i in idx)
            for axis in range(mask.ndim):
                for step in (-1, 1):
                    q = list(p)
                    q[axis] += step
                    if not padded[tuple(q)]:
                        pts.append(idx)
                        break
                else:
                    continue
                break
        return np.array(pts, dtype=float) * np.asarray(spacing)

    a, b = border(pred), border(ref)
    d_ab = cKDTree(b).query(a)[0]
    d_ba = cKDTree(a).query(b)[0]
    return float(np.percentile(np.concatenate([d_ab, d_ba]), 95))


def test_dice_hand_computed():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :3] = True  # 3 pixels
    b[0, 1:] = True  # 3 pixels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(a, a) == 1.0
    assert math.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))
    assert dice(a, np.zeros_like(a)) == 0.0


def test_hd95_hand_computed_shift_in_mm():
    # a 5x5x5 cube shifted by 2 voxels along x: every surface distance is 0 or 2 voxels;
    # with 3 mm spacing along x the 95th percentile is 6 mm
    ref = np.zeros((12, 12, 12), bool)
    ref[3:8, 3:8, 3:8] = True
    pred = np.roll(ref, 2, axis=2)
    assert hd95(pred, ref) == pytest.approx(2.0)
    assert hd95(pred, ref, spacing=(1.0, 1.0, 3.0)) == pytest.approx(6.0)
    assert hd95(ref, ref, spacing=(2, 2, 2)) == 0.0


def test_surface_of_cube_is_hollow():
    m = np.zeros((7, 7, 7), bool)
    m[1:6, 1:6, 1:6] = True
    s = surface(m)
    assert s.sum() == 5**3 - 3**3
    assert not s[3, 3, 3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_bruteforce_kdtree(seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    ref = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((14, 20, 18)), 2) > 0.5)
    pred = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((14, 20, 18)), 2) > 0.5)
    assert ref.any() and pred.any()
    spacing = (2.5, 0.8, 1.1)
    assert hd95(pred, ref, spacing) == pytest.approx(_brute_hd95(pred, ref, spacing), rel=1e-9)


def test_transunet_rules():
    empty = np.zeros((3, 5, 5), np.uint8)
    organ = empty.copy()
    organ[1, 1:3, 1:3] = 1
    assert transunet_metric_percase(organ, empty) == (1.0, 0.0)  # prediction where the reference is empty
    assert transunet_metric_percase(empty, organ) == (0.0, 0.0)
    assert transunet_metric_percase(empty, empty) == (0.0, 0.0)
    d, h = transunet_metric_percase(organ, organ)
    assert (d, h) == (1.0, 0.0)


def test_volume_metrics_per_label_and_conventions():
    ref = np.zeros((6, 10, 10), np.uint8)
    ref[1:4, 2:6, 2:6] = 1
    ref[2:5, 6:9, 6:9] = 2
    pred = ref.copy()
    pred[pred == 2] = 0  # organ 2 missed
    pred[0, 0, 0] = 3  # organ 3 false positive, absent from the reference
    ours = volume_metrics(pred, ref, [1, 2, 3, 4], spacing=(3, 1, 1))
    assert ours[1] == (1.0, 0.0)
    assert ours[2][0] == 0.0 and math.isnan(ours[2][1])
    assert ours[3][0] == 0.0 and math.isnan(ours[3][1])
    assert math.isnan(ours[4][0])
    tu = volume_metrics(pred, ref, [1, 2, 3, 4], transunet_compatible=True)
    assert tu == {1: (1.0, 0.0), 2: (0.0, 0.0), 3: (1.0, 0.0), 4: (0.0, 0.0)}


def test_batch_dice_counts_match_numpy():
    import torch

    rng = np.random.default_rng(3)
    p = rng.integers(0, 4, size=(2, 9, 9))
    r = rng.integers(0, 4, size=(2, 9, 9))
    scores = dice_from_counts(batch_dice(torch.from_numpy(p), torch.from_numpy(r), 5))
    for k in range(4):
        assert scores[k] == pytest.approx(dice(p == k, r == k))
    assert math.isnan(scores[4])


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_hd95_bounding_box_crop_is_exact_at_volume_edges():
    # masks touching the volume border: the crop must not change the surfaces
    ref = np.zeros((6, 30, 30), bool)
    ref[:, :10, :12] = True
    pred = np.zeros_like(ref)
    pred[1:, 2:14, 3:9] = True
    spacing = (3.0, 0.7, 0.7)
    assert hd95(pred, ref, spacing) == pytest.approx(_brute_hd95(pred, ref, spacing), rel=1e-9)
