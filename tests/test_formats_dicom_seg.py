"""DICOM-SEG with highdicom: every organ on the same voxels as the NIfTI output, either slice order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

highdicom = pytest.importorskip("highdicom")

from napari_medseg.io import read_volume, write_labels  # noqa: E402
from napari_medseg.io.dicom_seg import Algorithm, srgb_to_cielab  # noqa: E402
from napari_medseg.labels import ACDC, SYNAPSE, SNOMED_CODES  # noqa: E402


def write_series_like(image: sitk.Image, folder: Path, uid: str) -> Path:
    """Write a 3D SimpleITK image as single-frame CT files in its own slice order (InstanceNumber k+1)."""
    from dicom_fixtures import write_dicom_series

    d = np.asarray(image.GetDirection()).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    return write_dicom_series(folder, sitk.GetArrayFromImage(image), uid, step=tuple(d[:, 2] * sz),
                              origin=image.GetOrigin(), pixel_spacing=(sy, sx),
                              orientation=tuple(d[:, 0]) + tuple(d[:, 1]))


def sop_uid(ds) -> str:
    """The slice's SOP Instance UID (the anonymised sample series keeps it only in the file meta)."""
    return ds.get("SOPInstanceUID") or ds.file_meta.MediaStorageSOPInstanceUID


def assert_seg_matches_nifti(seg_path: Path, nii_path: Path, folder: Path, label_set) -> int:
    """Read the SEG back with highdicom; each segment on each referenced source slice must equal the
    NIfTI's voxels for that organ at that slice's position.  Returns the number of organ voxels compared."""
    seg = highdicom.seg.segread(str(seg_path))
    nii = sitk.ReadImage(str(nii_path))
    nii_arr = sitk.GetArrayFromImage(nii)  # (k, rows, cols) in the NIfTI's own voxel order
    by_name = {name: value for value, name in label_set.names.items()}
    segments = {int(s.SegmentNumber): by_name[s.SegmentLabel] for s in seg.SegmentSequence}
    present = set(np.unique(nii_arr).tolist()) - {0}
    assert set(segments.values()) == present  # one segment per organ present, none for absent organs

    compared = 0
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        index = nii.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])
        assert index[:2] == (0, 0), f"{file.name} does not start a NIfTI slice"
        np.testing.assert_allclose(np.asarray(nii.GetDirection()).reshape(3, 3)[:, :2].T.ravel(),
                                   [float(v) for v in ds.ImageOrientationPatient], atol=1e-5)
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[sop_uid(ds)], segment_numbers=sorted(segments),
            assert_missing_frames_are_empty=True,
        )[0]  # (rows, cols, segments)
        for column, number in enumerate(sorted(segments)):
            expected = nii_arr[index[2]] == segments[number]
            mismatches = int(np.count_nonzero(pixels[..., column].astype(bool) != expected))
            assert mismatches == 0, f"{label_set.names[segments[number]]} on {file.name}: {mismatches} voxels differ"
            compared += int(expected.sum())
    return compared


@pytest.mark.parametrize("reverse", [False, True], ids=["inferior-first", "superior-first"])
def test_dicom_seg_matches_nifti_in_either_slice_order(sample_ct, sample_labels, tmp_path, reverse):
    ct = sitk.ReadImage(str(sample_ct))
    if reverse:  # same voxels in space, slices stored head-to-feet (the slice normal points down)
        ct = sitk.Flip(ct, [False, False, True])
        assert ct.GetDirection()[8] < 0
    folder = tmp_path / "series"
    write_series_like(ct, folder, "1.2.826.0.1.3680043.9.7777.1")
    vol = read_volume(folder)
    labels = read_volume(sample_labels).array  # canonical: same world grid as the series
    assert labels.shape == vol.array.shape
    algorithm = Algorithm(name="napari-medseg dcaunet", version="0.1.0 ckpt 0123456789ab",
                          parameters={"checkpoint_sha256_0": "0123456789ab" + "0" * 52})
    seg_path = write_labels(labels, tmp_path / "seg.dcm", vol.geometry, SYNAPSE, algorithm=algorithm)
    nii_path = write_labels(labels, tmp_path / "seg.nii.gz", vol.geometry, SYNAPSE)
    assert assert_seg_matches_nifti(seg_path, nii_path, folder, SYNAPSE) == int((labels > 0).sum())

    seg = highdicom.seg.segread(str(seg_path))
    uids = {sop_uid(pydicom.dcmread(f, stop_before_pixels=True)) for f in folder.glob("*.dcm")}
    referenced = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert referenced == uids  # frames reference the source SOP instances
    for item in seg.SegmentSequence:
        value = {n: v for v, n in SYNAPSE.names.items()}[item.SegmentLabel]
        code = SNOMED_CODES["synapse"][value]
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == code.category[0]
        typ = item.SegmentedPropertyTypeCodeSequence[0]
        assert (typ.CodeValue, typ.CodingSchemeDesignator) == (code.type[0], "SCT")
        if code.modifier:
            assert typ.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == code.modifier[0]
        assert list(item.RecommendedDisplayCIELabValue) == list(
            highdicom.color.CIELabColor(*srgb_to_cielab(SYNAPSE.colors[value])).value)
        ident = item.SegmentationAlgorithmIdentificationSequence[0] if hasattr(
            item, "SegmentationAlgorithmIdentificationSequence") else None
        assert item.SegmentAlgorithmName == "napari-medseg dcaunet"
        assert ident is None or ident.AlgorithmVersion == "0.1.0 ckpt 0123456789ab"


def test_dicom_seg_on_the_real_series(real_dicom_dir, tmp_path):
    dicom_dir = real_dicom_dir
    vol = read_volume(dicom_dir)
    labels = np.zeros(vol.array.shape, np.uint8)
    labels[3:9, 120:260, 140:330] = 5  # liver-sized block
    labels[10:16, 280:330, 200:240] = 3
    labels[12, 300, 100] = 8  # a single voxel must survive too
    seg_path = write_labels(labels, tmp_path / "real.dcm", vol.geometry, SYNAPSE)
    nii_path = write_labels(labels, tmp_path / "real.nii.gz", vol.geometry, SYNAPSE)
    assert assert_seg_matches_nifti(seg_path, nii_path, Path(dicom_dir), SYNAPSE) == int((labels > 0).sum())


def test_non_dicom_source_gets_one_line_error(sample_ct, sample_labels, tmp_path):
    ct, lb = read_volume(sample_ct), read_volume(sample_labels)
    with pytest.raises(ValueError, match="DICOM-SEG needs the source DICOM series") as err:
        write_labels(lb.array, tmp_path / "x.dcm", ct.geometry, SYNAPSE)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.dcm").exists()


def test_every_builtin_organ_has_snomed_codes():
    for label_set in (SYNAPSE, ACDC):
        codes = SNOMED_CODES[label_set.name]
        assert set(codes) == set(label_set.organs)
        assert len({(c.type, c.modifier) for c in codes.values()}) == len(codes)  # no two organs coded alike


def test_cielab_of_known_colours():
    np.testing.assert_allclose(srgb_to_cielab((1.0, 1.0, 1.0)), (100.0, 0.0, 0.0), atol=0.1)
    np.testing.assert_allclose(srgb_to_cielab((1.0, 0.0, 0.0)), (53.24, 80.09, 67.20), atol=0.1)


# ------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from _segment_helpers import save_tiny

    return save_tiny(tmp_path_factory.mktemp("seg_ckpt") / "dcau.safetensors", "dcaunet", seed=1)


def test_cli_segment_dicom_to_dicom_seg_and_itksnap(dicom_dir, tiny_ckpt, tmp_path):
    from napari_medseg.checkpoint import file_sha256
    from napari_medseg.cli import main
    from napari_medseg.io.itksnap import read_itksnap_labels

    seg_out, nii_out, snap = tmp_path / "out.dcm", tmp_path / "out.nii.gz", tmp_path / "labels.txt"
    assert main(["segment", str(dicom_dir), "-o", str(seg_out), "-c", str(tiny_ckpt), "--itksnap-labels", str(snap)]) == 0
    assert main(["segment", str(dicom_dir), "-o", str(nii_out), "-c", str(tiny_ckpt), "--series", "0"]) == 0
    assert_seg_matches_nifti(seg_out, nii_out, Path(dicom_dir), SYNAPSE)
    seg = highdicom.seg.segread(str(seg_out))
    ident = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    sha = file_sha256(tiny_ckpt)
    assert ident.AlgorithmName == "napari-medseg dcaunet"
    assert ident.AlgorithmVersion.startswith("0.") and sha[:12] in ident.AlgorithmVersion
    assert sha in str(ident.AlgorithmParameters)  # the full sha256
    assert {v: n for v, (n, _, _) in read_itksnap_labels(snap.read_text()).items() if v} == SYNAPSE.organs


@pytest.mark.parametrize("args, match", [
    (["--series", "7"], "series '7' is not in"),
    (["--series", "1.2.3"], "give a series UID or an index 0..0"),
])
def test_cli_bad_series_refused_before_work(dicom_dir, tiny_ckpt, tmp_path, capsys, args, match):
    from napari_medseg.cli import main

    code = main(["segment", str(dicom_dir), "-o", str(tmp_path / "x.nii.gz"), "-c", str(tiny_ckpt), *args])
    err = capsys.readouterr().err
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.nii.gz").exists()


def test_cli_dicom_seg_from_nifti_refused_before_work(sample_ct, tiny_ckpt, tmp_path, capsys):
    from napari_medseg.cli import main

    code = main(["segment", str(sample_ct), "-o", str(tmp_path / "x.dcm"), "-c", str(tiny_ckpt)])
    err = capsys.readouterr().err
    assert code == 2 and "DICOM-SEG needs the source DICOM series" in err and len(err.strip().splitlines()) == 1


def test_napari_writer_saves_dicom_seg_and_slicer(dicom_dir, tiny_ckpt, tmp_path, make_napari_viewer):
    from napari_medseg.io import labels_layer_kwargs

    viewer = make_napari_viewer(show=False)  # loads the plugin's manifest (its writer)

    vol = read_volume(dicom_dir)
    labels = np.zeros(vol.array.shape, np.uint8)
    z, y, x = vol.array.shape
    labels[z // 6 : z // 2, y // 3 : 2 * y // 3, x // 3 : 3 * x // 4] = 7
    kwargs = labels_layer_kwargs(labels, vol.geometry, SYNAPSE, name="spleen")
    kwargs["metadata"]["medseg"]["checkpoints"] = [str(tiny_ckpt)]
    layer = viewer.add_labels(labels, **kwargs)
    written = {ext: layer.save(str(tmp_path / f"out{ext}"), plugin="napari-medseg") for ext in (".dcm", ".seg.nrrd", ".nii.gz")}
    assert all(written.values()), written
    assert assert_seg_matches_nifti(tmp_path / "out.dcm", tmp_path / "out.nii.gz", Path(dicom_dir), SYNAPSE) == int(labels.sum() / 7)
    ident = highdicom.seg.segread(str(tmp_path / "out.dcm")).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    from napari_medseg.checkpoint import file_sha256

    assert file_sha256(tiny_ckpt) in str(ident.AlgorithmParameters)
    back = read_volume(tmp_path / "out.seg.nrrd")
    np.testing.assert_array_equal(back.array, labels)


def test_napari_writer_refuses_dicom_seg_for_a_nifti_layer(sample_labels, tmp_path, make_napari_viewer):
    from napari_medseg._writer import write_labels as napari_writer

    viewer = make_napari_viewer(show=False)
    layer, = viewer.open(str(sample_labels), plugin="napari-medseg")
    from napari_medseg._writer import SaveRefused

    with pytest.raises(SaveRefused, match="DICOM-SEG needs the source DICOM series"):
        napari_writer(str(tmp_path / "x.dcm"), layer.data, {"metadata": layer.metadata, "name": layer.name})
    with pytest.raises(SaveRefused, match="DICOM-SEG needs the source DICOM series"):  # napari shows the reason
        layer.save(str(tmp_path / "x.dcm"), plugin="napari-medseg")
    assert not (tmp_path / "x.dcm").exists()
