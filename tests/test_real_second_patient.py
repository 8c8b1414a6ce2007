"""The real second patient: the DICOM series in ../shared/data with TotalSegmentator's labels
(bench/data/totalsegmentator), a NIfTI on the same grid in another voxel order.

Checks that these labels land on the right voxels of the series (the contract of issue 9's
``medseg finetune --image B_dicom --labels B_labels.nii.gz``) and that the benchmark's id map
gives the Synapse organs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
second_patient = pytest.importorskip("second_patient")


@pytest.fixture(scope="module")
def b_labels(tmp_path_factory) -> Path:
    return second_patient.synapse_labels(second_patient.DATA / "example_seg_dicom.nii.gz", "total",
                                         tmp_path_factory.mktemp("b") / "b_labels.nii.gz")


def test_labels_land_on_the_organs_of_the_series(shared_data, b_labels):
    import nibabel as nib

    from napari_medseg.io import read_volume

    ct, labels = read_volume(shared_data / "ct_dicom"), read_volume(b_labels)
    assert labels.array.shape == ct.array.shape == (20, 512, 512)
    np.testing.assert_allclose(labels.geometry.world_affine(), ct.geometry.world_affine(), atol=1e-3)
    lab = labels.array
    # the file's rows run the other way from the DICOM's: read naively they would not fit
    raw = np.asanyarray(nib.load(str(b_labels)).dataobj)
    assert not np.array_equal(np.transpose(raw, (2, 1, 0)) == 5, lab == 5)
    for value, low, high in ((5, 20, 250), (7, 20, 250), (1, 20, 700)):  # liver, spleen (contrast), aorta
        hu = ct.array[lab == value]
        assert hu.size > 1000
        inside = np.mean((hu > low) & (hu < high))
        assert inside > 0.9, (value, inside)
        hu_flipped = ct.array[lab[:, ::-1] == value]
        flipped = np.mean((hu_flipped > low) & (hu_flipped < high))
        assert flipped < inside - 0.2, (value, flipped, inside)  # the check can tell a wrong row order
    present = set(np.unique(lab).tolist())
    assert present == {0, 1, 5, 6, 7, 8}, present  # aorta, liver, pancreas, spleen, stomach; no kidney, gallbladder


def test_finetune_takes_the_real_series_with_its_labels(shared_data, b_labels, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "napari_medseg.cli", "finetune", "--image", str(shared_data / "ct_dicom"),
         "--labels", str(b_labels), "--slices", "2,17", "--model", "dcaunet", "--label-set", "synapse",
         "--steps", "2", "--no-replay", "--store", str(tmp_path / "store"), "-o", str(tmp_path / "b.safetensors")],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 steps in" in done.stdout
    assert (tmp_path / "b.safetensors").is_file()


def test_trunk_rule_cuts_off_both_arms_and_keeps_every_organ(shared_data, b_labels):
    """The patient's arms lie beside the abdomen, the right one against the trunk through fat (a 2 px
    opening kept it as trunk); the rule in mm must drop both arms on every slice and no organ voxel."""
    from napari_medseg.io import read_volume
    from napari_medseg.postprocess import trunk_mask
    from napari_medseg.scribbles import CT_BODY_THRESHOLD_HU

    ct, labels = read_volume(shared_data / "ct_dicom"), read_volume(b_labels)
    mask = trunk_mask(ct.array, ct.geometry.spacing)
    assert not ((labels.array > 0) & ~mask).any()
    body = ct.array > CT_BODY_THRESHOLD_HU
    for side in (slice(0, 60), slice(445, 512)):  # the arms' columns (the trunk spans about 69-434)
        assert body[:, :, side].sum(axis=(1, 2)).min() > 1000  # an arm on every slice
        assert not mask[:, :, side].any()
