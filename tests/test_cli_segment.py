"""`medseg segment` end to end with tiny checkpoints."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from _segment_helpers import save_tiny, trained_checkpoint
from napari_medseg.cli import main
from napari_medseg.labels import ACDC


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_ckpt")
    return {
        "dcaunet": save_tiny(d / "dcau.safetensors", "dcaunet", seed=1),
        "udfa": save_tiny(d / "udfa.safetensors", "udfa", policy="fixed", seed=2),
        "acdc": save_tiny(d / "acdc.safetensors", "dcaunet", label_set=ACDC, seed=3),
    }


def test_segment_nifti_keeps_source_geometry(sample_ct, sample_labels, tmp_path_factory, tmp_path, capsys):
    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume
    from napari_medseg.io import read_volume

    ckpt = trained_checkpoint(tmp_path_factory.getbasetemp(), sample_ct, sample_labels)
    out = tmp_path / "seg.nii.gz"
    code = main(["segment", str(sample_ct), "-o", str(out), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--batch-size", "4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "liver" in printed and "volume (mL)" in printed and "slices/s" in printed
    src, seg = nib.load(sample_ct), nib.load(out)
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
    assert np.issubdtype(seg.get_data_dtype(), np.integer)
    # the written voxels are the engine's labels, put back in the source's voxel order
    vol = read_volume(sample_ct)
    engine = run_segmentation(segment_volume(vol.array, load_checkpoints([ckpt]), device="cpu",
                                             spacing=vol.geometry.spacing))
    expected = engine.labels
    assert len(np.unique(expected)) >= 3  # several organs, so a wrong voxel order would show
    # the organ table's last column: the mean normalised entropy inside each organ, explained under it
    header = next(ln for ln in printed.splitlines() if ln.startswith("organ"))
    liver = next(ln for ln in printed.splitlines() if ln.startswith("liver"))
    assert header.split()[-1] == "uncertainty"
    in_liver = engine.uncertainty[expected == 5].astype(np.float64).mean()
    assert float(liver.split()[-1]) == pytest.approx(in_liver, abs=0.006)
    assert any(ln.startswith("uncertainty: the mean normalised entropy inside the organ") for ln in printed.splitlines())
    # the organs to check first: the least certain found ones, in the table's order of uncertainty
    rows = [ln.split() for ln in printed.splitlines()[printed.splitlines().index(header) + 1:][:8]]
    table = {" ".join(r[:-3]): float(r[-1]) for r in found_rows(rows)}
    line = next(ln for ln in printed.splitlines() if ln.startswith("organs to check first"))
    named = [part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")]
    ranks = [table[name] for name in named]  # each named organ is in the table, least certain first ...
    assert len(named) == min(3, len(table)) and ranks == sorted(ranks, reverse=True)
    others = [u for name, u in table.items() if name not in named]
    assert min(ranks) >= max(others, default=0)  # ... and no other organ is less certain
    # the slices to correct first: three, the most uncertain, 10 mm (4 slices at 3 mm) apart
    line = next(ln for ln in printed.splitlines() if ln.startswith("slices to correct first"))
    picks = [int(v) for v in line.rsplit(":", 1)[1].split(",")]
    assert len(picks) == 3 and all(0 <= z < vol.array.shape[0] for z in picks)
    assert min(b - a for a, b in zip(picks, picks[1:])) >= 4
    np.testing.assert_array_equal(np.asarray(seg.dataobj), vol.geometry.to_source(expected))
    # and it lines up with the reference labels on disk (same voxel order as the source)
    ref = np.asarray(nib.load(sample_labels).dataobj)
    assert ((np.asarray(seg.dataobj) == ref) & (ref > 0)).sum() > 0.3 * (ref > 0).sum()


def test_ensemble_and_tta(sample_ct, ckpts, tmp_path):
    out = tmp_path / "ens.nii.gz"
    code = main(["segment", str(sample_ct), "-o", str(out), "-c", str(ckpts["dcaunet"]), "-c", str(ckpts["udfa"]),
                 "--tta", "--precision", "fp32"])
    assert code == 0 and out.exists()


def test_folder_of_volumes(sample_ct, ckpts, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_ct, src / "a.nii.gz")
    shutil.copy(sample_ct, src / "b.nii.gz")
    code = main(["segment", str(src), "-o", str(tmp_path / "out"), "-c", str(ckpts["dcaunet"])])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz"]


def test_dicom_folder(dicom_dir, ckpts, tmp_path):
    from napari_medseg.io import read_volume

    out = tmp_path / "dicom_seg.nii.gz"
    assert main(["segment", str(dicom_dir), "-o", str(out), "-c", str(ckpts["dcaunet"])]) == 0
    src, seg = read_volume(dicom_dir), read_volume(out)
    assert seg.array.shape == src.array.shape
    np.testing.assert_allclose(seg.geometry.spacing, src.geometry.spacing, atol=1e-4)
    np.testing.assert_allclose(seg.geometry.origin, src.geometry.origin, atol=1e-3)


@pytest.mark.parametrize(
    "case, match",
    [
        ("mixed_labels", "same label set"),
        ("bad_checkpoint", "not_a_model"),
        ("missing_input", "does not exist"),
        ("bad_output", "--output"),
    ],
)
def test_bad_input_one_line_error(case, match, sample_ct, ckpts, tmp_path, capsys):
    bad = tmp_path / "not_a_model.safetensors"
    bad.write_text("this is not a checkpoint")
    args = {
        "mixed_labels": [str(sample_ct), "-o", str(tmp_path / "x.nii.gz"), "-c", str(ckpts["dcaunet"]),
                         "-c", str(ckpts["acdc"])],
        "bad_checkpoint": [str(sample_ct), "-o", str(tmp_path / "x.nii.gz"), "-c", str(bad)],
        "missing_input": [str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "x.nii.gz"), "-c", str(ckpts["dcaunet"])],
        "bad_output": [str(sample_ct), "-o", str(tmp_path / "x.png"), "-c", str(ckpts["dcaunet"])],
    }[case]
    code = main(["segment", *args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("medseg segment: error:"), err
    assert match in err
    assert not (tmp_path / "x.nii.gz").exists()


def test_keep_islands_skips_the_largest_component_step(sample_ct, sample_labels, tmp_path_factory, tmp_path):
    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume
    from napari_medseg.io import read_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.postprocess import largest_component_only

    ckpt = trained_checkpoint(tmp_path_factory.getbasetemp(), sample_ct, sample_labels)
    vol = read_volume(sample_ct)
    raw = run_segmentation(segment_volume(vol.array, load_checkpoints([ckpt]), device="cpu", spacing=vol.geometry.spacing,
                                          uncertainty=False, largest_component=False)).labels
    one_piece, removed = largest_component_only(raw, SYNAPSE.organs)
    assert sum(removed.values()) > 0  # the briefly trained tiny model leaves islands: the two outputs differ
    for flags, expected in (([], one_piece), (["--keep-islands"], raw)):
        out = tmp_path / f"seg{len(flags)}.nii.gz"
        assert main(["segment", str(sample_ct), "-o", str(out), "-c", str(ckpt), "--device", "cpu",
                     *flags]) == 0
        np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), vol.geometry.to_source(expected))


def test_z_sigma_sets_the_smoothing_across_slices(sample_ct, sample_labels, tmp_path_factory, tmp_path, capsys):
    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume
    from napari_medseg.io import read_volume

    ckpt = trained_checkpoint(tmp_path_factory.getbasetemp(), sample_ct, sample_labels)
    vol = read_volume(sample_ct)
    outputs = {}
    for sigma in ("0", "9"):
        out = tmp_path / f"seg{sigma}.nii.gz"
        assert main(["segment", str(sample_ct), "-o", str(out), "-c", str(ckpt), "--device", "cpu",
                     "--z-sigma", sigma]) == 0
        outputs[sigma] = np.asarray(nib.load(out).dataobj)
        expected = run_segmentation(segment_volume(vol.array, load_checkpoints([ckpt]), device="cpu", uncertainty=False,
                                                   spacing=vol.geometry.spacing, z_sigma_mm=float(sigma))).labels
        np.testing.assert_array_equal(outputs[sigma], vol.geometry.to_source(expected))
    assert (outputs["0"] != outputs["9"]).any()  # the option reaches the engine
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["segment", str(sample_ct), "-o", str(tmp_path / "x.nii.gz"), "-c", str(ckpt), "--z-sigma", "-1"])
    assert stop.value.code == 2 and "must be a finite number of mm >= 0" in capsys.readouterr().err


def found_rows(rows):
    """Rows of the printed organ table (name words, volume, mean, uncertainty) for organs with voxels."""
    return [r for r in rows if float(r[-3]) > 0 and r[-1] != "-"]


def test_a_checkpoint_of_another_modality_warns_and_segments(sample_ct, ckpts, tmp_path, capsys):
    """The CLI warns (a NIfTI's modality is a guess) and goes on, naming the checkpoint and what to use."""
    img = nib.load(str(sample_ct))
    mr = (np.asarray(img.dataobj).astype(np.int16) + 1100).clip(0, None)  # no air, no fat below 0: looks like MR
    nib.save(nib.Nifti1Image(mr, img.affine), str(tmp_path / "mr.nii.gz"))
    code = main(["segment", str(tmp_path / "mr.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"),
                 "--checkpoint", str(ckpts["dcaunet"]), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "seg.nii.gz").exists()
    assert "warning: mr.nii.gz: dcau.safetensors was trained on CT images and this image looks like MR" in err
    assert "--checkpoint an MR model instead" in err
