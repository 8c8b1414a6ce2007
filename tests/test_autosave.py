"""Autosave of managed labels layers and the restore offer, in one viewer and then in a fresh one."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_medseg._sample_data import SAMPLE_CT

pytestmark = pytest.mark.gui
SCREENSHOT_DIR = os.environ.get("MEDSEG_SCREENSHOT_DIR")


def open_ct(viewer):
    (image,) = viewer.open(str(SAMPLE_CT), plugin="napari-medseg")
    _, dock = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    dock.image_combo.setCurrentText(image.name)
    return image, dock


def test_autosave_only_when_changed_then_restore_in_new_viewer(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    from napari_medseg.casestate import read_case_info
    from napari_medseg.hashing import voxel_hash
    from napari_medseg.recovery import layer_slug

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer(show=True)
    image, dock = open_ct(viewer)
    saver = dock.autosave
    assert saver.offers == []  # nothing saved yet for this image
    dock.new_labels_layer()
    labels = viewer.layers[dock.labels_combo.currentText()]
    assert saver.save_changed() == [labels.name]  # a new managed layer: saved once ...
    saver.flush()
    assert saver.save_changed() == []  # ... and not again while nothing changed
    labels.brush_size = 6
    labels.paint((12, 50, 40), 5)
    labels.paint((20, 40, 60), 2)
    _ledger = dock.autosave.managed()[0][0].metadata["medseg_ledger"]
    _ledger.mark_reviewed(25)
    assert saver.save_changed() == [labels.name]
    saver.flush()
    folder = tmp_path / "data" / "recovery" / voxel_hash(np.asarray(image.data)) / layer_slug(labels.name)
    assert labels.metadata["medseg_recovery"] == {"folder": str(folder), "frame": None}
    info = read_case_info(folder)
    assert info["edited"] == [12, 20] and info["reviewed"] == [25] and info["status"] == "in progress"
    expected = np.array(labels.data)
    labels.paint((5, 50, 50), 3)  # after the last autosave: may be lost, must not corrupt anything

    other = make_napari_viewer(show=True)
    image2, dock2 = open_ct(other)
    assert len(dock2.autosave.offers) == 1 and dock2.autosave is not saver
    assert dock2.autosave.dialog is not None and dock2.autosave.dialog.isVisible()
    assert "ct_abdomen" in dock2.autosave.dialog.text() and "3 corrected or reviewed" in dock2.autosave.dialog.text()
    if SCREENSHOT_DIR:
        qtbot.wait(300)
        other.screenshot(os.path.join(SCREENSHOT_DIR, "autosave_offer.png"), canvas_only=False)
    restored = dock2.autosave.restore()
    np.testing.assert_array_equal(restored.data, expected)
    ledger = restored.metadata["medseg_ledger"]
    assert ledger.edited == [12, 20] and ledger.reviewed == [25]
    assert restored.metadata["medseg"]["locked_slices"] == [12, 20, 25]
    np.testing.assert_allclose(restored.scale, image2.scale)
    assert dock2.autosave.offers == [] and dock2.autosave.dialog is None  # answered: the dialog closed
    assert dock2.autosave.save_changed() == []  # restored state is the saved state


def test_restore_never_replaces_open_labels(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer(show=True)
    image, dock = open_ct(viewer)
    dock.new_labels_layer()
    labels = viewer.layers[dock.labels_combo.currentText()]
    labels.paint((10, 50, 50), 4)
    dock.autosave.save(labels, image)
    dock.autosave.flush()

    other = make_napari_viewer(show=True)
    image2, dock2 = open_ct(other)
    dock2.new_labels_layer()  # the user starts over before answering the offer
    mine = other.layers[dock2.labels_combo.currentText()]
    mine.paint((3, 20, 20), 1)
    before = np.array(mine.data)
    restored = dock2.autosave.restore(dock2.autosave.offers[0])
    assert restored.name == f"{mine.name} (recovered)"
    np.testing.assert_array_equal(mine.data, before)
    np.testing.assert_array_equal(restored.data, labels.data)


def test_unreadable_autosave_is_named_not_offered(make_napari_viewer, tmp_path, monkeypatch):
    from napari_medseg.hashing import voxel_hash
    from napari_medseg.io import read_volume
    from napari_medseg.recovery import case_folder

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    folder = case_folder(voxel_hash(read_volume(SAMPLE_CT).array), "ct_abdomen labels", root=tmp_path / "data" / "recovery")
    folder.mkdir(parents=True)
    (folder / "case.json").write_text(json.dumps({"format": "something else"}))
    viewer = make_napari_viewer(show=True)
    _, dock = open_ct(viewer)
    assert dock.autosave.offers == [] and dock.autosave.dialog is None
    assert "cannot be read" in dock.autosave.last_error and "case.json" in dock.autosave.last_error


def test_failed_autosave_is_reported_and_retried(make_napari_viewer, tmp_path, monkeypatch):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data dir should be")
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(blocker))
    viewer = make_napari_viewer(show=True)
    image, dock = open_ct(viewer)
    dock.new_labels_layer()
    labels = viewer.layers[dock.labels_combo.currentText()]
    assert dock.autosave.save_changed() == [labels.name]
    dock.autosave.flush()
    assert "failed" in dock.autosave.last_error and str(blocker) in dock.autosave.last_error
    assert dock.autosave.save_changed() == [labels.name]  # not marked saved: tried again at the next tick
