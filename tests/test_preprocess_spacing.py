"""The ``"spacing"`` resize policy: resample to a target pixel size in mm, pad, and back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_medseg.preprocess import (
    Preprocessing,
    inplane_spacing,
    labels_to_model_size,
    logits_to_native,
    model_input_hw,
    to_model_size,
)

SPACING2 = Preprocessing(modality="ct", resize_policy="spacing", target_spacing=2.0)


def blobs(hw=(37, 53)):
    """Integer labels (H, W): two rectangles and a disc, away from the borders."""
    lab = np.zeros(hw, np.int64)
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    lab[5:17, 6:20] = 1
    lab[20:33, 30:48] = 2
    lab[(yy - 10) ** 2 + (xx - 38) ** 2 < 30] = 3
    return lab


def centroid(mask):
    return np.array(np.nonzero(mask)).mean(axis=1)


@pytest.mark.parametrize(
    "hw, spacing",
    [((37, 53), (0.7, 1.3)),   # non-square, odd, shrinks (antialiased)
     ((37, 53), (3.0, 2.5)),   # grows
     ((41, 57), (1.1, 0.6)),   # non-square the other way, odd
     ((37, 53), (2.0, 2.0))],  # already at the target: pad only
)
def test_logits_round_trip_land_on_the_same_pixels(hw, spacing):
    lab = blobs(hw)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(lab), 4).permute(2, 0, 1)[None].float() * 10
    x, info = to_model_size(onehot, SPACING2, 32, spacing)
    expected_mid = tuple(max(1, round(n * s / 2.0)) for n, s in zip(hw, spacing))
    assert info.resampled_hw == expected_mid
    assert x.shape[-2:] == info.model_hw == tuple(-(-n // 32) * 32 for n in expected_mid)
    assert x[..., expected_mid[0]:, :].abs().max() == 0 and x[..., expected_mid[1]:].abs().max() == 0  # zero padding
    back = logits_to_native(x, info)
    assert back.shape == onehot.shape
    pred = back.argmax(1)[0].numpy()
    for k in (1, 2, 3):
        # each organ comes back where it was: centroid within half a model pixel, overlap high
        tol = 0.5 * 2.0 / min(spacing) + 0.5
        assert np.abs(centroid(pred == k) - centroid(lab == k)).max() <= tol
        inter = np.logical_and(pred == k, lab == k).sum()
        assert 2 * inter / ((pred == k).sum() + (lab == k).sum()) > 0.75
    if spacing == (2.0, 2.0):
        assert torch.equal(back, onehot)  # no resampling at all


def test_physical_size_is_what_the_model_sees():
    """The same 20 mm square is ~10 model pixels wide whatever the scan's pixel size."""
    for s in (0.6, 0.8, 1.0, 3.0):
        n = int(round(60 / s))
        img = torch.zeros(1, 1, n, n)
        side = int(round(20 / s))
        img[..., n // 2 - side // 2 : n // 2 - side // 2 + side, n // 2 - side // 2 : n // 2 - side // 2 + side] = 1
        x, info = to_model_size(img, SPACING2, 32, (s, s))
        width = (x[0, 0, :, : info.resampled_hw[1]] > 0.5).sum(dim=1).max().item()
        assert abs(width - 10) <= 1, (s, width)


def test_labels_follow_the_image_on_non_square_pixels():
    lab = blobs((37, 53))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(lab), 4).permute(2, 0, 1)[None].float()
    x, info = to_model_size(onehot, SPACING2, 32, (0.7, 1.3))
    resized = labels_to_model_size(torch.from_numpy(lab)[None], info)
    assert resized.shape[-2:] == info.model_hw and resized.dtype == torch.int64
    mid = info.resampled_hw
    agree = (x.argmax(1)[0, : mid[0], : mid[1]] == resized[0, : mid[0], : mid[1]]).float().mean()
    assert agree > 0.9
    assert resized[0, mid[0]:].sum() == 0 and resized[0, :, mid[1]:].sum() == 0


def test_volume_spacing_triplet_uses_its_last_two():
    assert inplane_spacing((5.0, 0.7, 1.3), SPACING2) == (0.7, 1.3)
    assert model_input_hw((512, 512), SPACING2, 32, (2.5, 0.6, 0.6)) == (160, 160)  # 154 -> 160


@pytest.mark.parametrize(
    "spacing, why",
    [(None, "has none"), ((0.0, 0.7), "not positive"), ((math.nan, 0.7), "not positive"),
     ((0.7, -1.0), "not positive"), ((0.7,), "neither"), ("abc", "not a list of numbers"),
     ((0.7, math.inf), "not positive")],
)
def test_missing_spacing_is_a_one_line_error(spacing, why):
    with pytest.raises(ValueError) as err:
        to_model_size(torch.zeros(1, 1, 8, 8), SPACING2, 32, spacing)
    msg = str(err.value)
    assert "\n" not in msg and why in msg and "2 mm" in msg and "spacing" in msg


def test_fixed_and_native_unchanged_and_ignore_spacing():
    x = torch.rand(2, 1, 37, 53)
    for prep in (Preprocessing(resize_policy="native"), Preprocessing(resize_policy="fixed", input_size=64)):
        a, ia = to_model_size(x, prep, 32)
        b, ib = to_model_size(x, prep, 32, (0.7, 1.3))
        c, ic = to_model_size(x, prep, 32, None)
        assert torch.equal(a, b) and torch.equal(a, c) and ia == ib == ic and ia.resampled_hw is None
        assert "target_spacing" not in prep.to_dict()  # old checkpoint metadata stays byte-identical
    assert to_model_size(x, Preprocessing(resize_policy="native"), 32)[0].shape[-2:] == (64, 64)
    old = {"modality": "ct", "window": [-125, 275], "percentiles": [0.5, 99.5], "resize_policy": "native",
           "input_size": 224}
    assert Preprocessing.from_dict(old) == Preprocessing(resize_policy="native")


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(resize_policy="spacing"), "needs target_spacing"),
     (dict(resize_policy="spacing", target_spacing=0.0), "needs target_spacing"),
     (dict(resize_policy="spacing", target_spacing=math.nan), "needs target_spacing"),
     (dict(resize_policy="native", target_spacing=2.0), "only used by resize_policy 'spacing'"),
     (dict(resize_policy="bogus"), "resize_policy must be one of")],
)
def test_preprocessing_rejects_bad_spacing_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Preprocessing(**kwargs)


def test_spacing_checkpoint_saved_and_loaded(tmp_path):
    from _segment_helpers import tiny_model
    from napari_medseg.checkpoint import load_checkpoint, read_checkpoint_info
    from napari_medseg.checkpoint import save_checkpoint
    from napari_medseg.labels import SYNAPSE

    prep = Preprocessing(modality="ct", resize_policy="spacing", target_spacing=2.5)
    path = tmp_path / "spacing.safetensors"
    save_checkpoint(path, tiny_model("dcaunet"), label_set=SYNAPSE, preprocessing=prep, provenance={})
    assert read_checkpoint_info(path).preprocessing == prep
    _, info = load_checkpoint(path)
    assert info.preprocessing.resize_policy == "spacing" and info.preprocessing.target_spacing == 2.5
    assert Preprocessing.from_dict(prep.to_dict()) == prep


def test_shrinking_labels_takes_the_area_majority_not_the_nearest_pixel():
    """0.8 -> 3.2 mm (4x): an output pixel over columns (2, 2, 1, 2) is 2; nearest sampling hit the 1."""
    import torch
    import torch.nn.functional as F

    from napari_medseg.preprocess import shrink_labels

    labels = torch.ones(1, 8, 8, dtype=torch.uint8)
    labels[:, :, 4:6] = 2
    labels[:, :, 7] = 2
    labels[:, 4:, :] = 255  # unlabelled rows stay unlabelled
    out = shrink_labels(labels, (2, 2))
    assert out.dtype == torch.uint8 and out.tolist() == [[[1, 2], [255, 255]]]
    nearest = F.interpolate(labels[:, None].float(), size=(2, 2), mode="nearest-exact")[:, 0]
    assert nearest[0, 0, 1] == 1  # what the old sampling gave


def test_spacing_policy_shrinks_training_labels_by_area_majority():
    import torch

    from napari_medseg.preprocess import Preprocessing, labels_to_model_size, to_model_size

    prep = Preprocessing(modality="ct", resize_policy="spacing", target_spacing=3.2)
    image = torch.zeros(1, 1, 64, 64)
    labels = torch.zeros(1, 64, 64, dtype=torch.uint8)
    labels[:, 8:40, 8:40] = 3
    labels[:, 8:40, 22:40:4] = 0  # thin background lines, on the columns nearest sampling hits
    _, info = to_model_size(image, prep, 1, (0.8, 0.8))
    out = labels_to_model_size(labels, info)
    assert tuple(out.shape[-2:]) == info.model_hw and info.resampled_hw == (16, 16)
    assert (out[0, 2:10, 2:10] == 3).all()  # 3 of 4 pixels are organ in every 4x4 block
    nearest = torch.nn.functional.interpolate(labels[:, None].float(), size=(16, 16), mode="nearest-exact")[0, 0]
    assert (nearest[2:10, 5:10] == 0).all()  # nearest sampling turned the organ into stripes


def test_shrinking_partial_labels_keeps_thin_strokes():
    """A 1 px stroke at 4x shrink covers a quarter of each pixel it crosses: kept, not voted away by 255."""
    import torch

    from napari_medseg.preprocess import shrink_labels

    labels = torch.full((1, 8, 8), 255, dtype=torch.uint8)
    labels[:, :, 1] = 3  # a vertical organ stroke, 1 px wide
    labels[:, 0:4, 6] = 0  # a background stroke in the upper right
    labels[:, 7, 4] = 0  # a single background pixel grazes the lower right cell (1/16 of it)
    out = shrink_labels(labels, (2, 2))
    assert out.tolist() == [[[3, 0], [3, 255]]]
    # a labelled cell takes the majority among its labelled values, 255 not counted
    labels[:, 0:4, 0] = 5
    labels[:, 0:4, 2:4] = 5
    assert shrink_labels(labels, (2, 2))[0, 0, 0] == 5


def test_modality_guess_holds_for_a_ct_cropped_inside_the_body(sample_ct):
    """Air gives a CT away; a CT cropped inside the body has none, but fat next to denser tissue does."""
    from pathlib import Path

    from napari_medseg.io import read_volume
    from napari_medseg.preprocess import guess_modality

    ct = read_volume(sample_ct).array.astype(np.float32)
    where = np.argwhere(ct > -300)  # the body's bounding box, then its middle half along each axis
    start, stop = where.min(0), where.max(0)
    lo, hi = start + (stop - start) // 4, stop - (stop - start) // 4
    assert guess_modality(ct) == "ct"
    crop = ct[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    assert np.percentile(crop, 1) > -500  # no air left in the crop
    assert guess_modality(crop) == "ct"
    mr_path = Path(__file__).resolve().parents[1] / "bench" / "data" / "totalsegmentator" / "example_mr_sm.nii.gz"
    if mr_path.exists():
        mr = read_volume(mr_path).array.astype(np.float32)
        assert guess_modality(mr) == "mr"
        assert guess_modality((mr - mr.mean()) / mr.std()) == "mr"  # z-scored MR: negatives, but small
    assert guess_modality(np.abs(ct) + 10) == "mr"  # no negative values at all
