"""The Segment dock widget, opened through the manifest (run under ``xvfb-run -a``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from _segment_helpers import save_tiny, trained_checkpoint
from napari_medseg.labels import SYNAPSE
from napari_medseg.zsmooth import Z_SIGMA_MM

SCREENSHOT_DIR = Path(os.environ.get("MEDSEG_SCREENSHOTS", "/tmp/medseg_screenshots"))


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    """Recent checkpoints go to a temporary config dir, never the home dir."""
    monkeypatch.setenv("MEDSEG_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("seg") / "tiny_dcaunet.safetensors", "dcaunet", seed=1)


def add_sample(viewer, sample_ct):
    from napari_medseg.io import layer_kwargs, read_volume

    vol = read_volume(sample_ct)
    return viewer.add_image(vol.array, **layer_kwargs(vol))


def open_segment(viewer):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    return widget


def wait_done(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def test_no_checkpoint_says_so(make_napari_viewer, sample_ct):
    viewer = make_napari_viewer()
    add_sample(viewer, sample_ct)
    w = open_segment(viewer)
    assert not w.hint.isHidden() and "Correct and retrain" in w.hint.text()
    assert "No model checkpoint" in w.hint.text()
    assert not w.segment_button.isEnabled()
    w.segment()  # called anyway: a message, no layer from random weights
    assert "No model checkpoint" in w.status.text()
    assert [layer.name for layer in viewer.layers] == ["ct_abdomen"]


@pytest.mark.slow
def test_segment_end_to_end(make_napari_viewer, qtbot, sample_ct, sample_labels, tmp_path_factory, config_dir):
    from napari.layers import Labels

    from napari_medseg.recent import recent_checkpoints

    ckpt = trained_checkpoint(tmp_path_factory.getbasetemp(), sample_ct, sample_labels)  # shows real organs

    viewer = make_napari_viewer()
    image = add_sample(viewer, sample_ct)
    w = open_segment(viewer)
    assert w.add_checkpoint(ckpt)
    assert w.hint.isHidden() and w.segment_button.isEnabled()
    assert recent_checkpoints() == [ckpt.resolve()]
    w.unc_check.setChecked(True)
    w.segment_button.click()
    assert w.cancel_button.isEnabled()
    wait_done(qtbot, w)
    assert w.status.text().startswith("Done"), w.status.text()
    assert "slices/s" in w.status.text() and "cpu" in w.status.text()

    layer = viewer.layers["ct_abdomen labels"]
    assert isinstance(layer, Labels)
    assert layer.data.shape == image.data.shape and layer.data.dtype == np.uint8
    np.testing.assert_allclose(layer.scale, image.scale)
    np.testing.assert_allclose(layer.translate, image.translate)
    meta = layer.metadata["medseg"]
    assert meta["geometry"] == image.metadata["medseg"]["geometry"]
    assert meta["label_set"] == SYNAPSE.to_dict() and meta["locked_slices"] == []
    np.testing.assert_allclose(layer.colormap.map(5)[:3], SYNAPSE.colors[5][:3], atol=1e-6)
    assert list(layer.features["name"]) == [SYNAPSE.names[i] for i in range(9)]
    unc = viewer.layers["ct_abdomen uncertainty"]
    assert unc.data.dtype == np.float16 and unc.data.shape == image.data.shape
    rows = w.table.rows_text()
    assert [r[0] for r in rows] == list(SYNAPSE.organs.values())
    # volume in mL = voxels x 27 mm^3 / 1000 (3 mm isotropic)
    voxels = int((layer.data == 5).sum())
    assert rows[4][1] == f"{voxels * 27 / 1000:.1f}"
    # with the uncertainty computed, a fourth column: the mean normalised entropy inside the organ
    assert len(rows[4]) == 4 and w.table.horizontalHeaderItem(3).text() == "uncertainty"
    assert float(rows[4][3]) == pytest.approx(unc.data[layer.data == 5].astype(np.float64).mean(), abs=0.006)
    # clicking an organ's row goes to the slice holding most of its uncertainty, ready to paint that organ
    from qtpy.QtCore import Qt

    liver_unc = np.where(layer.data == 5, unc.data.astype(np.float64), 0).sum(axis=(1, 2))
    focus = int(np.argmax(liver_unc))
    viewer.dims.set_current_step(0, 0 if focus > 15 else 29)
    layer.selected_label = 1
    viewer.layers.selection.active = image
    qtbot.mouseClick(w.table.viewport(), Qt.MouseButton.LeftButton, pos=w.table.visualItemRect(w.table.item(4, 0)).center())
    assert viewer.dims.current_step[0] == focus
    assert layer.selected_label == 5 and viewer.layers.selection.active is layer

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    viewer.window.resize(1400, 850)
    viewer.dims.set_current_step(0, 15)
    viewer.screenshot(str(SCREENSHOT_DIR / "segment_widget.png"), canvas_only=False)
    qtbot.mouseClick(w.table.viewport(), Qt.MouseButton.LeftButton, pos=w.table.visualItemRect(w.table.item(6, 0)).center())
    viewer.screenshot(str(SCREENSHOT_DIR / "segment_widget_organ_clicked.png"), canvas_only=False)

    # re-run: same layer updated in place, locked slices kept.  Without smoothing across slices, so
    # that the locked slice (all "gallbladder") does not also steer its neighbours
    assert w.z_sigma.value() == Z_SIGMA_MM
    w.z_sigma.setValue(0)
    assert w.z_sigma.text() == "off"
    w.unc_check.setChecked(False)  # no heat-map layer wanted: the table still ranks the organs by uncertainty
    old_unc = np.array(unc.data)
    w.segment_button.click()
    wait_done(qtbot, w)
    assert w.table.columnCount() == 4 and not w.table.isColumnHidden(3) and 0 <= float(w.table.rows_text()[4][3]) <= 1
    # the heat map already shown is kept current (not left stale beside the new labels) ...
    assert not np.array_equal(viewer.layers["ct_abdomen uncertainty"].data, old_unc)
    viewer.layers.remove("ct_abdomen uncertainty")  # ... and without one, none is added
    first = layer.data.copy()
    layer.data[3] = 2  # a user's edit: the slice ledger finds it by diff and locks slice 3
    w.segment_button.click()
    wait_done(qtbot, w)
    assert "1 locked slice" in w.status.text(), w.status.text()
    assert "ct_abdomen uncertainty" not in viewer.layers and 0 <= float(w.table.rows_text()[4][3]) <= 1
    assert viewer.layers["ct_abdomen labels"] is layer
    assert [lyr.name for lyr in viewer.layers].count("ct_abdomen labels") == 1
    assert (layer.data[3] == 2).all()
    others = [k for k in range(first.shape[0]) if k != 3]
    # the same prediction elsewhere; only pieces that were joined through slice 3's old labels may
    # now be islands (slice 3 is all "gallbladder"), removed by "One piece per organ": set to
    # background, never relabelled
    changed = layer.data[others] != first[others]
    assert (layer.data[others][changed] == 0).all()
    assert layer.metadata["medseg"]["locked_slices"] == [3]
    removed_islands = "island" in w.status.text()
    post = layer.data[others].copy()
    w.one_piece_check.setChecked(False)  # every piece kept: a superset of the post-processed labels
    w.segment_button.click()
    wait_done(qtbot, w)
    raw = layer.data[others]
    assert "island" not in w.status.text() and ((post == raw) | (post == 0)).all()
    assert (raw != post).any() == removed_islands


def test_cancel(make_napari_viewer, qtbot, ckpt):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.normal(0, 300, (240, 96, 96)).astype(np.float32), name="big")
    w = open_segment(viewer)
    w.add_checkpoint(ckpt)
    w.segment_button.click()
    seen = []

    def cancel_on_first(progress):
        seen.append(progress.done)
        if progress.done > 0:
            w.cancel()

    w.worker.yielded.connect(cancel_on_first)
    wait_done(qtbot, w)
    assert "Cancelled" in w.status.text(), w.status.text()
    assert "big labels" not in viewer.layers
    assert max(seen) < 240


def test_4d_segments_current_frame(make_napari_viewer, qtbot, ckpt):
    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume

    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    data = rng.normal(0, 300, (3, 6, 40, 40)).astype(np.float32)
    viewer.add_image(data, name="cine", scale=(1, 2, 1.5, 1.5))
    viewer.dims.set_current_step(0, 2)
    w = open_segment(viewer)
    w.add_checkpoint(ckpt)
    w.segment_button.click()
    wait_done(qtbot, w)
    assert "t=2" in w.status.text(), w.status.text()
    layer = viewer.layers["cine labels t=2"]  # one labels layer per time frame
    assert layer.data.shape == (6, 40, 40)
    np.testing.assert_allclose(layer.scale, (2, 1.5, 1.5))
    assert "geometry" not in layer.metadata["medseg"]  # a plain image has none: saving the labels warns
    assert "time_axis" not in layer.metadata["medseg"] and layer.metadata["medseg"]["label_set"]["name"] == "synapse"
    expected = run_segmentation(segment_volume(data[2], load_checkpoints([ckpt]), device="cpu", spacing=(2, 1.5, 1.5))).labels
    np.testing.assert_array_equal(layer.data, expected)

    # the user corrects slice 3 of frame 2, then segments frame 0: frame 2's labels and edits stay as they are,
    # and frame 0 is not given frame 2's corrected slice as a "locked" one
    layer.data[3] = 1
    edited = np.array(layer.data)
    viewer.dims.set_current_step(0, 0)
    w.segment_button.click()
    wait_done(qtbot, w)
    assert "t=0" in w.status.text() and "locked" not in w.status.text(), w.status.text()
    np.testing.assert_array_equal(viewer.layers["cine labels t=2"].data, edited)
    expected0 = run_segmentation(segment_volume(data[0], load_checkpoints([ckpt]), device="cpu",
                                                spacing=(2, 1.5, 1.5))).labels
    np.testing.assert_array_equal(viewer.layers["cine labels t=0"].data, expected0)


def test_ensemble_needs_one_label_set(make_napari_viewer, qtbot, ckpt, tmp_path):
    from napari_medseg.labels import ACDC

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="vol")
    w = open_segment(viewer)
    other = save_tiny(tmp_path / "acdc.safetensors", "dcaunet", label_set=ACDC)
    w.add_checkpoint(ckpt)
    w.add_checkpoint(other)
    assert w.ensemble_check.isEnabled()
    w.ensemble_check.setChecked(True)
    w.segment_button.click()
    assert w.worker is None
    assert "same label set" in w.status.text()
    assert "vol labels" not in viewer.layers
    w.ensemble_check.setChecked(False)  # only the selected (ACDC) checkpoint is used
    w.segment_button.click()
    wait_done(qtbot, w)
    assert viewer.layers["vol labels"].metadata["medseg"]["label_set"]["name"] == "acdc"


def test_flip_tta_is_off_for_a_checkpoint_trained_without_flips(make_napari_viewer, qtbot, ckpt, tmp_path):
    from napari_medseg.checkpoint import load_checkpoint, save_checkpoint

    model, info = load_checkpoint(ckpt)
    fine_tuned = tmp_path / "fine_tuned.safetensors"
    save_checkpoint(fine_tuned, model, label_set=info.label_set, preprocessing=info.preprocessing,
                    provenance={"slices": [3], "augment": {"p_rotate": 0.3, "p_flip": 0.0, "p_rot90": 0.0}})
    flipped = tmp_path / "papers_recipe.safetensors"
    save_checkpoint(flipped, model, label_set=info.label_set, preprocessing=info.preprocessing,
                    provenance={"kind": "train", "augment": {"p_rot90": 0.5, "p_flip": 0.0}})
    w = open_segment(make_napari_viewer())
    assert w.add_checkpoint(flipped)
    w.tta_check.setChecked(True)
    assert w.tta_check.isEnabled() and w.tta_check.isChecked()
    assert w.add_checkpoint(fine_tuned)  # becomes the current one
    assert not w.tta_check.isEnabled() and not w.tta_check.isChecked()
    assert "fine_tuned.safetensors was trained without flips" in w.tta_check.toolTip()
    w.ckpt_list.setCurrentRow(0)  # back to the flip-trained one
    assert w.tta_check.isEnabled()
    w.ensemble_check.setChecked(True)  # both together: one of them refuses
    assert not w.tta_check.isEnabled()


def test_a_checkpoint_of_another_modality_does_not_segment(make_napari_viewer, qtbot, ckpt, tmp_path, sample_ct):
    """A CT model on an MR image would paint organ-shaped noise as a prediction: refused, with what to do."""
    viewer = make_napari_viewer()
    image = add_sample(viewer, sample_ct)
    image.metadata["medseg"] = {**image.metadata["medseg"], "modality": "mr"}  # as the reader marks an MR scan
    w = open_segment(viewer)
    w.add_checkpoint(ckpt)
    w.segment_button.click()
    assert w.worker is None and f"{image.name} labels" not in viewer.layers
    text = w.status.text()
    assert text.startswith("Not segmented") and "trained on CT images" in text and "add an MR checkpoint" in text
    image.metadata["medseg"] = {**image.metadata["medseg"], "modality": "ct"}
    w.segment_button.click()
    wait_done(qtbot, w)
    assert f"{image.name} labels" in viewer.layers
