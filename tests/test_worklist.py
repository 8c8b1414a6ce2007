"""Worklist from a folder or a text file; per-case state in a project folder; unreadable entries say why."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_medseg.casestate import save_case
from napari_medseg.retrain.ledger import SliceLedger
from napari_medseg.worklist import case_folder, case_id, list_sources, next_case, read_worklist


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
