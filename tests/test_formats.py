"""Label outputs that carry their names and colours: NIfTI label table, Slicer .seg.nrrd, ITK-SNAP labels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.io import read_volume, write_labels
from napari_medseg.io.itksnap import itksnap_label_text, read_itksnap_labels
from napari_medseg.labels import ACDC, SYNAPSE, LabelSet


@pytest.fixture(scope="module")
def ct_and_labels(sample_ct, sample_labels):
    return read_volume(sample_ct), read_volume(sample_labels)


def totalsegmentator_style_table(path) -> dict[int, str]:
    """What TotalSegmentator's loader reads: the first header extension's CaretExtension Label entries."""
    content = nib.load(path).header.extensions[0].get_content()
    return {int(e.get("Key")): e.text for e in ET.fromstring(content).iter("Label")}


# ------------------------------------------------------------ NIfTI label table
def test_nifti_embeds_label_table_and_reader_uses_it_without_sidecar(ct_and_labels, tmp_path):
    ct, lb = ct_and_labels
    custom = LabelSet.custom(["tumour core", "oedema <left & right>", "necrosis"], name="brats-like")
    custom = LabelSet(custom.name, custom.names, {**custom.colors, 2: (0.1, 0.2, 0.3, 0.4)})
    labels = np.minimum(lb.array, 3)
    out = write_labels(labels, tmp_path / "t.nii.gz", ct.geometry, custom)
    sidecar = tmp_path / "t.json"
    assert sidecar.is_file()  # the sidecar is still written
    assert totalsegmentator_style_table(out) == custom.organs
    sidecar.unlink()
    back = read_volume(out)
    assert back.label_set.names == custom.names
    np.testing.assert_allclose(back.label_set.colors[2], (0.1, 0.2, 0.3, 0.4), atol=1e-6)
    np.testing.assert_array_equal(back.array, labels)


def test_embedded_builtin_set_reads_back_as_that_set(ct_and_labels, tmp_path):
    ct, lb = ct_and_labels
    out = write_labels(lb.array, tmp_path / "s.nii", ct.geometry, SYNAPSE)
    (tmp_path / "s.json").unlink()
    back = read_volume(out)
    assert back.label_set.name == "synapse" and back.label_set.names == SYNAPSE.names
    for value in SYNAPSE.organs:
        np.testing.assert_allclose(back.label_set.colors[value], SYNAPSE.colors[value], atol=1e-5)


def test_table_from_another_tool_with_gaps_and_unnamed_values(ct_and_labels, tmp_path):
    """A TotalSegmentator-style table that names only some values (and skips numbers)."""
    ct, lb = ct_and_labels
    data = np.asarray(nib.load(write_labels(lb.array, tmp_path / "x.nii.gz", ct.geometry)).dataobj)
    xml = ('<?xml version="1.0" encoding="UTF-8"?><CaretExtension><VolumeInformation Index="0"><LabelTable>'
           '<Label Key="5" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[liver]]></Label>'
           '<Label Key="7" Red="0" Green="0" Blue="1" Alpha="1"><![CDATA[spleen]]></Label>'
           '</LabelTable></VolumeInformation></CaretExtension>')
    img = nib.Nifti1Image(data, nib.load(tmp_path / "x.nii.gz").affine)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml.encode()))
    nib.save(img, tmp_path / "other.nii.gz")
    back = read_volume(tmp_path / "other.nii.gz")
    assert back.label_set.names[5] == "liver" and back.label_set.names[7] == "spleen"
    assert back.label_set.names[1] == "label 1"  # unnamed values keep a name, never vanish
    assert back.label_set.colors[5] == (1.0, 0.0, 0.0, 1.0)


def test_corrupt_label_table_warns_and_falls_back(ct_and_labels, tmp_path):
    from napari_medseg.io import VolumeWarning

    ct, lb = ct_and_labels
    img = nib.Nifti1Image(np.asarray(ct.geometry.to_source(lb.array)), np.asarray(ct.geometry.source_affine_ras))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, b"<CaretExtension><LabelTable><Label Key="))
    nib.save(img, tmp_path / "broken.nii.gz")
    with pytest.warns(VolumeWarning, match="broken.nii.gz.*label table"):
        back = read_volume(tmp_path / "broken.nii.gz")
    assert back.label_set.name == "synapse"  # the plain fallback for values 0..8


def test_napari_reader_shows_embedded_names(ct_and_labels, tmp_path):
    from napari_medseg._reader import napari_get_reader

    ct, lb = ct_and_labels
    named = LabelSet.custom([f"organ {chr(65 + v)}" for v in range(8)], name="letters")
    out = write_labels(lb.array, tmp_path / "n.nii.gz", ct.geometry, named)
    (tmp_path / "n.json").unlink()
    (data, kwargs, kind), = napari_get_reader(str(out))(str(out))
    assert kind == "labels"
    assert list(kwargs["features"]["name"]) == [named.names[v] for v in sorted(named.names)]
    np.testing.assert_allclose(kwargs["colormap"].color_dict[3], named.colors[3], atol=1e-6)


# ------------------------------------------------------------ 3D Slicer .seg.nrrd
def _nrrd_fields(path) -> dict[str, str]:
    """A small NRRD header parser: ``field: value`` and ``key:=value`` lines up to the blank line."""
    head = open(path, "rb").read(1 << 16).split(b"\n\n", 1)[0].decode()
    fields = {}
    for line in head.splitlines()[1:]:
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":=") if ":=" in line else line.partition(": ")
        fields[key] = value
    return fields


@pytest.mark.parametrize("axes", [(0, 1, 2), (2, 0, 1)], ids=["ras", "permuted"])
def test_slicer_seg_nrrd_geometry_names_and_voxels(ct_and_labels, sample_ct, tmp_path, axes):
    src = nib.load(sample_ct)
    # a source whose voxel axes are permuted (not RAS-ordered): the output keeps that order
    data = np.transpose(np.asarray(src.dataobj), axes)
    affine = src.affine.copy()
    affine[:, :3] = src.affine[:, list(axes)]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "src.nii.gz")
    ct = read_volume(tmp_path / "src.nii.gz")
    labels = ct_and_labels[1].array  # canonical arrays do not depend on the source voxel order
    assert labels.shape == ct.array.shape
    out = write_labels(labels, tmp_path / "case.seg.nrrd", ct.geometry, SYNAPSE)
    nii = write_labels(labels, tmp_path / "case.nii.gz", ct.geometry, SYNAPSE)

    seg, ref = sitk.ReadImage(str(out)), sitk.ReadImage(str(nii))
    assert seg.GetSize() == ref.GetSize() == data.shape  # source voxel order
    np.testing.assert_allclose(seg.GetOrigin(), ref.GetOrigin(), atol=1e-5)  # LPS, like the source
    np.testing.assert_allclose(seg.GetSpacing(), ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(seg.GetDirection(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(ref))

    fields = _nrrd_fields(out)
    assert fields["space"] == "left-posterior-superior"
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # the source affine, in Slicer's LPS
    directions = [[float(v) for v in d.strip("()").split(",")] for d in fields["space directions"].split()]
    np.testing.assert_allclose(np.array(directions).T, lps[:3, :3], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in fields["space origin"].strip("()").split(",")], lps[:3, 3], atol=1e-6)
    present = sorted(SYNAPSE.organs)
    for index, value in enumerate(present):
        assert fields[f"Segment{index}_Name"] == SYNAPSE.names[value]
        assert int(fields[f"Segment{index}_LabelValue"]) == value
        assert fields[f"Segment{index}_Layer"] == "0"
        np.testing.assert_allclose([float(c) for c in fields[f"Segment{index}_Color"].split()], SYNAPSE.colors[value][:3])
        lo_hi = [int(v) for v in fields[f"Segment{index}_Extent"].split()]
        where = np.nonzero(sitk.GetArrayFromImage(seg).transpose(2, 1, 0) == value)
        assert lo_hi == [int(f(a)) for a in where for f in (np.min, np.max)]
    assert "SCT^10200004^Liver" in fields[f"Segment{present.index(5)}_Tags"]
    # and the project's own reader opens it on the same voxels as the source
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.geometry.origin, ct.geometry.origin, atol=1e-4)


# ------------------------------------------------------------ ITK-SNAP
def test_itksnap_label_description_round_trip():
    text = itksnap_label_text(ACDC)
    assert "ITK-SnAP Label Description File" in text
    table = read_itksnap_labels(text)
    assert table[0][0] == "Clear Label"
    for value, name in ACDC.organs.items():
        rgb = tuple(int(round(255 * c)) for c in ACDC.colors[value][:3])
        assert table[value] == (name, rgb, 1.0)


def test_unknown_output_suffix_is_one_clear_line(ct_and_labels, tmp_path):
    ct, lb = ct_and_labels
    with pytest.raises(ValueError, match=r"\.nii\.gz/\.nii \(NIfTI\), \.seg\.nrrd \(3D Slicer\) or \.dcm") as err:
        write_labels(lb.array, tmp_path / "x.png", ct.geometry, SYNAPSE)
    assert "\n" not in str(err.value)


def test_packaged_sample_labels_carry_the_synapse_table(sample_labels, shared_data):
    """The packaged sample's embedded table matches its (Synapse-ordered) values, voxel for voxel the shared copy."""
    from napari_medseg.io.nifti import read_label_table

    table = read_label_table(nib.load(sample_labels).header)
    assert {v: name for v, (name, _) in table.items()} == SYNAPSE.organs
    shared = nib.load(shared_data / "ct_abdomen_labels.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(sample_labels).dataobj), np.asarray(shared.dataobj))
    assert read_volume(sample_labels).label_set.names == SYNAPSE.names
