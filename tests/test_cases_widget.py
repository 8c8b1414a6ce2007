"""The "Cases" dock through the manifest: worklist table, Open next, save / restore, unreadable rows."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _segment_helpers import save_tiny, trained_checkpoint

from napari_medseg.worklist import UNREADABLE, case_folder, record_checkpoint

pytestmark = pytest.mark.gui
SCREENSHOT_DIR = os.environ.get("MEDSEG_SCREENSHOT_DIR")


@pytest.fixture
def cases(make_napari_viewer, tmp_path, monkeypatch, sample_ct, dicom_dir):
    """A folder with 2 readable cases (NIfTI, DICOM folder) and a corrupt one; two tiny checkpoints."""
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDSEG_CONFIG_DIR", str(tmp_path / "config"))
    src = tmp_path / "scans"
    src.mkdir()
    shutil.copy(sample_ct, src / "a_ct.nii.gz")
    (src / "b_dicom").symlink_to(dicom_dir, target_is_directory=True)
    (src / "c_bad.nii.gz").write_bytes(b"\x1f\x8b this is not a gzip stream" * 20)
    base = save_tiny(tmp_path / "base.safetensors", "dcaunet", seed=1)
    newest = save_tiny(tmp_path / "base.v2.safetensors", "dcaunet", seed=2)
    viewer = make_napari_viewer(show=True)
    _, segment = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    assert segment.add_checkpoint(base)
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Cases")
    return viewer, widget, src, tmp_path / "project", base, newest


def same(a, b) -> bool:
    """The dock holds napari's proxies of layers: compare layers by id."""
    return a.unique_id == b.unique_id


def wait_open(widget, qtbot, timeout=60_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)
    assert widget.current is not None, widget.status.text()


def expected_labels(path, checkpoint, device="cpu"):
    from napari_medseg.checkpoint import load_checkpoint
    from napari_medseg.inference import run_segmentation, segment_volume
    from napari_medseg.io import read_volume

    vol = read_volume(path)
    model, info = load_checkpoint(checkpoint)
    return run_segmentation(segment_volume(vol.array, [(model, info)], device=device, uncertainty=False,
                                           spacing=vol.geometry.spacing)).labels


def test_open_next_save_and_restore(cases, qtbot):
    viewer, widget, src, project, base, newest = cases
    assert str(widget.project).endswith("projects/default")  # the default lives in the user data dir
    assert widget.set_project(project)
    assert "Segment dock" in widget.model_label.text()  # nothing fine-tuned in the project yet
    record_checkpoint(project, newest, "earlier-case", dice_before=0.3, dice_after=0.7)
    assert widget.open_worklist(src)
    assert [r.status for r in widget.rows] == ["new", "new", UNREADABLE]
    assert widget.table.item(2, 1).text() == UNREADABLE and "header unreadable" in widget.table.item(2, 0).toolTip()

    assert widget.open_next()
    wait_open(widget, qtbot)
    image, labels = widget._layers
    assert widget.current.checkpoint == str(newest) and "base.v2" in widget.model_label.text()
    assert "base.v2.safetensors (CT)" in widget.model_label.text()  # what the next case is segmented with
    np.testing.assert_array_equal(labels.data, expected_labels(src / "a_ct.nii.gz", newest))
    assert not np.array_equal(labels.data, expected_labels(src / "a_ct.nii.gz", base))
    assert widget.rows[0].status == "in progress"  # new -> in progress on opening, saved at once
    _, retrain = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    assert same(retrain.image_layer(), image) and same(retrain.labels_layer(), labels)
    assert retrain.start_combo.currentText() == str(newest)
    assert retrain.store_row.store().root == project / "corrections"  # the project's cases share one store
    scores = widget.current.slice_uncertainty  # the segmentation's per-slice uncertainty reaches the Retrain dock
    assert scores.shape == (labels.data.shape[0],) and scores.max() > 0
    retrain.suggest_next_slice()  # so the first round on a new case is guided at once
    assert "Suggested slice" in retrain.status.text() and retrain.current_slice() == int(np.argmax(scores))
    # which organs to check first: the least certain found organs, each a link to its least certain slice
    found = sorted((o for o in widget.current.organs if o.voxels), key=lambda o: -o.mean_uncertainty)
    assert found and widget.check_first.isVisible()
    links = re.findall(r'<a href="(\d+):(\d+)"[^>]*>([^<]+)</a>', widget.check_first.text())
    assert [name for *_, name in links] == [o.name for o in found[:3]]
    first_links = widget.check_first.text()
    value, z = int(links[0][0]), int(links[0][1])
    assert (value, z) == (found[0].value, found[0].focus_slice) and (labels.data[z] == value).any()
    widget.check_first.linkActivated.emit(f"{value}:{z}")
    assert retrain.current_slice() == z and labels.selected_label == value
    assert viewer.layers.selection.active.unique_id == labels.unique_id

    labels.brush_size = 6
    labels.paint((10, 50, 40), 5)  # a correction on slice 10
    retrain.go_to_slice(20)
    retrain.toggle_reviewed()
    qtbot.waitUntil(lambda: labels.metadata["medseg"]["locked_slices"] == [10, 20])
    painted = np.array(labels.data)
    assert widget.set_status("reviewed")
    if SCREENSHOT_DIR:
        viewer.screenshot(os.path.join(SCREENSHOT_DIR, "cases_widget.png"), canvas_only=False)

    assert widget.open_next()  # saves case 1, opens the DICOM case
    wait_open(widget, qtbot)
    assert not any(same(layer, old) for layer in viewer.layers for old in (image, labels))  # case 1 closed
    assert widget.current.entry.source.name == "b_dicom"
    info = json.loads((case_folder(project, src / "a_ct.nii.gz") / "case.json").read_text())
    assert info["status"] == "reviewed" and info["edited"] == [10] and info["reviewed"] == [20]
    assert [r.status for r in widget.rows] == ["reviewed", "in progress", UNREADABLE]
    assert widget.table.item(0, 2).text() == "2"

    assert not widget.open_row(2)  # the unreadable row stays unreadable, says why
    assert "unreadable" in widget.status.text() and widget.current.entry.source.name == "b_dicom"
    assert widget.open_row(0)  # reopen case 1: restored, not re-segmented
    wait_open(widget, qtbot)
    image, labels = widget._layers
    assert widget.current.restored and widget.current.checkpoint is None
    # the model output's uncertainty was saved with the case: the same organs to check first, and
    # Suggest next slice ranks the saved per-slice means (locked slices 10 and 20 now excluded)
    assert widget.check_first.isVisible() and widget.check_first.text() == first_links
    np.testing.assert_allclose(widget.current.slice_uncertainty, scores, rtol=1e-6)
    retrain.suggest_next_slice()
    assert "Suggested slice" in retrain.status.text() and retrain.current_slice() not in (10, 20)
    np.testing.assert_array_equal(labels.data, painted)
    ledger = labels.metadata["medseg_ledger"]
    assert (ledger.edited, ledger.reviewed, ledger.locked) == ([10], [20], [10, 20])
    assert labels.metadata["medseg"]["locked_slices"] == [10, 20]
    assert widget.rows[0].status == "reviewed" and widget.rows[2].status == UNREADABLE
    assert not any(p.name.endswith((".json", ".npz")) for p in src.iterdir())  # nothing beside the sources
    assert_docs_script_reads(project, ["a_ct-", "reviewed [10, 20]", "b_dicom-", "in progress"])


def assert_docs_script_reads(project, expected):
    """The reading script of docs/cases.md runs on this project with numpy and json alone."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cases.md").read_text(encoding="utf-8")
    script = re.search(r"```python\n(.*?)```", doc, re.DOTALL).group(1)
    script = re.sub(r'project = Path\(.*\)\.expanduser\(\)', f"project = Path({str(project)!r})", script)
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for text in expected:
        assert text in out.stdout, out.stdout


def test_fine_tune_saves_case_dice_and_newest_version(cases, qtbot, sample_ct, sample_labels, tmp_path_factory,
                                                       monkeypatch):
    viewer, widget, src, project, base, newest = cases
    if SCREENSHOT_DIR:  # the docs' screenshot shows real organs
        shutil.copy(trained_checkpoint(tmp_path_factory.getbasetemp(), sample_ct, sample_labels), base)
    widget.set_project(project)
    widget.open_worklist(src)
    assert widget.open_next()
    wait_open(widget, qtbot)
    assert widget.current.checkpoint == str(base)  # no project version yet: the Segment dock's choice
    assert widget.check_first.isVisible() == bool([o for o in widget.current.organs if o.voxels])
    opened_organs, opened_scores = widget.current.organs, widget.current.slice_uncertainty.copy()
    _, labels = widget._layers
    _, retrain = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    labels.brush_size = 6
    labels.paint((12, 50, 40), 5)
    qtbot.waitUntil(lambda: labels.metadata["medseg"]["locked_slices"] == [12])
    retrain.budget_unit.setCurrentText("steps")
    retrain.budget.setValue(4)
    retrain.run_btn.click()
    assert retrain.worker is not None and not widget.open_next()  # never leaves a case while it is fine-tuned
    assert "Fine-tuning on a_ct.nii.gz is running" in widget.status.text() and widget.current is not None
    qtbot.waitUntil(lambda: retrain.worker is None, timeout=120_000)
    assert "Saved" in retrain.status.text(), retrain.status.text()
    version = retrain.start_combo.currentText()
    assert version.endswith("base.v3.safetensors")  # v2 exists beside it already
    qtbot.waitUntil(lambda: widget.rows[0].dice_after is not None)  # saved by the fine-tune hook
    # ranked again on the fine-tune's re-segmentation: each link names an organ on the slice it points to
    links = re.findall(r'<a href="(\d+):(\d+)"', widget.check_first.text())
    assert widget.check_first.isVisible() == bool(links) == bool((labels.data > 0).any())
    assert all((labels.data[int(z)] == int(value)).any() for value, z in links)
    info = json.loads((case_folder(project, src / "a_ct.nii.gz") / "case.json").read_text())
    assert info["dice_before"] == widget.rows[0].dice_before and info["edited"] == [12]
    # the re-segmentation's uncertainty is what the case keeps: its organs ranking and per-slice means
    from napari_medseg.casestate import load_case

    assert [row["name"] for row in info["organs"]] == [o.name for o in widget.current.organs]
    np.testing.assert_allclose(load_case(case_folder(project, src / "a_ct.nii.gz")).slice_uncertainty,
                               retrain._slice_scores(labels), rtol=1e-6)
    assert widget.table.item(0, 4).text() == f"{info['dice_after']:.2f}"
    assert widget.model_choice()[0] == type(widget.model_choice()[0])(version)  # the project's newest version now
    assert not np.allclose(retrain._slice_scores(labels), opened_scores)  # so the revert below is seen

    # Revert: the opening segmentation's ranking and per-slice means come back with its labels, and are saved;
    # the checkpoint's provenance is read once for it (the case's Dice), not once per caller
    import napari_medseg.worklist as worklist

    dice_reads = []
    counted = worklist.fine_tune_dice
    monkeypatch.setattr(worklist, "fine_tune_dice", lambda *a: dice_reads.append(a) or counted(*a))
    with qtbot.waitSignal(retrain.model_output_changed):
        retrain.revert()
    assert len(dice_reads) == 1, dice_reads
    assert widget.current.organs == opened_organs
    np.testing.assert_allclose(retrain._slice_scores(labels), opened_scores)
    assert widget.save_case(wait=True)
    info = json.loads((case_folder(project, src / "a_ct.nii.gz") / "case.json").read_text())
    assert [row["name"] for row in info["organs"]] == [o.name for o in opened_organs]
    # the discarded version's Dice goes with it: the opening model was not fine-tuned on this case
    assert info.get("dice_before") is None and info.get("dice_after") is None
    qtbot.waitUntil(lambda: widget.rows[0].dice_after is None)
    assert widget.table.item(0, 3).text() == widget.table.item(0, 4).text() == ""
    np.testing.assert_allclose(load_case(case_folder(project, src / "a_ct.nii.gz")).slice_uncertainty,
                               opened_scores, rtol=1e-6)
    assert widget.open_next()
    wait_open(widget, qtbot)
    assert widget.current.checkpoint == version
    if SCREENSHOT_DIR:
        viewer.screenshot(os.path.join(SCREENSHOT_DIR, "cases_dock.png"), canvas_only=False)


def test_cancel_then_restore_withdraws_a_same_autosave_offer(cases, qtbot):
    from napari_medseg.casestate import load_case, save_case
    from napari_medseg.widgets import _autosave

    viewer, widget, src, project, base, newest = cases
    widget.set_project(project)
    widget.open_worklist(src)
    assert widget.open_next()
    widget.cancel()  # before the first batch of slices is done
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.current is None and "Cancelled" in widget.status.text()
    assert [layer.name for layer in viewer.layers] == [] and widget.rows[0].status == "new"

    assert widget.open_next()
    wait_open(widget, qtbot)
    assert widget.open_next()  # leaves a_ct (saved), opens b_dicom
    wait_open(widget, qtbot)
    folder = case_folder(project, src / "a_ct.nii.gz")
    saved = load_case(folder)
    recovery = _autosave.recovery_dir() / saved.image_hash  # as if another session had autosaved it
    changed = saved.labels.copy()
    changed[3, :5, :5] = 2
    save_case(recovery, changed, saved.ledger, image_hash=saved.image_hash, label_set=saved.label_set)
    saver = _autosave.attach(viewer)

    def offers_for_open_image():
        return [o for o in saver.offers if o.image_id == str(widget._layers[0].unique_id)]

    assert widget.open_row(0)
    wait_open(widget, qtbot)
    assert len(offers_for_open_image()) == 1  # a different recovery copy stays offered
    widget.open_row(1)
    wait_open(widget, qtbot)
    save_case(recovery, saved.labels, saved.ledger, image_hash=saved.image_hash, label_set=saved.label_set)
    saver.offers.clear()
    assert widget.open_row(0)
    wait_open(widget, qtbot)
    assert offers_for_open_image() == []  # the same state as the project's: no restore dialog


def test_a_case_that_fails_to_open_becomes_unreadable_and_open_next_goes_on(cases, qtbot, sample_labels):
    viewer, widget, src, project, base, newest = cases
    shutil.copy(sample_labels, src / "a_ct_labels.nii.gz")  # listed (a readable NIfTI), refused on opening
    widget.set_project(project)
    widget.open_worklist(src)
    names = [r.source.name for r in widget.rows]
    assert names[:2] == ["a_ct.nii.gz", "a_ct_labels.nii.gz"] and widget.rows[1].status == "new"
    assert widget.open_row(1)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.current is None and widget.rows[1].status == UNREADABLE
    assert "holds labels" in widget.rows[1].reason and "holds labels" in widget.table.item(1, 0).toolTip()
    assert widget.open_next()  # the first usable case
    wait_open(widget, qtbot)
    assert widget.current.entry.source.name == "a_ct.nii.gz"
    assert widget.open_next()  # skips the unreadable row
    wait_open(widget, qtbot)
    assert widget.current.entry.source.name == "b_dicom" and widget.rows[1].status == UNREADABLE


def test_closing_napari_saves_the_open_case(cases, qtbot):
    from napari_medseg.casestate import load_case

    viewer, widget, src, project, base, newest = cases
    assert widget.set_project(project) and widget.open_worklist(src) and widget.open_next()
    wait_open(widget, qtbot)
    _, labels = widget._layers
    labels.brush_size = 6
    labels.paint((12, 50, 40), 5)  # painted, never saved by the user
    painted = np.array(labels.data)
    folder = case_folder(project, src / "a_ct.nii.gz")
    assert widget.flush()  # the save made on opening is on disk
    assert not np.array_equal(load_case(folder).labels, painted)
    viewer.close()
    state = load_case(folder)
    np.testing.assert_array_equal(state.labels, painted)
    assert state.ledger.edited == [12] and state.status == "in progress"


def test_saving_runs_in_the_background_and_a_failed_write_keeps_the_case_open(cases, qtbot, monkeypatch):
    import threading

    from napari_medseg import casestate

    viewer, widget, src, project, base, newest = cases
    assert widget.set_project(project) and widget.open_worklist(src) and widget.open_next()
    wait_open(widget, qtbot)
    assert widget.flush()
    image, labels = widget._layers
    release, real_save = threading.Event(), casestate.save_case

    def slow_save(*args, **kwargs):
        assert release.wait(30), "the test never released the write"
        return real_save(*args, **kwargs)

    monkeypatch.setattr(casestate, "save_case", slow_save)
    labels.brush_size = 6
    labels.paint((12, 50, 40), 5)
    painted = np.array(labels.data)
    assert widget.save_case()  # returns while the write is still blocked
    assert widget.status.text().startswith("Saving") and len(widget._pending) == 1
    labels.paint((12, 10, 10), 3)  # painting goes on; the save holds the snapshot taken at the click
    release.set()
    assert widget.flush() and widget.status.text().startswith("Saved a_ct.nii.gz")
    np.testing.assert_array_equal(casestate.load_case(case_folder(project, src / "a_ct.nii.gz")).labels, painted)

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(casestate, "save_case", failing_save)
    assert not widget.open_next()  # the write failed: the case and its layers stay open
    assert "Could not save a_ct.nii.gz" in widget.status.text() and "disk full" in widget.status.text()
    assert widget.current.entry.source.name == "a_ct.nii.gz" and widget._index(labels) is not None
    monkeypatch.setattr(casestate, "save_case", real_save)
    assert widget.open_next()  # the disk is back: leaving saves and goes on
    wait_open(widget, qtbot)
    assert widget.current.entry.source.name == "b_dicom"


def test_model_line_names_the_newest_model_of_each_modality(cases, tmp_path):
    viewer, widget, src, project, base, newest = cases
    assert widget.set_project(project)
    record_checkpoint(project, newest, "a-ct-case", dice_before=0.3, dice_after=0.7)
    mr = save_tiny(tmp_path / "mr.v2.safetensors", "dcaunet", modality="mr", seed=3)
    record_checkpoint(project, mr, "an-mr-case", dice_before=0.2, dice_after=0.6)
    widget.refresh_model()
    # an MR case is segmented by mr.v2 and a CT case by base.v2 (worklist.open_case): the line says both
    assert "MR scans: mr.v2.safetensors, CT scans: base.v2.safetensors" in widget.model_label.text()
    assert widget.model_label.toolTip().splitlines() == [str(mr), str(newest)]


def test_scribbles_are_saved_with_the_case_and_come_back(cases, qtbot):
    """Strokes are work too: leaving a case keeps them in its folder, reopening shows them again."""
    from napari_medseg.casestate import load_case

    viewer, widget, src, project, base, newest = cases
    assert widget.set_project(project) and widget.open_worklist(src) and widget.open_next()
    wait_open(widget, qtbot)
    image, labels = widget._layers
    segmented = np.array(labels.data)
    _, retrain = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    strokes = retrain.scribble_mode()
    strokes.brush_size = 3
    strokes.paint((7, 40, 40), 5)  # an organ stroke and a background stroke (K + 1) on slice 7
    strokes.paint((7, 80, 20), 9)
    strokes.paint((15, 50, 50), 7)
    painted = np.array(strokes.data)
    np.testing.assert_array_equal(labels.data, segmented)  # strokes go to their own layer, not the labels

    assert widget.open_next()  # leaves case 1: saved, and its scribble layer goes with its other layers
    wait_open(widget, qtbot)
    assert not any(same(layer, strokes) for layer in viewer.layers)
    folder = case_folder(project, src / "a_ct.nii.gz")
    np.testing.assert_array_equal(load_case(folder).scribbles, painted)
    assert json.loads((folder / "case.json").read_text())["scribbled"] == [7, 15]
    assert widget.table.item(0, 2).text() == "0 + 2 scribbled"  # the worklist shows the scribble work too

    assert widget.open_row(0)
    wait_open(widget, qtbot)
    image, labels = widget._layers
    restored = viewer.layers[f"{image.name} scribbles"]
    np.testing.assert_array_equal(restored.data, painted)
    np.testing.assert_allclose(restored.scale, image.scale[-3:])
    assert "scribbles on 2 slice(s)" in widget.status.text()
    if SCREENSHOT_DIR:
        viewer.dims.set_current_step(0, 7)
        viewer.screenshot(os.path.join(SCREENSHOT_DIR, "cases_scribbles_restored.png"), canvas_only=False)
    assert same(retrain.scribble_layer(), restored)  # Fine-tune trains on them again
    # the restored strokes were not painted in this round; a stroke on the restored layer counts at once,
    # without pressing Scribble mode
    cost = retrain.round_cost()
    assert cost == 0, cost
    restored.brush_size = 1
    restored.paint((20, 30, 30), 3)
    restored.events.paint(value=None)  # what a brush stroke in the canvas emits; paint() alone does not
    qtbot.waitUntil(lambda: f"this round: {cost + 1:,} px changed" in retrain.counts.text(), timeout=3000)
    restored.data[20, 30, 30] = 0  # undo the stroke for the checks below

    # closing the scribble layer keeps the saved strokes (deleting the layer is not erasing them) ...
    viewer.layers.remove(restored)
    assert widget.save_case(wait=True)
    np.testing.assert_array_equal(load_case(folder).scribbles, painted)
    # ... and Scribble mode brings them back on a new layer
    again = retrain.scribble_mode()
    np.testing.assert_array_equal(again.data, painted)
    # erasing strokes and saving does save the erasure
    again.data = np.zeros_like(painted)
    assert widget.save_case(wait=True)
    np.testing.assert_array_equal(load_case(folder).scribbles, 0)


def test_export_labels_saves_the_open_case_and_writes_source_geometry(cases, qtbot, tmp_path):
    import nibabel as nib

    from napari_medseg.io import read_volume
    from napari_medseg.worklist import case_id

    viewer, widget, src, project, base, newest = cases
    assert widget.set_project(project) and widget.open_worklist(src) and widget.open_next()
    wait_open(widget, qtbot)
    assert widget.open_next()  # case 1 saved, the DICOM case open
    wait_open(widget, qtbot)
    _, labels = widget._layers
    labels.brush_size = 6
    labels.paint((12, 50, 40), 7)  # painted on the open case, never saved by the user
    painted = np.array(labels.data)

    out = tmp_path / "export"
    assert widget.export_labels(out)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert "Exported 2 of 2 case(s)" in widget.status.text(), widget.status.text()
    rows = {r["case_id"]: r for r in json.loads((out / "cases.json").read_text())["cases"]}
    dicom_row = rows[case_id(src / "b_dicom")]
    assert dicom_row["edited"] == [12] and dicom_row["status"] == "in progress"
    # the DICOM case's file holds what is on screen, painted stroke included, in the series' own geometry
    written = out / dicom_row["file"]
    np.testing.assert_array_equal(read_volume(written).array, painted)
    source = nib.load(str(src / "a_ct.nii.gz"))
    a_written = nib.load(str(out / rows[case_id(src / "a_ct.nii.gz")]["file"]))
    np.testing.assert_allclose(a_written.affine, source.affine, atol=1e-4)
    assert a_written.shape == source.shape  # the NIfTI case in its file's voxel order, not the canonical one

    before = sorted(p.name for p in out.iterdir())
    assert not widget.export_labels(out)  # never over an earlier export
    assert "already exist" in widget.status.text()
    assert sorted(p.name for p in out.iterdir()) == before
    if SCREENSHOT_DIR:
        viewer.screenshot(os.path.join(SCREENSHOT_DIR, "cases_export.png"), canvas_only=False)


def test_retrain_dock_opens_in_a_tab_beside_segment_with_its_status_in_sight(cases, qtbot):
    """Three docks stacked in one column squeezed the Retrain dock to its first rows: its Fine-tune button
    and status line were scrolled out of sight. Now it shares the Segment dock's place, in front, and
    its run buttons, progress and status stay under its scrolling options."""
    from qtpy.QtWidgets import QDockWidget

    viewer, widget, src, project, base, newest = cases
    viewer.window._qt_window.resize(1400, 900)
    assert widget.set_project(project) and widget.open_worklist(src) and widget.open_next()
    wait_open(widget, qtbot)
    docks = viewer.window.dock_widgets  # name -> our widget; its parent is napari's QDockWidget
    retrain = docks["Correct and retrain (napari-medseg)"]
    frames = {name.split(" (")[0]: widget.parent() for name, widget in docks.items()}
    assert frames["Correct and retrain"] in viewer.window._qt_window.tabifiedDockWidgets(frames["Segment"])
    qtbot.waitUntil(lambda: not retrain.visibleRegion().isEmpty())  # the tab in front
    for part in (retrain.status, retrain.run_btn, retrain.progress, widget.status, widget.next_btn):
        qtbot.waitUntil(lambda part=part: not part.visibleRegion().isEmpty(), timeout=5000)
    qtbot.waitUntil(lambda: frames["Correct and retrain"].height() > frames["Cases"].height(), timeout=5000)
    assert all(isinstance(f, QDockWidget) for f in frames.values())


def test_active_time_and_changed_voxels_are_saved_with_the_case(cases, qtbot):
    """The user's effort on each case (active time, voxels changed) goes into case.json and the table's tooltip."""
    viewer, widget, src, project, base, newest = cases
    assert widget.set_project(project) and widget.open_worklist(src) and widget.open_next()
    wait_open(widget, qtbot)
    widget._ticker.setInterval(100)  # 10 s ticks in use; the same rule, faster
    qtbot.wait(350)  # opening counts as activity: the first tick only
    _, labels = widget._layers
    labels.brush_size = 4
    labels.paint((12, 50, 40), 5)
    qtbot.wait(250)
    assert widget.save_case(wait=True)
    info = json.loads((case_folder(project, src / "a_ct.nii.gz") / "case.json").read_text())
    assert 0.15 <= info["active_seconds"] <= 0.45  # two or three active ticks of 0.1 s, no more: idle ticks do not count
    assert info["changed_voxels"] == int((np.asarray(labels.data) != widget.current.ledger.to_state()["model_output"]).sum()) > 0
    qtbot.wait(500)  # idle: nothing counted
    assert widget.save_case(wait=True)
    again = json.loads((case_folder(project, src / "a_ct.nii.gz") / "case.json").read_text())
    assert again["active_seconds"] == info["active_seconds"]
    assert info["opened_at"] and again["opened_at"] == info["opened_at"]  # when it was first opened, kept
    assert "voxels changed" in widget.table.item(0, 0).toolTip()
