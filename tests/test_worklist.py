"""Worklist from a folder or a text file; per-case state in a project folder; unreadable entries say why."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_medseg.casestate import CaseStateError, save_case
from napari_medseg.retrain.ledger import SliceLedger
from napari_medseg.worklist import (
    case_folder,
    case_id,
    list_sources,
    next_case,
    open_case,
    read_worklist,
)


@pytest.fixture
def cases(tmp_path, sample_ct, dicom_dir):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sample_ct, src / "a_ct.nii.gz")
    (src / "b_dicom").symlink_to(dicom_dir, target_is_directory=True)
    (src / "c_empty.nii.gz").write_bytes(b"")  # left by an interrupted copy
    (src / "notes.txt").write_text("not a volume")
    (src / ".a_ct.nii.gz.partial-x1.nii.gz").write_bytes(b"x")  # a temp file of an atomic write
    return src


def test_folder_worklist_marks_unreadable_and_keeps_the_rest(cases, tmp_path):
    rows = read_worklist(cases, tmp_path / "project")
    assert [r.source.name for r in rows] == ["a_ct.nii.gz", "b_dicom", "c_empty.nii.gz"]
    assert [r.status for r in rows] == ["new", "new", "unreadable"]
    assert "empty (0 bytes)" in rows[2].reason and "\n" not in rows[2].reason
    assert next_case(rows).source.name == "a_ct.nii.gz"
    assert next_case(rows, after=rows[0].case_id).source.name == "b_dicom"
    assert next_case(rows, after=rows[1].case_id) is None  # the unreadable one is skipped


def test_text_worklist_and_saved_state(cases, tmp_path):
    listing = cases / "list.txt"
    listing.write_text("# today\na_ct.nii.gz\n\nmissing.nii.gz\nnotes.txt\n")
    project = tmp_path / "project"
    labels = np.zeros((4, 5, 6), np.uint8)
    ledger = SliceLedger(labels.shape)
    ledger.mark_reviewed(1)
    ledger.mark_reviewed(2)
    save_case(case_folder(project, cases / "a_ct.nii.gz"), labels, ledger, image_hash="h", status="reviewed",
              extra={"dice_before": 0.4, "dice_after": 0.8})
    rows = read_worklist(listing, project)
    assert [r.status for r in rows] == ["reviewed", "unreadable", "unreadable"]
    assert rows[0].corrected == 2 and (rows[0].dice_before, rows[0].dice_after) == (0.4, 0.8)
    assert rows[0].scribbled == 0
    strokes = np.zeros_like(labels)
    strokes[[0, 2, 3], 1, 1] = 4  # slice 2 is also reviewed: it counts once, as corrected
    save_case(case_folder(project, cases / "a_ct.nii.gz"), labels, ledger, image_hash="h", status="reviewed",
              scribbles=strokes)
    row = read_worklist(listing, project)[0]
    assert (row.corrected, row.scribbled) == (2, 2)
    assert "does not exist" in rows[1].reason
    assert "not NIfTI, NRRD, MHA/MHD or DICOM" in rows[2].reason
    assert not any(p.name.endswith(".json") for p in cases.iterdir())  # nothing written beside the sources


def test_damaged_case_state_is_unreadable_with_reason(cases, tmp_path):
    project = tmp_path / "project"
    folder = case_folder(project, cases / "a_ct.nii.gz")
    folder.mkdir(parents=True)
    (folder / "case.json").write_text("{not json")
    rows = read_worklist(cases, project)
    assert rows[0].status == "unreadable" and "case.json" in rows[0].reason
    assert rows[1].status == "new"


def test_case_ids_differ_for_same_names_in_different_folders(tmp_path):
    assert case_id(tmp_path / "x" / "ct.nii.gz") != case_id(tmp_path / "y" / "ct.nii.gz")
    assert case_id(tmp_path / "x" / "ct.nii.gz").startswith("ct-")


def test_not_a_worklist(tmp_path):
    with pytest.raises(ValueError, match="neither a folder nor a text file"):
        list_sources(tmp_path / "nothing")


# ---------------------------------------------------------------- project folder and opening a case
def drive(gen):
    """Run a generator to its end; its return value."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def test_corrupt_header_is_unreadable_at_listing(cases, tmp_path):
    (cases / "d_bad.nii.gz").write_bytes(b"\x1f\x8b not gzip" * 50)
    (cases / "e_bad.nrrd").write_bytes(b"NRRD0004\ntype: what\n\n" + bytes(100))
    rows = read_worklist(cases, tmp_path / "project")
    bad = {r.source.name: r for r in rows if r.status == "unreadable"}
    assert set(bad) == {"c_empty.nii.gz", "d_bad.nii.gz", "e_bad.nrrd"}
    for name in ("d_bad.nii.gz", "e_bad.nrrd"):
        assert "header unreadable" in bad[name].reason and "\n" not in bad[name].reason
    assert [r.status for r in rows if r.source.name in ("a_ct.nii.gz", "b_dicom")] == ["new", "new"]


def test_project_folder_never_inside_a_source(cases, tmp_path):
    from napari_medseg.worklist import check_project, default_project_dir

    sources = list_sources(cases)
    with pytest.raises(ValueError, match="inside the source"):
        check_project(cases / "b_dicom" / "project", sources)
    with pytest.raises(ValueError, match="inside the source"):
        check_project(cases / "a_ct.nii.gz", sources)
    assert check_project(tmp_path / "project", sources) == (tmp_path / "project").resolve()
    assert default_project_dir().parts[-2:] == ("projects", "default")


def test_newest_checkpoint_is_the_last_recorded_that_exists(tmp_path):
    from napari_medseg.worklist import (
        PROJECT_JSON,
        newest_checkpoint,
        read_project,
        record_checkpoint,
    )

    project = tmp_path / "project"
    assert newest_checkpoint(project) is None  # nothing recorded: the dock falls back to the Segment dock
    a, b = tmp_path / "m.v2.safetensors", tmp_path / "m.v3.safetensors"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    assert record_checkpoint(project, a, "case-1", dice_before=0.2, dice_after=0.6)
    assert record_checkpoint(project, b, "case-2")
    assert not record_checkpoint(project, a, "case-1")  # recorded once
    assert newest_checkpoint(project) == b.resolve()
    b.unlink()  # a deleted version is skipped
    assert newest_checkpoint(project) == a.resolve()
    meta = json.loads((project / PROJECT_JSON).read_text())  # plain JSON for scripts
    assert [e["case"] for e in meta["checkpoints"]] == ["case-1", "case-2"] and meta["checkpoints"][0]["dice_after"] == 0.6
    (project / PROJECT_JSON).write_text("{oops")
    with pytest.raises(ValueError, match="not JSON"):
        read_project(project)


def test_open_case_segments_then_restores_exactly(tmp_path, sample_ct):
    from _segment_helpers import save_tiny

    from napari_medseg.casestate import save_case
    from napari_medseg.io import read_volume

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sample_ct, src / "a.nii.gz")
    project = tmp_path / "project"
    ckpt = save_tiny(tmp_path / "tiny.safetensors", "dcaunet", seed=3)
    entry = read_worklist(src, project)[0]
    opened = drive(open_case(entry, project, ckpt, device="cpu"))
    assert not opened.restored and opened.checkpoint == str(ckpt) and opened.status == "in progress"
    assert opened.labels.shape == opened.volume.array.shape and opened.ledger.locked == []
    assert opened.ledger.counts()["predicted"] == opened.labels.shape[0]
    assert opened.label_set["name"] == "synapse"

    labels = opened.labels.copy()
    labels[7, 10:20, 10:20] = 4  # a correction
    opened.ledger.update_from(labels)
    opened.ledger.mark_reviewed(3)
    save_case(case_folder(project, entry.source), labels, opened.ledger, image_hash=opened.image_hash, status="reviewed")
    again = drive(open_case(read_worklist(src, project)[0], project, ckpt, device="cpu"))
    assert again.restored and again.checkpoint is None and again.status == "reviewed"
    np.testing.assert_array_equal(again.labels, labels)
    assert (again.ledger.edited, again.ledger.reviewed) == ([7], [3])
    assert opened.ledger.to_state().keys() == again.ledger.to_state().keys()
    for key, value in opened.ledger.to_state().items():
        np.testing.assert_array_equal(again.ledger.to_state()[key], value)

    nib = pytest.importorskip("nibabel")
    img = nib.load(str(src / "a.nii.gz"))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] += 1  # the source changed since the case was saved
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(src / "a.nii.gz"))
    before = sorted(p.name for p in case_folder(project, entry.source).iterdir())
    with pytest.raises(CaseStateError, match="other voxels"):
        drive(open_case(entry, project, ckpt, device="cpu"))
    assert sorted(p.name for p in case_folder(project, entry.source).iterdir()) == before  # left untouched
    assert read_volume(src / "a.nii.gz").array.shape == labels.shape


def test_open_case_without_checkpoint_and_labels_file(tmp_path, sample_ct, sample_labels):
    from napari_medseg.io import VolumeReadError

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sample_ct, src / "a.nii.gz")
    shutil.copy(sample_labels, src / "b_labels.nii.gz")
    rows = read_worklist(src, tmp_path / "project")
    empty = drive(open_case(rows[0], tmp_path / "project", None))
    assert empty.labels is None and empty.ledger is None and empty.status == "in progress"
    with pytest.raises(VolumeReadError, match="holds labels"):
        drive(open_case(rows[1], tmp_path / "project", None))


def test_fine_tune_dice_only_for_this_source(tmp_path, sample_ct):
    from _segment_helpers import tiny_model, tiny_prep

    from napari_medseg.checkpoint import save_checkpoint
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.worklist import fine_tune_dice

    path = tmp_path / "ft.safetensors"
    save_checkpoint(path, tiny_model("dcaunet"), label_set=SYNAPSE, preprocessing=tiny_prep("dcaunet"),
                    provenance={"image": str(sample_ct), "dice_before": 0.25, "dice_after": 0.75})
    assert fine_tune_dice(path, sample_ct) == (0.25, 0.75)
    assert fine_tune_dice(path, tmp_path / "other.nii.gz") is None
    assert fine_tune_dice(tmp_path / "missing.safetensors", sample_ct) is None


def test_nrrd_and_mha_cases_list_and_open(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    src = tmp_path / "src"
    src.mkdir()
    array = np.random.default_rng(0).integers(-1000, 400, size=(5, 12, 10)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    for name in ("a.mha", "b.nrrd"):
        sitk.WriteImage(image, str(src / name))
    rows = read_worklist(src, tmp_path / "project")
    assert [(r.source.name, r.status) for r in rows] == [("a.mha", "new"), ("b.nrrd", "new")]
    for row in rows:
        opened = drive(open_case(row, tmp_path / "project", None))
        assert opened.volume.array.shape == (5, 12, 10) and opened.volume.geometry.spacing == pytest.approx((2.5, 0.8, 0.8))


def test_a_new_case_is_segmented_by_the_newest_checkpoint_of_its_modality(tmp_path, sample_ct):
    """A CT model on an MR scan makes organ-shaped noise: it is passed over, and the note says so."""
    from _segment_helpers import save_tiny

    nib = pytest.importorskip("nibabel")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sample_ct, src / "a_ct.nii.gz")
    img = nib.load(str(sample_ct))
    mr = (np.asarray(img.dataobj).astype(np.int16) + 1100).clip(0, None)  # no air at -1000: looks like MR
    nib.save(nib.Nifti1Image(mr, img.affine), str(src / "b_mr.nii.gz"))
    project = tmp_path / "project"
    ct = save_tiny(tmp_path / "ct.safetensors", "dcaunet", modality="ct", seed=1)
    mr_ckpt = save_tiny(tmp_path / "mr.safetensors", "dcaunet", modality="mr", seed=2)
    rows = {r.source.name: r for r in read_worklist(src, project)}

    only_ct = drive(open_case(rows["b_mr.nii.gz"], project, [ct], device="cpu"))
    assert only_ct.labels is None and only_ct.checkpoint is None
    assert "no MR checkpoint" in only_ct.note and "ct.safetensors is a CT model" in only_ct.note
    both = drive(open_case(rows["b_mr.nii.gz"], project, [ct, mr_ckpt], device="cpu"))
    assert both.checkpoint == str(mr_ckpt) and both.labels is not None and "CT model" in both.note
    ct_case = drive(open_case(rows["a_ct.nii.gz"], project, [ct, mr_ckpt], device="cpu"))
    assert ct_case.checkpoint == str(ct) and ct_case.note is None


def test_first_per_modality_keeps_preference_order_and_passes_over_unreadable(tmp_path):
    from _segment_helpers import save_tiny

    from napari_medseg.worklist import first_per_modality

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    ct_new = save_tiny(tmp_path / "ct.v3.safetensors", "dcaunet", modality="ct", seed=1)
    mr = save_tiny(tmp_path / "mr.v2.safetensors", "dcaunet", modality="mr", seed=2)
    ct_old = save_tiny(tmp_path / "ct.v2.safetensors", "dcaunet", modality="ct", seed=3)
    assert first_per_modality([broken, ct_new, mr, ct_old]) == [("ct", ct_new), ("mr", mr)]
    assert first_per_modality([mr, ct_old, ct_new]) == [("mr", mr), ("ct", ct_old)]
    assert first_per_modality([broken]) == []
