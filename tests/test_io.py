"""Geometry of napari_medseg.io, checked against nibabel and SimpleITK world coordinates.

The checks are independent of our own index bookkeeping: a canonical voxel's
world position is sent through nibabel's (or ITK's) inverse mapping, and the
voxel found there must hold the same value.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.io import (
    Geometry,
    VolumeReadError,
    VolumeWarning,
    layer_kwargs,
    list_dicom_series,
    read_volume,
)
from napari_medseg.labels import SYNAPSE

RNG = np.random.default_rng(0)
LPS = np.diag([-1.0, -1.0, 1.0])


def spl_to_ras(world_spl):
    """(S, P, L) mm -> RAS mm."""
    s, p, l = np.asarray(world_spl, float).T
    return np.stack([-l, -p, s], axis=-1)


def spl_to_lps(world_spl):
    return np.asarray(world_spl, float)[..., ::-1]


def sample_indices(shape, n=12):
    corners = [(0, 0, 0), tuple(s - 1 for s in shape)]
    rand = [tuple(int(RNG.integers(0, s)) for s in shape) for _ in range(n)]
    return corners + rand


def assert_matches_nibabel(vol, path):
    """Canonical voxel -> our world -> nibabel RAS -> source voxel: same value."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    inv = np.linalg.inv(img.affine)
    for idx in sample_indices(vol.geometry.shape):
        ras = spl_to_ras(vol.geometry.index_to_world(idx))
        src = inv[:3, :3] @ ras + inv[:3, 3]
        np.testing.assert_allclose(src, np.round(src), atol=1e-3)
        src = tuple(int(v) for v in np.round(src))
        assert data[src] == vol.array[idx], (idx, src)


def assert_matches_sitk(vol, image):
    """Canonical voxel -> our world (as LPS) -> ITK index: same value, same point back."""
    arr = sitk.GetArrayViewFromImage(image)  # (k, j, i)
    for idx in sample_indices(vol.geometry.shape):
        lps = spl_to_lps(vol.geometry.index_to_world(idx))
        itk_index = image.TransformPhysicalPointToIndex(tuple(float(v) for v in lps))
        assert arr[itk_index[::-1]] == vol.array[idx], (idx, itk_index)
        back = image.TransformIndexToPhysicalPoint(itk_index)
        np.testing.assert_allclose(back, lps, atol=1e-4)


# --------------------------------------------------------------- real files
def test_real_nifti_matches_nibabel_and_sitk(sample_ct):
    vol = read_volume(sample_ct)
    assert vol.array.shape == (30, 101, 122)
    assert vol.modality == "ct" and not vol.is_labels
    assert vol.geometry.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert not vol.geometry.oblique
    assert_matches_nibabel(vol, sample_ct)
    assert_matches_sitk(vol, sitk.ReadImage(str(sample_ct)))


def test_real_labels_open_as_synapse_labels(sample_labels):
    vol = read_volume(sample_labels)
    assert vol.is_labels and vol.array.dtype == np.uint8
    assert vol.label_set == SYNAPSE
    assert set(np.unique(vol.array)) == set(range(9))
    assert_matches_nibabel(vol, sample_labels)


def _assert_series_matches_sitk(folder):
    """``read_volume`` of the single series in ``folder`` agrees with SimpleITK's series reader."""
    series = list_dicom_series(folder)
    assert len(series) == 1
    vol = read_volume(folder)
    assert vol.array.shape[0] == series[0].num_files and vol.modality == "ct"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series[0].files))
    image = reader.Execute()
    assert_matches_sitk(vol, image)
    # canonical origin is voxel 0 of the canonical order, in (S, P, L)
    np.testing.assert_allclose(vol.geometry.spacing, np.asarray(image.GetSpacing())[::-1])
    return vol


def test_sample_dicom_series_matches_sitk_and_the_nifti(dicom_dir, sample_ct, tmp_path):
    vol = _assert_series_matches_sitk(dicom_dir)
    nifti = read_volume(sample_ct)
    assert vol.array.shape == nifti.array.shape == (30, 101, 122)
    np.testing.assert_array_equal(vol.array, nifti.array)
    np.testing.assert_allclose(vol.geometry.spacing, nifti.geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(vol.geometry.origin, nifti.geometry.origin, atol=1e-4)
    # the same series numbered from the feet up reads identically (the reader sorts by position)
    from dicom_fixtures import write_volume_as_dicom

    feet_first = write_volume_as_dicom(sample_ct, tmp_path / "feet_first", "1.2.826.0.1.3680043.10.2",
                                       superior_first=False)
    again = read_volume(feet_first)
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_allclose(again.geometry.origin, vol.geometry.origin, atol=1e-6)


def test_real_dicom_matches_sitk(real_dicom_dir):
    vol = _assert_series_matches_sitk(real_dicom_dir)
    assert vol.array.shape == (20, 512, 512)


def test_radiological_convention_on_sample(sample_labels):
    """Axial slices: patient right on the left, anterior at the top, slice index grows superior."""
    labels = read_volume(sample_labels).array
    half = labels.shape[2] / 2
    centroid = {v: np.argwhere(labels == v).mean(axis=0) for v in range(1, 9)}
    liver, spleen, stomach = centroid[5], centroid[7], centroid[8]
    kidney_l, kidney_r = centroid[3], centroid[4]
    assert liver[2] < half < spleen[2]  # liver (patient right) on screen left
    assert kidney_r[2] < half < kidney_l[2]
    assert stomach[1] < kidney_l[1]  # anterior organ in upper rows
    assert liver[0] > kidney_r[0]  # liver is superior to the right kidney


# ------------------------------------------------------- synthetic volumes
def _affine(linear, offset):
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = offset
    return m


def _rotation_z(degrees):
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


SYNTHETIC = {
    # name: RAS linear part (columns = source axes i, j, k)
    "ras": np.diag([1.5, 2.0, 3.0]),
    "lps_stored": np.diag([-1.5, -2.0, 3.0]),
    "flipped_si": np.diag([1.5, 2.0, -3.0]),
    "permuted_sagittal": np.array([[0, 0, -3.0], [1.5, 0, 0], [0, 2.0, 0]]),  # i->A, j->S, k->L
    "permuted_coronal": np.array([[2.0, 0, 0], [0, 0, 1.5], [0, -3.0, 0]]),  # i->R, j->I, k->A
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_orientations(tmp_path, name):
    linear = SYNTHETIC[name]
    data = RNG.integers(-1000, 1000, size=(7, 9, 11)).astype(np.int16)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, _affine(linear, [10.0, -20.0, 30.0])), str(path))
    vol = read_volume(path)
    g = vol.geometry
    assert not g.oblique
    # canonical axes grow towards S, P, L with positive spacing
    np.testing.assert_allclose(np.asarray(g.direction), np.eye(3), atol=1e-9)
    zooms = np.linalg.norm(linear, axis=0)
    assert sorted(g.spacing) == pytest.approx(sorted(zooms))
    assert_matches_nibabel(vol, path)
    # the world of voxel 0 is the most inferior, anterior, right corner of the box
    corners = np.array([[a, b, c] for a in (0, 6) for b in (0, 8) for c in (0, 10)], float)
    ras = corners @ linear.T + [10.0, -20.0, 30.0]
    spl = np.stack([ras[:, 2], -ras[:, 1], -ras[:, 0]], axis=1)
    np.testing.assert_allclose(g.origin, spl.min(axis=0), atol=1e-6)
    # display kwargs agree with the true geometry for straight volumes
    kw = layer_kwargs(vol)
    np.testing.assert_allclose(kw["scale"], g.spacing)
    np.testing.assert_allclose(kw["translate"], g.origin)


def test_flipped_and_permuted_copies_land_on_same_anatomy(tmp_path, sample_labels):
    """The same labels stored flipped / permuted with a compensating affine read identically."""
    img = nib.load(str(sample_labels))
    data = np.asanyarray(img.dataobj)
    ref = read_volume(sample_labels)
    n = data.shape
    flip_i = np.eye(4)
    flip_i[0, 0], flip_i[0, 3] = -1, n[0] - 1  # source index i' = n-1-i
    perm = np.eye(4)[[1, 2, 0, 3]]  # new index (a, b, c) is old (i, j, k) = (b, c, a)
    variants = {
        "flip_i": (data[::-1], img.affine @ flip_i),
        "flip_j": (data[:, ::-1], img.affine @ np.array([[1, 0, 0, 0], [0, -1, 0, n[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]])),
        "permute": (data.transpose(2, 0, 1), img.affine @ perm),
    }
    for name, (arr, affine) in variants.items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), affine), str(path))
        vol = read_volume(path)
        assert vol.geometry.source_axes != ref.geometry.source_axes or vol.geometry.source_flips != ref.geometry.source_flips
        np.testing.assert_array_equal(vol.array, ref.array, err_msg=name)
        np.testing.assert_allclose(vol.geometry.origin, ref.geometry.origin, atol=1e-4)
        np.testing.assert_allclose(vol.geometry.spacing, ref.geometry.spacing)


def test_oblique_volume_keeps_true_geometry_and_warns(tmp_path):
    linear = _rotation_z(12.0) @ np.diag([2.0, 2.0, 4.0])
    data = RNG.integers(0, 3000, size=(10, 12, 6)).astype(np.int16)
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, _affine(linear, [5.0, 6.0, 7.0])), str(path))
    with pytest.warns(VolumeWarning, match="oblique"):
        vol = read_volume(path)
    g = vol.geometry
    assert g.oblique and g.obliquity_degrees == pytest.approx(12.0, abs=1e-6)
    assert_matches_nibabel(vol, path)  # true world coordinates
    kw = layer_kwargs(vol)  # display: straightened
    np.testing.assert_allclose(kw["scale"], g.spacing)
    assert Geometry.from_dict(kw["metadata"]["medseg"]["geometry"]) == g


def test_itk_formats_match_nifti(tmp_path, sample_ct):
    ref = read_volume(sample_ct)
    image = sitk.ReadImage(str(sample_ct))
    for ext in (".nrrd", ".mha"):
        path = tmp_path / f"ct{ext}"
        sitk.WriteImage(image, str(path))
        vol = read_volume(path)
        np.testing.assert_array_equal(vol.array, ref.array)
        np.testing.assert_allclose(vol.geometry.origin, ref.geometry.origin, atol=1e-3)
        assert vol.modality == "ct"


def test_mha_labels_open_as_labels(tmp_path):
    labels = np.zeros((5, 6, 7), np.uint8)
    labels[1:3, 2:4, 3:6] = 3
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((0.5, 0.6, 0.7))
    path = tmp_path / "seg.mha"
    sitk.WriteImage(image, str(path))
    vol = read_volume(path)
    assert vol.is_labels and vol.label_set.name == "synapse"
    assert vol.geometry.spacing == pytest.approx((0.7, 0.6, 0.5))


def test_geometry_dict_round_trip(sample_ct):
    g = read_volume(sample_ct).geometry
    import json

    g2 = Geometry.from_dict(json.loads(json.dumps(g.to_dict())))
    assert g2 == g
    np.testing.assert_array_equal(g2.world_affine(), g.world_affine())
    arr = np.arange(np.prod(g.shape)).reshape(g.shape)
    np.testing.assert_array_equal(g.from_source(g.to_source(arr)), arr)


# ----------------------------------------------------------------------- 4D
def test_4d_nifti_has_time_axis_and_frames(tmp_path):
    data = RNG.integers(0, 500, size=(8, 9, 5, 4)).astype(np.int16)  # (i, j, k, t)
    affine = _affine(np.diag([-1.25, -1.25, 8.0]), [0, 0, 0])
    path = tmp_path / "cine.nii.gz"
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms((1.25, 1.25, 8.0, 30.0))
    nib.save(img, str(path))
    vol = read_volume(path)
    assert vol.is_4d and vol.array.shape == (4, 5, 9, 8) and vol.num_frames == 4
    assert vol.time_spacing == pytest.approx(30.0)
    frame = vol.frame(2)
    assert frame.array.shape == vol.geometry.shape
    # LPS-stored (negative RAS x, y): canonical x, y run with source i, j
    np.testing.assert_array_equal(frame.array, data[:, :, :, 2].transpose(2, 1, 0))
    np.testing.assert_array_equal(vol.frame(-1).array, vol.array[3])
    with pytest.raises(IndexError, match="frame 4"):
        vol.frame(4)
    kw = layer_kwargs(vol)
    assert kw["scale"][0] == 1.0 and len(kw["scale"]) == 4 and kw["translate"][0] == 0.0
    with pytest.raises(ValueError, match="no frames"):
        frame.frame(0)


# ------------------------------------------------------------- contrast
def test_display_contrast_ct_window_and_mr_percentiles(tmp_path, sample_ct):
    assert layer_kwargs(read_volume(sample_ct))["contrast_limits"] == (-160.0, 240.0)
    mr = RNG.gamma(2.0, 100.0, size=(6, 40, 40)).astype(np.float32)
    path = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(mr, np.eye(4)), str(path))
    vol = read_volume(path)
    assert vol.modality == "mr" and not vol.is_labels
    lo, hi = layer_kwargs(vol)["contrast_limits"]
    assert lo == pytest.approx(np.percentile(mr, 1), rel=1e-5)
    assert hi == pytest.approx(np.percentile(mr, 99), rel=1e-5)


def test_label_features_name_each_value(sample_labels):
    kw = layer_kwargs(read_volume(sample_labels))
    names = dict(zip(kw["features"]["index"].tolist(), kw["features"]["name"]))
    assert names[5] == "liver" and names[7] == "spleen" and names[0] == "background"
    assert kw["colormap"][5] == SYNAPSE.colors[5]
    assert kw["metadata"]["medseg"]["label_set"]["name"] == "synapse"


def test_many_integer_values_is_an_image_not_labels(tmp_path):
    data = np.arange(6 * 7 * 8, dtype=np.uint16).reshape(6, 7, 8)  # 336 distinct values
    path = tmp_path / "counts.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolumeWarning)
        assert not read_volume(path).is_labels


def test_custom_label_set_when_values_exceed_synapse(tmp_path):
    data = np.zeros((4, 4, 4), np.uint8)
    data[0, 0, 0], data[1, 1, 1] = 12, 3
    path = tmp_path / "many.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    vol = read_volume(path)
    assert vol.is_labels and vol.label_set.num_classes == 13
    assert vol.label_set.names[12] == "label 12"


def test_read_missing_path_raises(tmp_path):
    with pytest.raises(VolumeReadError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")


def test_scaled_big_endian_and_float_stored_files(tmp_path, sample_ct):
    ref = read_volume(sample_ct)
    img = nib.load(str(sample_ct))
    raw = (np.asanyarray(img.dataobj).astype(np.int32) + 1024).clip(0).astype(np.uint16)
    scaled = nib.Nifti1Image(raw, img.affine)
    scaled.header.set_slope_inter(1.0, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(scaled, str(path))
    vol = read_volume(path)
    assert vol.modality == "ct" and not vol.is_labels and vol.array.dtype.itemsize <= 4
    np.testing.assert_array_equal(vol.array, np.maximum(ref.array, -1024))

    big = nib.Nifti1Image(np.asanyarray(img.dataobj).astype(">i2"), img.affine)
    path = tmp_path / "big_endian.nii"
    nib.save(big, str(path))
    vol = read_volume(path)
    assert vol.array.dtype.isnative
    np.testing.assert_array_equal(vol.array, ref.array)

    labels = np.zeros((5, 6, 7), np.float32)
    labels[1:3, 1:4, 2:5] = 2.0
    path = tmp_path / "float_labels.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(path))
    vol = read_volume(path)
    assert vol.is_labels and vol.array.dtype == np.uint8 and vol.array.max() == 2


def test_binary_mask_is_not_named_as_an_organ(tmp_path):
    """A plain 0/1 mask gets a neutral name; 0..8 values get the Synapse organs."""
    import nibabel as nib

    from napari_medseg.io import read_volume

    mask = np.zeros((6, 5, 4), np.uint8)
    mask[2:4, 1:3, 1:3] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    assert read_volume(tmp_path / "mask.nii.gz").label_set.names[1] == "label 1"
    mask[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "organs.nii.gz")
    assert read_volume(tmp_path / "organs.nii.gz").label_set.name == "synapse"
