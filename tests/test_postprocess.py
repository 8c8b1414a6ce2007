"""Largest-component post-processing: islands go, the user's slices and what touches them stay."""

import numpy as np
import pytest

from napari_medseg.labels import ACDC, SYNAPSE, LabelSet
from napari_medseg.postprocess import largest_component_only, one_piece_organs


def two_organs():
    """(6, 20, 20): organ 5 as a big block plus a far island; organ 1 as one block."""
    lab = np.zeros((6, 20, 20), np.uint8)
    lab[1:5, 2:10, 2:10] = 5
    lab[3, 16:18, 16:18] = 5  # island
    lab[0:6, 12:14, 2:4] = 1
    return lab


def test_islands_become_background_and_other_organs_stay():
    lab = two_organs()
    out, removed = largest_component_only(lab, [1, 5])
    assert removed == {5: 4}
    assert (out[3, 16:18, 16:18] == 0).all()
    assert (out[1:5, 2:10, 2:10] == 5).all() and (out[:, 12:14, 2:4] == 1).all()
    assert (lab[3, 16:18, 16:18] == 5).all()  # the input is not modified
    # organs not asked for are left alone
    out, removed = largest_component_only(lab, [1])
    np.testing.assert_array_equal(out, lab)
    assert removed == {}


def test_pieces_on_or_touching_protected_slices_are_kept():
    lab = two_organs()
    out, removed = largest_component_only(lab, [5], protected=[3])
    np.testing.assert_array_equal(out, lab)  # the island lies on the user's slice 3
    lab[4, 16:18, 16:18] = 5
    lab[5, 18:20, 18:20] = 5  # the island now spans slices 3-5, diagonally joined to slice 5
    out, _ = largest_component_only(lab, [5], protected=[5])
    assert (out[3:5, 16:18, 16:18] == 5).all()  # touches protected slice 5 through 26-connectivity
    out, removed = largest_component_only(lab, [5], protected=[0])
    assert removed == {5: 12} and (out[3:6, 16:20, 16:20] == 0).all()


def test_diagonal_neighbours_across_slices_are_one_piece():
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[0, 2:4, 2:4] = 3
    lab[1, 4:6, 4:6] = 3  # touches slice 0 only at a corner (thick slices, oblique organ)
    out, removed = largest_component_only(lab, [3])
    np.testing.assert_array_equal(out, lab)


def test_which_organs_are_one_piece():
    assert one_piece_organs(SYNAPSE) == tuple(range(1, 9))
    assert one_piece_organs(ACDC) == (1, 2, 3)
    assert one_piece_organs(LabelSet.custom(["ribs", "lymph nodes"])) == ()
    renamed = LabelSet.from_dict({**SYNAPSE.to_dict(), "names": {"0": "background", "1": "ribs"}})
    assert one_piece_organs(renamed) == ()  # a built-in name with other organs is not trusted


def test_refuses_non_volume():
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        largest_component_only(np.zeros((4, 4), np.uint8), [1])


def test_segment_volume_applies_it_around_locked_slices(tmp_path):
    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume
    from _segment_helpers import save_tiny

    rng = np.random.default_rng(3)
    vol = rng.normal(0, 300, (8, 40, 40)).astype(np.int16)  # noise: a random model answers with islands
    loaded = load_checkpoints([save_tiny(tmp_path / "t.safetensors", "dcaunet", seed=11)])
    previous = np.zeros(vol.shape, np.uint8)
    previous[2, 30:33, 30:33] = 4  # the user's own small piece on locked slice 2
    kw = dict(device="cpu", uncertainty=False, locked=[2], previous=previous)
    raw = run_segmentation(segment_volume(vol, loaded, largest_component=False, **kw)).labels
    post = run_segmentation(segment_volume(vol, loaded, **kw))
    from napari_medseg.postprocess import trunk_mask

    expected, removed = largest_component_only(raw, SYNAPSE.organs, protected=[2], inside=trunk_mask(vol))
    assert removed and sum(removed.values()) > 0  # a random tiny model leaves islands to remove
    np.testing.assert_array_equal(post.labels, expected)
    assert post.islands_removed == removed
    np.testing.assert_array_equal(post.labels[2], previous[2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_plain_scipy_labelling(seed):
    """The compressed-grid labelling keeps exactly what labelling the whole volume keeps."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    lab = (rng.random((12, 30, 30)) < 0.04).astype(np.uint8) * rng.integers(1, 4, (12, 30, 30)).astype(np.uint8)
    lab[2:9, 5:15, 5:15] = 2  # one big piece among scattered voxels
    protected = [4, 10]
    out, removed = largest_component_only(lab, [1, 2, 3], protected=protected)
    expected = lab.copy()
    for value in (1, 2, 3):
        comp, n = ndimage.label(lab == value, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(comp.ravel())[1:]
        keep = {int(np.argmax(sizes)) + 1} | set(np.unique(comp[protected]).tolist()) - {0}
        drop = (comp > 0) & ~np.isin(comp, list(keep))
        expected[drop] = 0
        assert removed.get(value, 0) == int(drop.sum())
    np.testing.assert_array_equal(out, expected)


def _ct_with_an_arm():
    """(6, 48, 64) HU: a trunk (0 HU) holding a gas pocket (-1000), an arm (0 HU) apart, air around."""
    yy, xx = np.mgrid[:48, :64]
    ct = np.full((6, 48, 64), -1000, np.int16)
    trunk = ((yy - 24) / 18) ** 2 + ((xx - 26) / 20) ** 2 <= 1
    arm = ((yy - 24) / 6) ** 2 + ((xx - 57) / 5) ** 2 <= 1
    ct[:, trunk | arm] = 0
    ct[:, 20:26, 20:26] = -1000  # gas in the bowel: a hole inside the trunk
    return ct, trunk, arm


def test_trunk_mask_drops_the_arm_and_keeps_gas_inside():
    from napari_medseg.postprocess import trunk_mask

    ct, trunk, arm = _ct_with_an_arm()
    mask = trunk_mask(ct)
    assert mask.shape == ct.shape
    assert not mask[:, arm].any()
    assert mask[:, 22, 22].all()  # the gas pocket is inside the body
    assert mask[:, trunk].all()
    assert trunk_mask(np.full((2, 8, 8), -1000, np.int16)) is None


def test_organs_in_an_arm_go_even_when_they_are_the_largest_piece():
    from napari_medseg.postprocess import trunk_mask

    ct, trunk, arm = _ct_with_an_arm()
    labels = np.zeros(ct.shape, np.uint8)
    labels[:5, arm] = 8  # "spleen" in the arm: the largest piece
    labels[2:4, 30:33, 30:33] = 8  # the small true one in the trunk
    labels[:, 21:24, 21:24] = 7  # "stomach" over gas: kept
    labels[5, 22:26, 56:59] = 1  # the user painted aorta in the arm on locked slice 5
    out, removed = largest_component_only(labels, SYNAPSE.organs, protected=[5], inside=trunk_mask(ct))
    assert (out[:, arm] != 8).all() and (out[2:4, 30:33, 30:33] == 8).all()
    assert (out[:, 21:24, 21:24] == 7).all()
    np.testing.assert_array_equal(out[5], labels[5])  # protected slice untouched
    assert removed[8] == int((labels[:5][:, arm] == 8).sum())
    with pytest.raises(ValueError, match="inside mask"):
        largest_component_only(labels, SYNAPSE.organs, inside=np.ones((1, 2, 3), bool))


def _arm_resting_on_the_trunk():
    """(2, 140, 220) HU at 2 mm pixels: a trunk 300 x 240 mm with a gas pocket open to the outside, an arm
    70 mm across touching it through a 10 mm bridge of fat, an air pocket enclosed between them, a 4 mm
    couch below; air around."""
    yy, xx = np.mgrid[:140, :220]
    trunk = ((yy - 70) / 60) ** 2 + ((xx - 95) / 75) ** 2 <= 1
    arm = (yy - 70) ** 2 + (xx - 190) ** 2 <= 17.5**2
    bridge = (np.abs(yy - 60) <= 2) & (xx >= 160) & (xx <= 180)
    ring = (np.abs(yy - 84) <= 2) & (xx >= 160) & (xx <= 180)  # closes an air pocket between arm and trunk
    couch = (yy >= 134) & (yy <= 135)
    ct = np.full((2, 140, 220), -1000, np.int16)
    ct[:, trunk | arm | bridge | ring | couch] = 0
    ct[:, bridge | ring] = -100  # fat
    gas = ((yy - 70) ** 2 + (xx - 35) ** 2 <= 8**2) | ((np.abs(yy - 70) <= 1) & (xx >= 18) & (xx <= 35))
    ct[:, gas] = -1000  # gas in the bowel that a 6 mm gap in the thin wall joins to the air outside
    return ct, trunk & ~gas, arm, couch, gas


def test_an_arm_resting_on_the_trunk_is_cut_off_in_millimetres():
    from napari_medseg.postprocess import trunk_mask

    ct, trunk, arm, couch, gas = _arm_resting_on_the_trunk()
    mask = trunk_mask(ct, (5.0, 2.0, 2.0))
    assert mask[:, trunk].all() and mask[:, gas & (np.abs(np.mgrid[:140, :220][1] - 35) <= 8)].all()
    assert not mask[:, arm].any() and not mask[:, couch].any()
    # in pixels of 0.4 mm the same grid is a body 5x smaller: the 8 mm erosion leaves the "arm" no
    # core, and it stays with the trunk (the rule errs towards keeping)
    small = trunk_mask(ct, (0.4, 0.4))
    assert small[:, arm].all() and small[:, trunk].all()


def test_both_legs_are_kept():
    from napari_medseg.postprocess import trunk_mask

    yy, xx = np.mgrid[:40, :80]
    ct = np.full((2, 40, 80), -1000, np.int16)
    left, right = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 144), ((yy - 20) ** 2 + (xx - 60) ** 2 <= 121)
    ct[:, left | right] = 0
    mask = trunk_mask(ct)
    assert mask[:, left].all() and mask[:, right].all()
