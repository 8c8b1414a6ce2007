"""``medseg project list / export``: a project's saved cases, exported in each source's own geometry."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from napari_medseg.casestate import save_case  # noqa: E402
from napari_medseg.cli import main  # noqa: E402
from napari_medseg.hashing import voxel_hash  # noqa: E402
from napari_medseg.io import read_volume  # noqa: E402
from napari_medseg.labels import get_label_set  # noqa: E402
from napari_medseg.retrain.ledger import SliceLedger  # noqa: E402
from napari_medseg.worklist import case_folder, case_id  # noqa: E402


def _reoriented_copy(src, dst, ornt_code=("L", "P", "S")):
    """``src`` stored in another voxel order (LPS, axes flipped) with the matching affine."""
    img = nib.load(str(src))
    target = nib.orientations.axcodes2ornt(ornt_code)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine), target)
    nib.save(img.as_reoriented(transform), str(dst))
    return dst


def _save(project, source, labels_file, status, *, reviewed=(), dice=None, **more):
    """Save a case of ``source`` whose labels are ``labels_file`` (read onto the source's canonical grid)."""
    vol = read_volume(source)
    labels = read_volume(labels_file).array.astype(np.uint8)
    ledger = SliceLedger(labels.shape)
    ledger.record_model_output(labels, range(labels.shape[0]))
    for z in reviewed:
        ledger.mark_reviewed(z)
    extra = ({} if dice is None else {"dice_before": dice[0], "dice_after": dice[1]}) | more
    save_case(case_folder(project, source), labels, ledger, image_hash=voxel_hash(vol.array), source_path=source,
              label_set=get_label_set("synapse").to_dict(), status=status, extra=extra)
    return labels


@pytest.fixture
def project(tmp_path, sample_ct, sample_labels):
    """Two cases: the sample (RAS-stored) and an LPS-stored copy, each with its own labels file."""
    src = tmp_path / "scans"
    src.mkdir()
    a = src / "a.nii.gz"
    shutil.copy(sample_ct, a)
    a_labels = tmp_path / "a_labels.nii.gz"
    shutil.copy(sample_labels, a_labels)
    b = _reoriented_copy(sample_ct, src / "b_lps.nii.gz")
    b_labels = _reoriented_copy(sample_labels, tmp_path / "b_labels.nii.gz")
    proj = tmp_path / "project"
    _save(proj, a, a_labels, "done", reviewed=[3, 9], dice=(0.5, 0.88), opened_at="2026-12-07T10:00:00+00:00",
          active_seconds=600.0)
    _save(proj, b, b_labels, "in progress", opened_at="2026-12-07T09:00:00+00:00", active_seconds=300.0)
    return proj, {"a": (a, a_labels), "b": (b, b_labels)}


def test_export_writes_each_case_in_its_source_voxel_order_and_affine(project, tmp_path, capsys):
    proj, files = project
    out = tmp_path / "export"
    assert main(["project", "export", "--project", str(proj), "-o", str(out)]) == 0
    for source, labels_file in files.values():
        written = nib.load(str(out / f"{case_id(source)}.nii.gz"))
        reference = nib.load(str(labels_file))
        # same voxels in the same (source) order, same affine: LPS stays LPS, RAS stays RAS
        np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(reference.dataobj).astype(np.uint8))
        np.testing.assert_allclose(written.affine, nib.load(str(source)).affine, atol=1e-4)
        assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(nib.load(str(source)).affine)
    manifest = json.loads((out / "cases.json").read_text())
    rows = {r["case_id"]: r for r in manifest["cases"]}
    a_row = rows[case_id(files["a"][0])]
    assert a_row["status"] == "done" and a_row["reviewed"] == [3, 9] and a_row["dice_after"] == 0.88
    assert a_row["file"] == f"{case_id(files['a'][0])}.nii.gz" and a_row["error"] is None
    sidecar = json.loads((out / f"{case_id(files['a'][0])}.json").read_text())
    assert "liver" in json.dumps(sidecar)  # organ names travel with the NIfTI

    # nothing is overwritten without --overwrite, and the refusal comes before any write
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["project", "export", "--project", str(proj), "-o", str(out)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert main(["project", "export", "--project", str(proj), "-o", str(out), "--overwrite"]) == 0


def test_status_filter_and_list(project, tmp_path, capsys):
    proj, files = project
    out = tmp_path / "done_only"
    assert main(["project", "export", "--project", str(proj), "-o", str(out), "--status", "done"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["cases.json", f"{case_id(files['a'][0])}.nii.gz", f"{case_id(files['a'][0])}.json"])
    assert main(["project", "export", "--project", str(proj), "-o", str(tmp_path / "none"), "--status", "reviewed"]) == 2
    assert "no saved cases with status reviewed" in capsys.readouterr().err

    assert main(["project", "list", "--project", str(proj)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"2 saved case(s) in {proj}, in the order they were first opened")
    rows = [line for line in text.splitlines() if line.startswith("  ")]
    assert case_id(files["b"][0]) in rows[0] and case_id(files["a"][0]) in rows[1]  # b was opened first
    assert "effort per case, in that order: 5.0 min, 10.0 min active; 0, 0 voxels changed" in text
    a_line = next(line for line in text.splitlines() if case_id(files["a"][0]) in line)
    assert "done" in a_line and "2 corrected of 30 slices" in a_line and "Dice 0.500 -> 0.880" in a_line
    assert "(10.0 min active, 0 voxels changed)" in a_line  # the saved labels are the model output itself
    assert "newest fine-tuned checkpoint: none yet" in text


def test_a_changed_or_missing_source_is_named_and_the_others_exported(project, tmp_path, capsys):
    proj, files = project
    a, _ = files["a"]
    img = nib.load(str(a))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] += 1  # the scan changed after the case was saved
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(a))
    (case_folder(proj, files["b"][0]) / "case.json").write_text("{broken")
    extra = tmp_path / "scans" / "c.nii.gz"
    shutil.copy(files["b"][0], extra)
    _save(proj, extra, files["b"][1], "reviewed")
    extra.unlink()  # moved away since

    out = tmp_path / "export"
    assert main(["project", "export", "--project", str(proj), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "3 case(s) not exported" in err and "no longer holds the voxels" in err and "not JSON" in err
    assert sorted(p.name for p in out.iterdir()) == ["cases.json"]  # nothing half-right was written
    rows = json.loads((out / "cases.json").read_text())["cases"]
    assert len(rows) == 3 and all(r["file"] is None and r["error"] for r in rows)


def test_export_needs_an_output_and_a_project(tmp_path, capsys):
    assert main(["project", "export", "--project", str(tmp_path)]) == 2
    assert "needs -o/--output" in capsys.readouterr().err
    assert main(["project", "list", "--project", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["project", "list", "--project", str(tmp_path)]) == 0
    assert "0 saved case(s)" in capsys.readouterr().out
