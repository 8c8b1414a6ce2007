"""The "Correct and retrain" dock through the manifest: paint, ledger, fine-tune, revert, stop."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from napari_medseg.checkpoint import read_checkpoint_info
from napari_medseg.labels import SYNAPSE
from widget_fixtures import SCREENSHOT_DIR, paint_slice, run_and_wait

pytestmark = pytest.mark.gui
pytest_plugins = ["widget_fixtures"]  # the retrain_dock and scratch_dock fixtures


def test_suggestions_before_any_fine_tune_come_from_the_segment_docks_uncertainty(retrain_dock):
    viewer, widget, labels, _ = retrain_dock
    widget.suggest_next_slice()
    assert "No uncertainty yet" in widget.status.text()
    unc = np.zeros(labels.data.shape, np.float16)
    unc[7, 40:60, 40:60] = 0.9  # the Segment dock's "<image> uncertainty" layer, one uncertain slice
    image = widget.image_layer()
    viewer.add_image(unc, name=f"{image.name} uncertainty", scale=image.scale, translate=image.translate)
    widget.suggest_next_slice()
    assert "Suggested slice 7" in widget.status.text(), widget.status.text()
    assert widget.current_slice() == 7


def test_paint_locks_slice_and_fine_tune_revert(retrain_dock, qtbot, tmp_path):
    viewer, widget, labels, base = retrain_dock
    labels.brush_size = 6
    paint_slice(labels, 12)
    qtbot.waitUntil(lambda: "edited 1" in widget.counts.text())  # the dock updates after napari writes the paint
    assert labels.metadata["medseg"]["locked_slices"] == [12]
    assert widget.slice_list.count() == 1
    widget.go_to_slice(20)
    assert widget.current_slice() == 20
    widget.toggle_reviewed()  # Shift-R on slice 20
    assert labels.metadata["medseg"]["locked_slices"] == [12, 20]

    before = np.array(labels.data)
    widget.budget_unit.setCurrentText("steps")
    widget.budget.setValue(12)
    widget.scope_combo.setCurrentText("all")
    run_and_wait(widget, qtbot)
    assert "Saved" in widget.status.text(), widget.status.text()
    hint = re.match(r"Next round: correct slices (\d+), (\d+) ", widget.status.text())
    assert hint, widget.status.text()  # the next action comes first, before the run's details
    proposed = [int(v) for v in hint.groups()]  # the next round's slices, never a locked one
    # then which organs to look at on them: the least certain of the re-segmentation, named with their mean
    ranked = re.search(r"Least certain organs now \(uncertainty, 0 = certain\): ([^\n]+)\.\n", widget.status.text())
    assert ranked, widget.status.text()
    names = [re.sub(r" [\d.]+$", "", part) for part in ranked.group(1).split(", ")]
    assert 1 <= len(names) <= 3 and all((np.asarray(labels.data) == value).any()
                                        for value, name in SYNAPSE.organs.items() if name in names)
    assert not set(proposed) & {12, 20} and proposed[0] != proposed[1]
    new_path = widget.start_combo.currentText()
    assert new_path.endswith("base.v2.safetensors")
    prov = read_checkpoint_info(new_path).provenance
    assert prov["parent_sha256"] == base.sha256 and prov["slices"] == [12, 20]
    assert prov["steps"] == 12 and prov["stopped_by"] == "steps"
    after = np.asarray(labels.data)
    np.testing.assert_array_equal(after[[12, 20]], before[[12, 20]])  # locked slices untouched
    unlocked = [z for z in range(after.shape[0]) if z not in (12, 20)]
    assert (after[unlocked] != before[unlocked]).any()  # the rest was re-segmented
    assert labels.metadata["medseg"]["locked_slices"] == [12, 20]  # new predictions are not "edits"
    if SCREENSHOT_DIR:
        viewer.screenshot(os.path.join(SCREENSHOT_DIR, "retrain_widget.png"), canvas_only=False)

    widget.suggest_next_slice()
    assert "Suggested slice" in widget.status.text(), widget.status.text()
    z = widget.current_slice()
    assert z not in (12, 20) and z == proposed[0]
    spacing = widget.image_layer().scale[-3]  # suggestions keep SUGGESTION_GAP_MM from the corrected slices
    from napari_medseg.retrain.loop import SUGGESTION_GAP_MM
    assert min(abs(z - c) for c in (12, 20)) * spacing >= SUGGESTION_GAP_MM - 1e-6

    assert widget.model_output(labels)[1] is not None and widget._models
    with qtbot.waitSignal(widget.model_output_changed):
        widget.revert()
    np.testing.assert_array_equal(np.asarray(labels.data), before)
    assert widget.start_combo.currentText() == str(base.path)
    # what the discarded version said goes with it: nothing to rank by, no model to guide Fill slice
    assert widget.model_output(labels) == (None, None) and not widget._models


def test_stop_keeps_best_weights(retrain_dock, qtbot):
    viewer, widget, labels, base = retrain_dock
    paint_slice(labels, 8)
    widget.budget.setValue(600)
    widget.fine_tune()
    qtbot.waitUntil(lambda: bool(widget.loss_plot.losses), timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert "stopped by cancelled" in widget.status.text(), widget.status.text()
    assert read_checkpoint_info(widget.start_combo.currentText()).provenance["stopped_by"] == "cancelled"


def test_no_corrections_message(retrain_dock):
    viewer, widget, labels, base = retrain_dock
    widget.fine_tune()
    assert widget.worker is None
    assert "No corrected" in widget.status.text()


def test_new_labels_layer_from_scratch(scratch_dock, qtbot):
    """From no checkpoint: an empty aligned labels layer, painted, is what the ledger tracks."""
    image, widget, labels = scratch_dock
    assert labels.data.shape == image.data.shape and not labels.data.any()
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert labels.metadata["medseg"]["label_set"]["name"] == "synapse"
    assert widget.labels_combo.currentText() == labels.name
    assert widget.start_combo.currentText() == "New DCAU-Net (from scratch)"
    labels.paint((7, 50, 40), 5)
    qtbot.waitUntil(lambda: labels.metadata["medseg"]["locked_slices"] == [7])


def test_options_come_from_the_specs_and_undo_is_capped(scratch_dock):
    """The dock lists what the CLI lists (family specs, labels.BUILTIN); undo keeps the last 3 volumes."""
    import argparse

    from napari_medseg.commands import finetune as finetune_command
    from napari_medseg.labels import BUILTIN
    from napari_medseg.models.spec import PRECISIONS
    from napari_medseg.widgets.retrain import HISTORY_CAP

    _, widget, labels = scratch_dock

    parser = argparse.ArgumentParser()
    finetune_command.add_arguments(parser)
    cli = {a.dest: list(a.choices) for a in parser._actions if a.choices}
    items = lambda combo: [combo.itemText(i) for i in range(combo.count())]  # noqa: E731
    assert items(widget.scope_combo) == ["default"] + cli["scope"]
    assert sorted(items(widget.label_set_combo)) == sorted(cli["label_set"]) == sorted(BUILTIN)
    assert items(widget.precision_combo) == cli["precision"] == list(PRECISIONS) and "fp16" in PRECISIONS
    assert sorted(widget.scratch.values()) == sorted(cli["model"])

    volumes = [np.full(labels.data.shape, v, dtype=np.uint8) for v in range(1, 6)]
    for v, volume in enumerate(volumes):
        widget.remember(labels, f"step {v}", volume)
    history = widget._history[str(labels.unique_id)]
    assert HISTORY_CAP == 3 and [step.start_choice for step in history] == ["step 2", "step 3", "step 4"]
    widget.revert()
    np.testing.assert_array_equal(np.asarray(labels.data), volumes[4])  # nothing locked: every slice comes back
    assert len(history) == 2


def test_store_row_project_store_replay_and_off(retrain_dock, qtbot, tmp_path):
    """The dock says which store it uses and what it replays; a project store is chosen; replay is one click."""
    from napari_medseg.labels import ACDC
    from napari_medseg.retrain.datastore import CorrectionStore

    viewer, widget, labels, base = retrain_dock
    row = widget.store_row
    assert row.replay.isChecked()  # on by default
    assert row.summary.toolTip() == str(tmp_path / "data" / "corrections") and row.summary.text().startswith("Store: ")
    project = CorrectionStore(tmp_path / "project")
    rng = np.random.default_rng(0)
    slices = rng.normal(0, 100, (2, 32, 32)).astype(np.float32)
    project.add(slices, np.ones((2, 32, 32), np.uint8), [4, 9], spacing=(3, 1, 1), source="patient-a",
                label_set=SYNAPSE.to_dict(), modality="ct", image_hash="patient-a")
    project.add(slices[:1], np.ones((1, 32, 32), np.uint8), [4], spacing=(3, 1, 1), source="heart",
                label_set=ACDC.to_dict(), modality="mr", image_hash="heart")
    strokes = np.full((1, 32, 32), 255, np.uint8)
    strokes[0, 5, 5:9] = 1
    project.add(slices[:1], strokes, [7], spacing=(3, 1, 1), source="patient-c", label_set=SYNAPSE.to_dict(),
                modality="ct", image_hash="patient-c")  # scribbles: left out of replay, and said so
    row.choose(str(tmp_path / "project"))
    assert row.summary.toolTip().startswith(str(project.root)) and row.summary.text().startswith("Store: \u2026")
    assert row.summary.text().endswith("/project\nReplays 2 slices of 1 patient, not 1 scribbled\n"
                                       "Skipped 1 other label set")
    assert "(scribbles) are not replayed" in row.summary.toolTip()
    if SCREENSHOT_DIR:
        viewer.screenshot(os.path.join(SCREENSHOT_DIR, "retrain_store_row.png"), canvas_only=False)

    paint_slice(labels, 12)
    widget.budget_unit.setCurrentText("steps")
    widget.budget.setValue(2)
    run_and_wait(widget, qtbot)
    assert "replayed 2 stored slice(s) (left out 1 scribbled one(s)" in widget.status.text(), widget.status.text()
    assert len(project.entries()) == 4 and {"heart", "patient-a"} < {e.source for e in project.entries()}
    assert not (tmp_path / "data" / "corrections").exists()  # the default store was not touched

    row.replay.setChecked(False)  # one click
    assert row.summary.text().endswith("\nReplay off (corrections are still added).")
    paint_slice(labels, 16)
    run_and_wait(widget, qtbot)
    assert "replayed 0 stored slice(s)" in widget.status.text(), widget.status.text()
    [mine] = [e for e in project.entries() if e.source not in ("heart", "patient-a", "patient-c")]
    assert mine.slice_indices == [12, 16]  # the same image: one entry, not two

    (tmp_path / "a-file").write_text("x")
    row.choose(str(tmp_path / "a-file"))
    assert "is a file" in row.summary.text() and row.store().root == project.root


def test_long_names_are_elided_and_the_dock_scrolls(scratch_dock):
    """A long checkpoint path or layer name neither widens the dock nor hides its end; a short window scrolls it."""
    image, widget, labels = scratch_dock
    width = widget.start_combo.sizeHint().width()
    path = "/data/" + "a-very-long-project-folder/" * 4 + "liver_and_spleen.v3.safetensors"
    widget.start_combo.insertItem(0, path)
    widget.start_combo.setCurrentIndex(0)
    assert widget.start_combo.sizeHint().width() == width and widget.start_combo.toolTip() == path
    widget.start_combo.resize(widget.start_combo.sizeHint())  # as narrow as the dock may make it
    shown = widget.start_combo.shown_text()
    assert shown.startswith("\u2026") and shown.endswith(".v3.safetensors") and len(shown) < len(path)
    long_name = "patient 0001 abdomen CT portal venous phase 1.0 mm B30f"
    image.name = long_name  # the dock follows the rename
    assert widget.image_combo.currentText() == long_name and widget.image_layer().unique_id == image.unique_id
    widget.image_combo.resize(widget.image_combo.sizeHint())
    shown = widget.image_combo.shown_text()
    assert "\u2026" in shown and shown.startswith("patient") and shown.endswith("B30f")
    assert widget.image_combo.sizeHint().width() == width
    assert widget.minimumSizeHint().height() < widget.sizeHint().height() / 3  # the body scrolls


def test_dock_lists_devices_after_it_opens(make_napari_viewer, qtbot):
    """Devices come from the warm-up thread (listing them imports torch): "auto" first, then the list."""
    from napari_medseg.device import available_devices

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    # not while napari adds and paints the dock: importing torch alongside slowed that 10x
    assert not widget.warming.started and widget.device_combo.count() == 1
    qtbot.waitUntil(lambda: widget.device_combo.count() > 1, timeout=120_000)
    assert [widget.device_combo.itemText(i) for i in range(widget.device_combo.count())] == ["auto"] + available_devices()
    widget.warming.join(120)
    assert not widget.warming.is_alive()


def test_models_row_says_what_default_means(scratch_dock, qtbot):
    """"default" on the Models row names the count it resolves to, for the chosen budget and device."""
    import torch

    from napari_medseg.retrain.loop import default_members

    _, widget, _ = scratch_dock
    options = widget.options
    widget.warming.join()  # the warm-up imports torch and the fine-tuning core, and lists the devices
    qtbot.waitUntil(lambda: widget.device_combo.count() > 1 and options.members_combo.itemText(0) != "default")
    widget.device_combo.setCurrentText("cpu")
    widget.budget_unit.setCurrentText("seconds")
    widget.budget.setValue(150)
    expected = default_members("dcaunet", "cpu", 150)
    assert expected == (2 if torch.get_num_threads() >= 2 else 1)
    assert options.members_combo.itemText(0) == f"default ({expected})"
    assert options.start_from().members is None  # "default" still means the package's choice
    widget.budget.setValue(60)
    assert options.members_combo.itemText(0) == "default (1)"
    widget.budget_unit.setCurrentText("steps")
    assert options.members_combo.itemText(0) == "default (1)"  # a step budget trains one model
    options.members_combo.setCurrentIndex(2)
    assert options.start_from().members == 2


def test_a_checkpoint_of_another_modality_is_not_fine_tuned(retrain_dock):
    """A CT model's window would flatten an MR image: the dock says so and starts nothing (one click fixes it)."""
    from widget_fixtures import paint_slice

    viewer, widget, labels, base = retrain_dock
    image = widget.image_layer()
    image.metadata["medseg"] = {**image.metadata["medseg"], "modality": "mr"}  # as the reader marks an MR scan
    paint_slice(labels, 12)
    widget.fine_tune()
    assert widget.worker is None
    text = widget.status.text()
    assert text.startswith("Not started") and "trained on CT images" in text and "looks like MR" in text
