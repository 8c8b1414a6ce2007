"""The Retrain dock's scribble mode, fill, rounds and live preview, through the manifest."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from napari_medseg._sample_data import SAMPLE_LABELS
from napari_medseg.checkpoint import read_checkpoint_info
from napari_medseg.io import read_volume
from napari_medseg.scribbles import partial_to_scribbles, simulate_reviewer
from napari_medseg.widgets.legend import layer_label_set
from widget_fixtures import SCREENSHOT_DIR, paint_slice, run_and_wait

pytestmark = pytest.mark.gui
pytest_plugins = ["widget_fixtures"]  # the retrain_dock fixture
K = 8  # synapse organs; background strokes are 9


@pytest.fixture
def scribbled(retrain_dock):
    """``retrain_dock`` plus the scribble layer holding the simulated reviewer's strokes on slices 12 and 20."""
    viewer, widget, labels, info = retrain_dock
    image = viewer.layers[widget.image_combo.currentText()]
    widget.scribble_btn.click()
    scribbles = viewer.layers[f"{image.name} scribbles"]
    reference = np.asarray(read_volume(SAMPLE_LABELS).array)  # retrain_dock removed the sample's "organs" layer
    partial, _ = simulate_reviewer(np.asarray(image.data), reference, [12, 20])
    scribbles.data = partial_to_scribbles(partial, K)
    return viewer, widget, labels, info, scribbles, reference


def test_scribble_mode_layer_and_legend(scribbled):
    viewer, widget, labels, _, scribbles, _ = scribbled
    image = viewer.layers[widget.image_combo.currentText()]
    assert scribbles.data.shape == image.data.shape
    np.testing.assert_allclose(scribbles.scale, image.scale)
    assert layer_label_set(scribbles).names[K + 1] == "background (scribble)"
    assert widget.labels_combo.currentText() == labels.name  # the scribble layer is not a labels target
    assert scribbles.name not in [widget.labels_combo.itemText(i) for i in range(widget.labels_combo.count())]
    assert "Scribbles:" in widget.mode_help.text() and "Full:" in widget.mode_help.text()
    _, legend = viewer.window.add_plugin_dock_widget("napari-medseg", "Organ legend")
    viewer.layers.selection.active = scribbles
    legend.refresh()
    assert "background (scribble)" in legend.organ_names()
    assert f"({K + 1})" in legend.list.item(legend.list.count() - 1).text()


def test_fill_slice_from_scribbles(scribbled, qtbot):
    viewer, widget, labels, _, scribbles, reference = scribbled
    widget.go_to_slice(12)
    t0 = time.perf_counter()
    filled = widget.fill_from_scribbles()
    seconds = time.perf_counter() - t0
    assert filled is not None, widget.status.text()
    assert seconds < 1.5, seconds  # "instant": the watershed itself is < 0.1 s here
    np.testing.assert_array_equal(labels.data[12], filled)
    strokes = scribbles.data[12] > 0
    expected = np.where(scribbles.data[12] == K + 1, 0, scribbles.data[12])
    np.testing.assert_array_equal(filled[strokes], expected[strokes])  # strokes are kept
    assert set(np.unique(filled)) == set(np.unique(reference[12]))  # every organ stroked gets a region
    assert 12 in labels.metadata["medseg"]["locked_slices"]  # an edit now; the user checks and reviews it
    assert "Filled slice 12" in widget.status.text() and "unguided" in widget.status.text()
    strokes_px = int(np.count_nonzero(scribbles.data))  # the round's cost: the strokes, not the filled pixels
    assert widget.round_cost() == strokes_px and f"this round: {strokes_px:,} px" in widget.counts.text()
    if SCREENSHOT_DIR:
        viewer.layers.selection.active = scribbles
        viewer.screenshot(os.path.join(SCREENSHOT_DIR, "retrain_scribbles.png"), canvas_only=False)


def test_fine_tune_hands_partial_labels_to_the_core(scribbled, qtbot, monkeypatch):
    """Scribbled slices reach retrain_volume as partial labels (255 = nobody painted), unlocked."""
    import napari_medseg.retrain.loop as loop

    viewer, widget, labels, _, scribbles, _ = scribbled
    widget.go_to_slice(5)
    widget.toggle_reviewed()  # a full slice too
    seen = {}

    def fake_retrain(image, labels_in, corrected, **kwargs):
        seen.update(labels=np.array(labels_in), corrected=list(corrected))
        return None
        yield  # a generator, like the real one

    monkeypatch.setattr(loop, "retrain_volume", fake_retrain)
    monkeypatch.setattr(widget, "_on_done", lambda result: seen.update(result=result))
    widget.fine_tune()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert seen["corrected"] == [5, 12, 20]
    assert labels.metadata["medseg"]["locked_slices"] == [5]  # scribbled slices are not locked
    np.testing.assert_array_equal(seen["labels"][5], labels.data[5])
    for z in (12, 20):
        painted = scribbles.data[z] > 0
        assert (seen["labels"][z][~painted] == 255).all()
        np.testing.assert_array_equal(seen["labels"][z][painted],
                                      np.where(scribbles.data[z] == K + 1, 0, scribbles.data[z])[painted])


def test_scribble_bad_input(scribbled, qtbot):
    viewer, widget, labels, _, scribbles, _ = scribbled
    scribbles.data = np.where(scribbles.data == K + 1, 0, scribbles.data).astype(np.uint8)  # no background
    out = widget.scribbles_for_training(labels.data, [])  # usable, but the user is warned (a notification)
    assert out[2] == [12, 20] and "no background stroke" in widget.status.text()
    name = scribbles.name
    viewer.layers.remove(name)
    viewer.add_labels(np.zeros((3, 10, 10), np.uint8), name=name)
    widget.fine_tune()
    assert widget.worker is None
    assert "not aligned" in widget.status.text() and "\n" not in widget.status.text()


def test_rounds_cost_and_live_preview(retrain_dock, qtbot, monkeypatch):
    """Round 1 with a live preview of an unlocked slice; round 2 starts from round 1's version."""
    import napari_medseg.widgets._preview as preview_module

    viewer, widget, labels, base = retrain_dock
    monkeypatch.setattr(preview_module, "PREVIEW_EVERY_S", 0.05)
    shown = []
    real_show = widget._show_preview

    def show(z, lab):
        real_show(z, lab)
        shown.append((z, [layer.name for layer in viewer.layers]))
        preview = viewer.layers[labels.name + " preview"]
        assert preview.data.shape == (1, *labels.data.shape[1:])  # one slice, never a volume
        np.testing.assert_array_equal(preview.data[0], lab)
        # world position of its only slice = slice z of the labels layer
        assert preview.data_to_world((0, 0, 0))[0] == pytest.approx(labels.data_to_world((z, 0, 0))[0])

    monkeypatch.setattr(widget, "_show_preview", show)
    labels.brush_size = 6
    before = np.array(labels.data)
    paint_slice(labels, 12)
    changed = int((np.asarray(labels.data) != before).sum())
    qtbot.waitUntil(lambda: f"this round: {changed:,} px changed" in widget.counts.text())
    widget.go_to_slice(20)
    widget.budget.setValue(6)  # seconds: the preview fires a few times
    widget.scope_combo.setCurrentText("all")
    widget.fine_tune()
    assert widget.worker is not None, widget.status.text()
    assert labels.name + " preview" in viewer.layers  # made at the click, not while the model trains
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert f"This round cost {changed:,} px changed" in widget.status.text(), widget.status.text()
    assert shown and all(z == 20 for z, _ in shown)  # the slice on screen, never the locked one
    assert any(name.endswith(" preview") for name in shown[0][1])
    preview = viewer.layers[labels.name + " preview"]
    assert not preview.visible  # hidden when done, kept: adding a layer stalls napari
    assert viewer.layers.selection.active is labels  # painting stays on the labels layer
    assert "this round: 0 px changed" in widget.counts.text()
    v2 = widget.start_combo.currentText()
    assert v2.endswith("base.v2.safetensors")

    widget.suggest_next_slice()
    z = widget.current_slice()
    assert z != 12 and "Suggested slice" in widget.status.text()
    widget.toggle_reviewed()  # round 2: accept the suggested slice as it is
    widget.budget_unit.setCurrentText("steps")
    widget.budget.setValue(4)
    run_and_wait(widget, qtbot)
    v3 = widget.start_combo.currentText()
    assert v3.endswith("base.v3.safetensors"), widget.status.text()
    assert viewer.layers[labels.name + " preview"] is preview  # reused, not made again
    viewer.layers.remove(labels)
    qtbot.waitUntil(lambda: labels.name + " preview" not in viewer.layers)  # goes with its labels layer
    assert read_checkpoint_info(v3).provenance["parent_sha256"] == read_checkpoint_info(v2).sha256


def test_preview_moves_with_the_slice_and_shows_again_after_hiding(retrain_dock):
    """The preview sets its translation and visibility only when they change (each set refreshes the layer
    on the GUI thread): moving to another slice and showing after a hide must still take effect."""
    viewer, widget, labels, base = retrain_dock
    widget._job = {"layer": labels}
    widget._prepare_preview(labels)
    preview = viewer.layers[labels.name + " preview"]
    for z in (3, 3, 9):
        lab = np.full(labels.data.shape[1:], z % 8 + 1, np.uint8)
        widget._show_preview(z, lab)
        assert preview.data_to_world((0, 0, 0))[0] == pytest.approx(labels.data_to_world((z, 0, 0))[0])
        np.testing.assert_array_equal(preview.data[0], lab)
    widget._hide_preview()
    assert not preview.visible
    widget._show_preview(9, lab)
    assert preview.visible
