"""Reader probe, bad inputs, DICOM series handling and label export in the source geometry."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg._reader import napari_get_reader
from napari_medseg._writer import SaveRefused, write_labels as napari_write_labels
from napari_medseg.io import (
    VolumeReadError,
    VolumeWarning,
    layer_kwargs,
    list_dicom_series,
    read_volume,
    write_labels,
)
from napari_medseg.labels import SYNAPSE, LabelSet

from dicom_fixtures import write_dicom_series

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
RNG = np.random.default_rng(1)


# ------------------------------------------------------------ reader probe
def test_get_reader_accepts_supported_and_returns_layers(sample_ct, sample_labels, dicom_dir):
    for path in (sample_ct, sample_labels, dicom_dir):
        reader = napari_get_reader(str(path))
        assert callable(reader), path
    (data, kwargs, kind), = napari_get_reader(str(sample_labels))(str(sample_labels))
    assert kind == "labels" and data.shape == (30, 101, 122)
    assert kwargs["colormap"].color_dict[5] is not None
    (data, kwargs, kind), = napari_get_reader(str(dicom_dir))(str(dicom_dir))
    assert kind == "image" and kwargs["contrast_limits"] == (-160.0, 240.0)
    layers = napari_get_reader([str(sample_ct), str(sample_labels)])([str(sample_ct), str(sample_labels)])
    assert [k for _, _, k in layers] == ["image", "labels"]


def test_get_reader_returns_none_for_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    other = tmp_path / "pngs"
    other.mkdir()
    (other / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    for path in (tmp_path / "notes.txt", tmp_path / "empty", other, tmp_path / "missing.nii.gz", "http://x/y.nii"):
        assert napari_get_reader(str(path)) is None, path
    assert napari_get_reader(None) is None  # nonsense input: still no exception
    assert napari_get_reader([str(tmp_path / "notes.txt")]) is None


# --------------------------------------------------------------- bad input
def _reader_error(path, match):
    reader = napari_get_reader(str(path))
    assert reader is not None
    with pytest.raises(VolumeReadError, match=match):
        reader(str(path))


def test_truncated_nii_gz_gives_clear_error(tmp_path, sample_ct):
    raw = Path(sample_ct).read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    _reader_error(bad, "truncated or corrupt")


def test_corrupt_bytes_give_clear_error(tmp_path):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(RNG.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _reader_error(bad, "corrupt, truncated or not a NIfTI")
    junk_gz = tmp_path / "junk.nii.gz"  # valid gzip, not NIfTI inside
    junk_gz.write_bytes(gzip.compress(b"not a nifti header" * 40))
    _reader_error(junk_gz, "not a NIfTI")
    bad_nrrd = tmp_path / "bad.nrrd"
    bad_nrrd.write_bytes(b"NRRD0004\ntype: short\n" + bytes(50))
    _reader_error(bad_nrrd, "could not read")


def test_truncated_uncompressed_nii(tmp_path):
    path = tmp_path / "vol.nii"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.int16), np.eye(4)), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:2000])
    _reader_error(path, "truncated")


def test_empty_folder_reads_as_clear_error(tmp_path):
    with pytest.raises(VolumeReadError, match="no DICOM"):
        read_volume(tmp_path)


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.int16), np.eye(4)), str(path))
    _reader_error(path, "2D image")


def test_huge_header_dimension_is_refused_before_reading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((30000, 30000, 30000))
    path = tmp_path / "huge.nii"
    with open(path, "wb") as fh:
        header.write_to(fh)
        fh.write(bytes(16 + 1000))
    _reader_error(path, "header claims shape")
    gz = tmp_path / "huge.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    _reader_error(gz, "header claims shape")


def test_nans_warn_and_all_nan_is_an_error(tmp_path):
    data = RNG.normal(100, 20, (6, 8, 10)).astype(np.float32)
    data[0, 0, :3] = np.nan
    path = tmp_path / "some_nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    with pytest.warns(VolumeWarning, match="3 voxels are NaN"):
        vol = read_volume(path)
    lo, hi = layer_kwargs(vol)["contrast_limits"]
    assert np.isfinite([lo, hi]).all() and hi > lo
    path = tmp_path / "all_nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), str(path))
    _reader_error(path, "no finite values")


# ------------------------------------------------------------------- DICOM
def test_dicom_several_series_opens_largest_and_warns(tmp_path):
    arr = RNG.integers(-1000, 1000, (6, 10, 12))
    write_dicom_series(tmp_path, arr, "1.2.826.0.1.1", description="big")
    write_dicom_series(tmp_path, arr[:3], "1.2.826.0.1.2", description="small")
    assert [s.num_files for s in list_dicom_series(tmp_path)] == [6, 3]
    with pytest.warns(VolumeWarning, match="holds 2 DICOM series.*1.2.826.0.1.1.*1.2.826.0.1.2"):
        vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.geometry.spacing == pytest.approx((2.5, 0.8, 0.9))
    assert vol.geometry.origin == pytest.approx((-30.0, -20.0, -10.0))
    small = read_volume(tmp_path, series_uid="1.2.826.0.1.2")
    assert small.array.shape == (3, 10, 12)
    with pytest.raises(VolumeReadError, match="not in"):
        read_volume(tmp_path, series_uid="9.9.9")


def test_dicom_missing_slice_warns(tmp_path, dicom_dir):
    files = sorted(os.listdir(dicom_dir))
    for name in files[:7] + files[8:]:
        shutil.copy(dicom_dir / name, tmp_path / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(tmp_path)
    messages = [str(w.message) for w in caught if issubclass(w.category, VolumeWarning)]
    assert any("non-uniform slice spacing" in m and "1 slice(s) look missing" in m for m in messages), messages
    assert vol.array.shape[0] == len(files) - 1


def test_dicom_gantry_tilt_keeps_true_geometry_and_warns(tmp_path):
    arr = RNG.integers(-1000, 1000, (5, 10, 12))
    step = (0.0, 0.5, 2.5)  # slices slide posteriorly: ~11 degree tilt
    write_dicom_series(tmp_path, arr, "1.2.826.0.1.3", step=step)
    with pytest.warns(VolumeWarning, match="gantry tilt of 11.3"):
        vol = read_volume(tmp_path)
    g = vol.geometry
    assert g.oblique
    # true world of slice k, row 0, col 0 is origin + k * step (LPS)
    for k in range(5):
        expected_lps = np.array([-10.0, -20.0, -30.0]) + k * np.asarray(step)
        np.testing.assert_allclose(g.index_to_world((k, 0, 0)), expected_lps[::-1], atol=1e-5)
    labels = (vol.array > 0).astype(np.uint8)
    out = write_labels(labels, tmp_path.parent / "tilt_labels.nii.gz", g)
    affine = nib.load(str(out)).affine
    np.testing.assert_allclose((RAS_TO_LPS @ affine)[:3, 2], step, atol=1e-5)  # sheared k column kept


# ------------------------------------------------------------------ writing
def test_round_trip_nifti_labels_identical_voxels_and_affine(tmp_path, sample_labels):
    vol = read_volume(sample_labels)
    out = write_labels(vol.array, tmp_path / "out.nii.gz", vol.geometry, vol.label_set)
    src, dst = nib.load(str(sample_labels)), nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(dst.dataobj), np.asanyarray(src.dataobj))
    np.testing.assert_array_equal(dst.affine, src.affine)
    assert dst.get_data_dtype() == np.uint8
    assert int(dst.header["sform_code"]) == int(src.header["sform_code"])
    assert int(dst.header["qform_code"]) == int(src.header["qform_code"])
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["names"]["5"] == "liver" and side["colors"]["7"] == list(SYNAPSE.colors[7])
    assert not list(tmp_path.glob(".out*")), "temp file left behind"


def test_labels_on_ct_geometry_overlay_source(tmp_path, sample_ct):
    vol = read_volume(sample_ct)
    labels = (vol.array > 200).astype(np.uint8) * 3
    out = write_labels(labels, tmp_path / "bone.nii.gz", vol.geometry)
    src, dst = nib.load(str(sample_ct)), nib.load(str(out))
    np.testing.assert_array_equal(dst.affine, src.affine)
    np.testing.assert_array_equal(np.asanyarray(dst.dataobj), (np.asanyarray(src.dataobj) > 200) * 3)


def test_sidecar_names_come_back_and_uint16(tmp_path, sample_ct):
    vol = read_volume(sample_ct)
    custom = LabelSet.custom(["tumour", "cyst"], name="lesions")
    labels = np.zeros(vol.geometry.shape, np.int64)
    labels[10, 20:30, 40:50] = 2
    labels[12, 20:30, 40:50] = 1
    out = write_labels(labels, tmp_path / "lesions.nii.gz", vol.geometry, custom)
    back = read_volume(out)
    assert back.is_labels and back.label_set == custom
    np.testing.assert_array_equal(back.array, labels)
    labels[0, 0, 0] = 300
    out = write_labels(labels, tmp_path / "big.nii.gz", vol.geometry)
    assert nib.load(str(out)).get_data_dtype() == np.uint16


@pytest.mark.parametrize("series", ["dicom_dir", "real_dicom_dir"])
def test_dicom_export_affine_is_ras_equivalent_of_sitk_geometry(tmp_path, request, series):
    dicom_dir = request.getfixturevalue(series)
    vol = read_volume(dicom_dir)
    labels = (vol.array > 100).astype(np.uint8)
    out = write_labels(labels, tmp_path / "dicom_labels.nii.gz", vol.geometry)
    series = list_dicom_series(dicom_dir)[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    dst = nib.load(str(out))
    np.testing.assert_allclose(dst.affine, RAS_TO_LPS @ lps, atol=1e-4)
    expected = (sitk.GetArrayFromImage(image) > 100).transpose(2, 1, 0)  # ITK (i, j, k)
    np.testing.assert_array_equal(np.asanyarray(dst.dataobj), expected)
    # ITK agrees too: the written NIfTI, read by SimpleITK, has the series' geometry
    again = sitk.ReadImage(str(out))
    np.testing.assert_allclose(again.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(again.GetSpacing(), image.GetSpacing(), atol=1e-5)


def test_refuses_to_overwrite_source(tmp_path, sample_labels):
    copy = tmp_path / "labels.nii.gz"
    shutil.copy(sample_labels, copy)
    vol = read_volume(copy)
    before = copy.read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite the source"):
        write_labels(vol.array, copy, vol.geometry, vol.label_set)
    with pytest.raises(SaveRefused, match="refusing to overwrite the source"):  # not a ValueError: napari would hide it
        napari_write_labels(str(copy), vol.array, layer_kwargs(vol))
    assert copy.read_bytes() == before


def test_writer_rejects_wrong_shape_and_extension(tmp_path, sample_ct):
    g = read_volume(sample_ct).geometry
    with pytest.raises(ValueError, match="does not match|geometry is"):
        write_labels(np.zeros((3, 4, 5), np.uint8), tmp_path / "x.nii.gz", g)
    with pytest.raises(ValueError, match=r"\.nii\.gz"):
        write_labels(np.zeros(g.shape, np.uint8), tmp_path / "x.tif", g)
    with pytest.raises(ValueError, match=">= 0"):
        write_labels(np.full(g.shape, -1), tmp_path / "x.nii.gz", g)


def test_napari_writer_uses_metadata_geometry(tmp_path, sample_labels):
    vol = read_volume(sample_labels)
    attributes = layer_kwargs(vol)
    written = napari_write_labels(str(tmp_path / "seg.nii.gz"), vol.array, attributes)
    assert written == [str(tmp_path / "seg.nii.gz")]
    np.testing.assert_array_equal(nib.load(written[0]).affine, nib.load(str(sample_labels)).affine)


def test_napari_writer_without_geometry_uses_scale_translate(tmp_path):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3] = 1
    attributes = {"name": "drawn", "scale": (2.0, 0.5, 0.75), "translate": (10.0, -20.0, 30.0), "metadata": {}}
    with pytest.warns(VolumeWarning, match="no source geometry"):
        (path,) = napari_write_labels(str(tmp_path / "drawn.nii.gz"), labels, attributes)
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, labels)
    assert back.geometry.spacing == pytest.approx((2.0, 0.5, 0.75))
    assert back.geometry.origin == pytest.approx((10.0, -20.0, 30.0))
