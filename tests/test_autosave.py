"""Autosave of managed labels layers and the restore offer, in one viewer and then in a fresh one."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def painted_and_autosaved(viewer):
    """The CT with a new labels layer, one stroke painted on slice 10, autosaved: ``(image, dock, labels, folder)``."""
    image, dock = open_ct(viewer)
    dock.new_labels_layer()
    labels = viewer.layers[dock.labels_combo.currentText()]
    labels.paint((10, 50, 50), 4)
    folder = dock.autosave.save(labels, image)
    dock.autosave.flush()
    return image, dock, labels, folder


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
    image, dock, labels, _ = painted_and_autosaved(viewer)

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


# ------------------------------------------------ offers with no dock, saved marker, per layer, pruning, 4D
def wait_for_offers(qtbot, viewer, n):
    """The autosaver the reader attached (no dock opened), once it holds ``n`` offers."""
    from napari_medseg.widgets._autosave import attached

    qtbot.waitUntil(lambda: attached(viewer) is not None and len(attached(viewer).offers) == n, timeout=10_000)
    return attached(viewer)


def add_labels(viewer, image, name, paint):
    from napari_medseg.io.layers import labels_layer_kwargs, layer_geometry
    from napari_medseg.labels import SYNAPSE

    geometry, _ = layer_geometry(image.metadata, image.data.shape[-3:], image.scale[-3:], image.translate[-3:])
    data = np.zeros(image.data.shape[-3:], np.uint8)
    layer = viewer.add_labels(data, **labels_layer_kwargs(data, geometry, SYNAPSE, name))
    layer.brush_size = 6
    for point, value in paint:
        layer.paint(point, value)
    return layer


def test_offer_with_no_dock_after_the_sample_then_the_file(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    """The sample and the file hold the same voxels: an autosave made on one is offered when the other opens."""
    from napari_medseg.widgets._autosave import attached

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer(show=True)
    image, _organs = viewer.open_sample("napari-medseg", "abdominal_ct")
    qtbot.waitUntil(lambda: attached(viewer) is not None, timeout=10_000)  # the sample attached it, no dock
    saver = attached(viewer)
    assert saver.offers == [] and len(viewer.window.dock_widgets) == 0
    mine = add_labels(viewer, image, "abdominal CT labels", [((9, 50, 50), 6)])
    assert [layer.name for layer, _ in saver.managed()] == ["abdominal CT labels"]  # by name; "organs" is not managed
    assert saver.save_changed() == ["abdominal CT labels"]
    saver.flush()

    other = make_napari_viewer(show=True)
    other.open(str(SAMPLE_CT), plugin="napari-medseg")
    saver2 = wait_for_offers(qtbot, other, 1)
    assert saver2 is not saver and saver2.dialog is not None and saver2.dialog.isVisible()
    assert "\u201cabdominal CT labels\u201d on \u201cct_abdomen\u201d" in saver2.dialog.text()
    restored = saver2.restore()
    assert restored.name == "ct_abdomen labels"  # "<image> labels" follows the image's name
    np.testing.assert_array_equal(restored.data, mine.data)
    assert saver2.dialog is None


def test_no_offer_when_the_user_saved_after_the_autosave(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    from napari_medseg.recovery import SAVED_JSON, last_saved
    from napari_medseg.widgets._autosave import _local

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer(show=True)
    image, dock, labels, folder = painted_and_autosaved(viewer)
    assert not (folder / SAVED_JSON).exists()
    (written,) = labels.save(str(tmp_path / "mine.nii.gz"), plugin="napari-medseg")  # the user saves
    assert last_saved(folder)["path"] == written

    second = make_napari_viewer(show=True)
    second.open(str(SAMPLE_CT), plugin="napari-medseg")
    saver2 = wait_for_offers(qtbot, second, 0)
    qtbot.wait(200)
    assert saver2.offers == [] and saver2.dialog is None  # the autosave is not newer than the save

    labels.paint((14, 50, 50), 2)  # edits after the save ...
    assert dock.autosave.save_changed() == [labels.name]  # ... autosaved
    dock.autosave.flush()
    third = make_napari_viewer(show=True)
    third.open(str(SAMPLE_CT), plugin="napari-medseg")
    saver3 = wait_for_offers(qtbot, third, 1)
    offer = saver3.offers[0]
    text = saver3.dialog.text()
    assert f"taken {_local(offer.saved_at)}" in text and "newer than your last save" in text and "mine.nii.gz" in text
    assert offer.saved_at > last_saved(folder)["saved_at"]
    if SCREENSHOT_DIR:
        saver3.dialog.grab().save(os.path.join(SCREENSHOT_DIR, "autosave_offer_after_save.png"))
    np.testing.assert_array_equal(saver3.restore().data, labels.data)


def test_two_labels_layers_of_one_image_are_kept_and_offered_apart(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    from napari_medseg.casestate import read_case_info

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer(show=True)
    image, dock = open_ct(viewer)
    first = add_labels(viewer, image, "ct_abdomen labels", [((8, 50, 50), 6)])
    second = add_labels(viewer, image, "liver only", [((12, 40, 60), 6), ((13, 40, 60), 6)])
    saver = dock.autosave
    saver.save(second, image, reason="segment")  # a model update went through it: managed from now on
    assert sorted(saver.save_changed()) == ["ct_abdomen labels"]
    saver.flush()
    folders = {Path(layer.metadata["medseg_recovery"]["folder"]) for layer in (first, second)}
    assert len(folders) == 2 and all(read_case_info(f)["layer_name"] in ("ct_abdomen labels", "liver only") for f in folders)

    other = make_napari_viewer(show=True)
    other.open(str(SAMPLE_CT), plugin="napari-medseg")
    saver2 = wait_for_offers(qtbot, other, 2)
    assert {o.layer_name for o in saver2.offers} == {"ct_abdomen labels", "liver only"}
    assert len(saver2._dialogs) == 2  # one offer each
    liver_offer = next(o for o in saver2.offers if o.layer_name == "liver only")
    declined = next(o for o in saver2.offers if o is not liver_offer)
    restored = saver2.restore(liver_offer)
    assert restored.name == "liver only"
    np.testing.assert_array_equal(restored.data, second.data)
    next(b for b in saver2.dialog.buttons() if b.text() == "Not now").click()  # the other one: not now
    assert saver2.dialog is None and saver2.offers == [declined]

    # the user starts again in a layer of the declined one's name: the declined autosave is not overwritten
    before = (declined.folder / "case.json").read_text()
    image2 = other.layers["ct_abdomen"]
    fresh = add_labels(other, image2, "ct_abdomen labels", [((20, 30, 30), 1)])
    assert saver2.save_changed() == ["ct_abdomen labels"]
    saver2.flush()
    assert (declined.folder / "case.json").read_text() == before
    assert Path(fresh.metadata["medseg_recovery"]["folder"]) == declined.folder.with_name(declined.folder.name + "~2")
    restored.paint((25, 30, 30), 3)
    assert saver2.save_changed() == ["liver only"]  # the restored layer keeps saving into its own folder
    saver2.flush()
    assert 25 in read_case_info(liver_offer.folder)["edited"]


def test_opening_an_image_prunes_old_autosaves_but_not_its_own(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    import time

    from napari_medseg import recovery
    from napari_medseg.hashing import voxel_hash
    from napari_medseg.io import read_volume

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(recovery, "KEEP_NEWEST", 0)
    viewer = make_napari_viewer(show=True)
    image, dock = open_ct(viewer)
    labels = add_labels(viewer, image, "ct_abdomen labels", [((8, 50, 50), 6)])
    dock.autosave.save(labels, image)
    dock.autosave.flush()
    mine = tmp_path / "data" / "recovery" / voxel_hash(read_volume(SAMPLE_CT).array)
    stranger = tmp_path / "data" / "recovery" / ("0" * 64) / "x-00000000"
    stranger.mkdir(parents=True)
    (stranger / "case.json").write_text("{}")
    old = time.time() - 40 * 86400
    for path in [*mine.rglob("*"), mine, stranger / "case.json", stranger, stranger.parent]:
        os.utime(path, (old, old))

    other = make_napari_viewer(show=True)
    other.open(str(SAMPLE_CT), plugin="napari-medseg")
    saver2 = wait_for_offers(qtbot, other, 1)  # the CT's own autosave: kept (its image is open) and offered
    saver2.flush()  # pruning runs in the autosave thread
    assert not stranger.parent.exists() and mine.is_dir()
    np.testing.assert_array_equal(saver2.restore().data, labels.data)


def test_4d_labels_are_saved_per_frame(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    import nibabel as nib

    from napari_medseg.casestate import read_case_info

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    rng = np.random.default_rng(0)
    cine = rng.integers(-500, 500, size=(48, 40, 6, 3)).astype(np.int16)  # (x, y, z, t)
    nib.save(nib.Nifti1Image(cine, np.diag([1.5, 1.5, 4.0, 1.0])), str(tmp_path / "cine.nii.gz"))
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(tmp_path / "cine.nii.gz"), plugin="napari-medseg")
    assert image.data.ndim == 4
    _, dock = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    saver = dock.autosave
    viewer.dims.set_current_step(0, 2)
    labels = add_labels(viewer, image, "cine labels", [((3, 20, 20), 2)])
    f2 = saver.save(labels, image, reason="segment")  # a model update on the frame on screen
    viewer.dims.set_current_step(0, 1)
    labels.paint((4, 20, 20), 2)
    assert saver.save(labels, image, reason="periodic") == f2  # a timer save keeps the layer's frame
    f1 = saver.save(labels, image, reason="segment")  # Segment on frame 1 rewrote the layer: a new folder
    labels.paint((5, 20, 20), 2)
    assert saver.save(labels, image, reason="periodic") == f1
    frame2_labels = np.array(labels.data)
    frame2_labels[5] = 0  # slice 5 was painted after frame 2 was left
    saver.flush()
    assert f2.name.endswith("-t2") and f1.name.endswith("-t1") and f1.parent == f2.parent
    assert read_case_info(f2)["frame"] == 2 and read_case_info(f1)["frame"] == 1
    assert labels.metadata["medseg_recovery"]["frame"] == 1

    whole = viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="cine labels [4D]")
    saver._pairs[str(whole.unique_id)] = str(image.unique_id)
    saver.save_changed()
    assert "4D labels layer" in saver.last_error and "cine labels [4D]" in saver.last_error
    saver.last_error = None
    saver.save_changed()
    assert saver.last_error is None  # said once

    other = make_napari_viewer(show=True)
    other.open(str(tmp_path / "cine.nii.gz"), plugin="napari-medseg")
    saver2 = wait_for_offers(qtbot, other, 2)
    assert sorted(o.frame for o in saver2.offers) == [1, 2]
    frame2 = next(o for o in saver2.offers if o.frame == 2)
    assert "time frame t=2" in next(box for o, box in saver2._dialogs if o is frame2).text()
    restored = saver2.restore(frame2)
    assert restored.data.shape == image.data.shape[1:] and restored.metadata["medseg_recovery"]["frame"] == 2
    np.testing.assert_array_equal(restored.data, frame2_labels)  # the last save to frame 2's folder (the timer's)
    np.testing.assert_allclose(restored.scale, image.scale[1:])


def test_offer_in_the_viewer_the_image_went_into(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    """Opening in a viewer that is not the current one: the offer comes in that viewer."""
    from napari_medseg.widgets._autosave import attached

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer(show=True)
    image, dock = open_ct(viewer)
    labels = add_labels(viewer, image, "ct_abdomen labels", [((8, 50, 50), 6)])
    dock.autosave.save(labels, image)
    dock.autosave.flush()
    older, newer = make_napari_viewer(show=True), make_napari_viewer(show=True)
    older.open(str(SAMPLE_CT), plugin="napari-medseg")
    saver = wait_for_offers(qtbot, older, 1)
    assert saver.dialog is not None and attached(newer) is None  # nothing was opened in the other one


def test_closing_napari_saves_the_last_strokes(make_napari_viewer, tmp_path, monkeypatch):
    """Paint after the last periodic autosave, close napari: the stroke is in the recovery folder.

    ``viewer.close()`` removes the layers first (the ``removing`` hook saves); the window's close
    button only closes the main window with the layers still there (the close-event filter saves,
    see ``test_close_filter_calls_back_before_the_window_closes``).
    """
    from napari_medseg.casestate import load_case

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer(show=True)
    image, dock, labels, folder = painted_and_autosaved(viewer)
    labels.paint((20, 40, 60), 2)  # between two ticks of the 30 s timer
    expected = np.array(labels.data)
    assert not np.array_equal(load_case(folder).labels, expected)
    viewer.close()
    state = load_case(folder)
    np.testing.assert_array_equal(state.labels, expected)
    assert state.ledger.edited == [10, 20]


def test_close_filter_calls_back_before_the_window_closes(qtbot):
    """The close button path: a close event on the main window calls back once, layers or not.

    A plain QMainWindow stands in for napari's (closing napari's own window by hand leaves its
    Window object half torn down under PyQt6, which breaks the viewer fixture's teardown).
    """
    from types import SimpleNamespace

    from qtpy.QtWidgets import QMainWindow

    from napari_medseg.widgets._on_close import call_before_close

    window = QMainWindow()
    qtbot.addWidget(window)
    window.show()
    calls = []
    viewer = SimpleNamespace(window=SimpleNamespace(_qt_window=window))
    assert call_before_close(viewer, lambda: calls.append(window.isVisible()))
    assert calls == []
    window.close()
    assert calls == [True]  # called while the window was still open, before it went
    assert not call_before_close(SimpleNamespace(), lambda: None)  # no Qt window: only the quit hook


def test_a_script_adding_an_array_gets_the_offer_after_enable_autosave(make_napari_viewer, tmp_path, monkeypatch,
                                                                       qtbot):
    """``viewer.add_image(array)`` imports no plugin: ``napari_medseg.enable_autosave(viewer)`` is the script's switch."""
    import napari_medseg
    from napari_medseg.io import read_volume
    from napari_medseg.widgets._autosave import attached

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    _image, _dock, labels, _folder = painted_and_autosaved(make_napari_viewer(show=True))
    expected = np.array(labels.data)

    script = make_napari_viewer(show=True)
    script.add_image(read_volume(SAMPLE_CT).array, name="from a script")
    assert attached(script) is None  # nothing of the plugin was used: no autosaver, no offer
    saver = napari_medseg.enable_autosave(script)
    assert saver is attached(script) and napari_medseg.enable_autosave(script) is saver  # one per viewer
    assert wait_for_offers(qtbot, script, 1) is saver  # the voxels are hashed off the GUI thread
    assert saver.dialog is not None and saver.dialog.isVisible()
    restored = saver.restore()
    np.testing.assert_array_equal(restored.data, expected)
    restored.paint((14, 40, 40), 2)  # labels on a script's image are autosaved too
    assert saver.save_changed() == [restored.name]
    saver.flush()


def test_scribbles_are_autosaved_and_restored_as_a_scribble_layer(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    """Strokes cost painting time too: the scribble layer is autosaved and offered back as a scribble layer."""
    from napari_medseg.casestate import read_case_info

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer(show=True)
    image, dock = open_ct(viewer)
    strokes = dock.scribble_mode()
    strokes.brush_size = 3
    strokes.paint((8, 40, 40), 5)
    strokes.paint((8, 80, 20), 9)  # background (K + 1)
    strokes.paint((16, 50, 50), 7)
    assert strokes.name in dock.autosave.save_changed()
    dock.autosave.flush()
    info = read_case_info(strokes.metadata["medseg_recovery"]["folder"])
    assert info["scribbled"] == [8, 16] and info["locked"] == []  # strokes are not corrections
    assert "medseg_ledger" not in strokes.metadata  # no slice ledger for strokes
    painted = np.array(strokes.data)

    other = make_napari_viewer(show=True)
    image2, dock2 = open_ct(other)
    offer = next(o for o in dock2.autosave.offers if o.layer_name == strokes.name)
    dialog = next(box for o, box in dock2.autosave._dialogs if o is offer)
    assert "2 slice(s) with strokes" in dialog.text()
    restored = dock2.autosave.restore(offer)
    assert restored.name == f"{image2.name} scribbles"
    np.testing.assert_array_equal(restored.data, painted)
    assert dock2.scribble_layer() is not None and dock2.scribble_layer().unique_id == restored.unique_id
    assert "medseg_ledger" not in restored.metadata
