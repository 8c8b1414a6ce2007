"""The "Correct and retrain" dock: see which slices were corrected, fine-tune on them, re-segment.

Thin by design: the loop itself is :func:`napari_medseg.retrain.loop.retrain_volume`
(Qt-free); this widget gathers the inputs, runs it in a ``thread_worker``, and
shows progress, the loss curve, Dice before/after, and the result.  Its parts:
the option form (``_retrain_options``), the fine-tune job (``_retrain_job``),
scribbles and fill (``_scribble_actions``), the live preview (``_preview``) and
the store row (``_store_row``); this file holds the layers and the slice ledger.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QProgressBar, QVBoxLayout, QWidget

from napari_medseg.widgets import _autosave, _ledger_sync
from napari_medseg.widgets._common import aligned_labels_kwargs, go_to_slice, known_spacing, uncertainty_layer_name
from napari_medseg.widgets._loss_plot import LossPlot
from napari_medseg.widgets._preview import PREVIEW, PreviewLayer
from napari_medseg.widgets._retrain_job import HISTORY_CAP, FineTuneJob
from napari_medseg.widgets._layout import StatusArea, StatusLabel, button, fill_layer_combo, row, scrolling
from napari_medseg.widgets._retrain_options import RetrainOptions
from napari_medseg.widgets._scribble_actions import ScribbleActions
from napari_medseg.widgets._scribble_actions import layer_key as _key
from napari_medseg.widgets._scribble_mode import MODE_HELP, is_scribble_layer
from napari_medseg.widgets._store_row import StoreRow
from napari_medseg.widgets._warm_up import warm_up

__all__ = ["HISTORY_CAP", "RetrainWidget"]


class RetrainWidget(FineTuneJob, ScribbleActions, PreviewLayer, QWidget):
    """Dock widget: slice ledger, scribbles and fill, fine-tune / cancel / revert, suggest next slice."""

    #: a labels layer whose model output changed (a fine-tune's re-segmentation, or Revert): read
    #: :meth:`model_output` for its organs and per-slice uncertainty (the Cases dock saves them with the case)
    model_output_changed = Signal(object)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._stop = None
        self._job: dict = {}
        self._history: dict[str, list] = {}  # _key(layer) -> [UndoStep, ...], oldest first
        self._slice_uncertainty: dict[str, np.ndarray] = {}  # _key(layer) -> mean uncertainty per slice (z,)
        self._organs: dict[str, list] = {}  # _key(layer) -> OrganStat rows of its model output
        self._watched: set[str] = set()
        self._models: dict[str, tuple] = {}  # _key(layer) -> (model, CheckpointInfo) of the last fine-tune
        self._round_base: dict[str, tuple] = {}  # _key(layer) -> (labels, scribbles) when the round began
        self._preview = None
        # update_ledger_view_soon: a child timer, not QTimer.singleShot(lambda), so it dies with the
        # dock and a paint just before napari closes cannot call into deleted widgets
        self._ledger_layer = None
        self._ledger_timer = QTimer(self)
        self._ledger_timer.setSingleShot(True)
        self._ledger_timer.setInterval(0)
        self._ledger_timer.timeout.connect(lambda: self.update_ledger_view(self._ledger_layer))
        self._orphan_timer = QTimer(self)  # see _refresh_layers
        self._orphan_timer.setSingleShot(True)
        self._orphan_timer.setInterval(0)
        self._orphan_timer.timeout.connect(self._drop_orphan_previews)
        self.autosave = _autosave.attach(napari_viewer)  # recovery: see widgets/_autosave.py
        self._build_ui()
        # torch and the fine-tune's imports, off the GUI thread; then the Models row can name its default
        self.warming = warm_up(self.device_combo, fine_tune=True, on_ready=self.options.warmed_up)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.events.renamed.connect(self._refresh_layers)
        self.viewer.bind_key("Shift-R", lambda viewer: self.toggle_reviewed(), overwrite=True)
        self.viewer.bind_key("Shift-F", lambda viewer: self.fill_from_scribbles(), overwrite=True)
        self.viewer.dims.events.current_step.connect(self._on_step_changed)
        self._refresh_layers()

    # ------------------------------------------------------------------ UI
    def _build_ui(self):
        self.options = o = RetrainOptions()
        self.image_combo, self.labels_combo, self.start_combo = o.image_combo, o.labels_combo, o.start_combo
        self.label_set_combo, self.scope_combo, self.device_combo = o.label_set_combo, o.scope_combo, o.device_combo
        self.precision_combo, self.budget, self.budget_unit = o.precision_combo, o.budget, o.budget_unit
        self.scratch = o.scratch
        self.labels_combo.currentTextChanged.connect(self._on_labels_changed)

        self.counts = QLabel()
        self.slice_list = QListWidget()
        self.slice_list.setMaximumHeight(120)
        self.slice_list.itemClicked.connect(lambda item: self.go_to_slice(item.data(Qt.ItemDataRole.UserRole)))
        self.new_labels_btn = button("New labels layer to paint on", self.new_labels_layer,
                                     "An empty labels layer on the image's grid, with the chosen label set's names and colours")
        self.scribble_btn = button("Scribble mode", self.scribble_mode,
                                   "A scribble layer on the image's grid: organ strokes and \u201cbackground (scribble)\u201d strokes")
        self.fill_btn = button("Fill slice (Shift-F)", self.fill_from_scribbles,
                               "Turn the strokes on the slice on screen into a full labelling of it (seeded watershed)")
        self.mode_help = QLabel(MODE_HELP)
        self.mode_help.setWordWrap(True)
        self.review_btn = button("Mark reviewed (Shift-R)", self.toggle_reviewed)
        self.suggest_btn = button("Suggest next slice", self.suggest_next_slice)
        self.run_btn = button("Fine-tune", self.fine_tune)
        self.cancel_btn = button("Cancel", self.cancel)
        self.revert_btn = button("Revert", self.revert)
        self.progress = QProgressBar()
        self.loss_plot = LossPlot()
        self.status = StatusLabel("Paint corrections on a few slices, or mark good slices reviewed; then Fine-tune.")

        body, footer = QWidget(), QWidget()
        scrolling(self, body, footer)  # a short screen scrolls the options; the footer stays in sight
        layout = QVBoxLayout(body)
        layout.addWidget(self.options)
        self.store_row = StoreRow(self)
        layout.addWidget(self.store_row)
        layout.addWidget(self.new_labels_btn)
        layout.addLayout(row(self.scribble_btn, self.fill_btn))
        layout.addWidget(self.mode_help)
        layout.addWidget(self.counts)
        layout.addWidget(self.slice_list)
        layout.addLayout(row(self.review_btn, self.suggest_btn))
        layout.addWidget(self.loss_plot)
        layout.addStretch()
        bottom = QVBoxLayout(footer)
        bottom.setContentsMargins(layout.contentsMargins().left(), 4, layout.contentsMargins().right(), 6)
        bottom.addLayout(row(self.run_btn, self.cancel_btn, self.revert_btn))
        bottom.addWidget(self.progress)
        bottom.addWidget(StatusArea(self.status))  # scrolls past a few lines: the buttons stay in sight
        self._set_running(False)

    def _set_running(self, running: bool):
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.revert_btn.setEnabled(not running and bool(self._history.get(_key(self.labels_layer()))))

    # --------------------------------------------------------------- layers
    def _refresh_layers(self, event=None):
        from napari.layers import Image, Labels

        self._orphan_timer.start()  # a preview whose labels layer went goes too, after this event

        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            fill_layer_combo(combo, [layer for layer in self.viewer.layers if isinstance(layer, kind)
                                     and not (kind is Labels and (is_scribble_layer(layer) or layer.name.endswith(PREVIEW)))])
        self._on_labels_changed()
        self.watch_scribbles(self.scribble_layer())

    def image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def labels_layer(self):
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _on_labels_changed(self, *_):
        layer = self.labels_layer()
        if layer is not None and _key(layer) not in self._watched:
            self._watched.add(_key(layer))
            layer.events.paint.connect(lambda e, layer=layer: self.update_ledger_view_soon(layer))
            layer.events.set_data.connect(lambda e, layer=layer: self.update_ledger_view(layer))
            self.start_round(layer)
        self.options.fill_start_combo(layer)
        self.update_ledger_view(layer)

    def new_labels_layer(self):
        """Add an empty labels layer aligned to the image, coloured by the chosen label set."""
        from napari_medseg.labels import get_label_set

        image = self.image_layer()
        if image is None:
            self.status.setText("Open an image first.")
            return
        label_set = get_label_set(self.label_set_combo.currentText())
        empty = np.zeros(tuple(image.data.shape[-3:]), np.uint8)
        layer = self.viewer.add_labels(empty, **aligned_labels_kwargs(image, empty, label_set))
        self.labels_combo.setCurrentText(layer.name)
        self.status.setText(f"Paint {label_set.name} organs on a few slices of \u201c{layer.name}\u201d, then Fine-tune.")

    # ---------------------------------------------------------------- ledger
    def update_ledger_view(self, layer=None):
        """Re-derive the layer's edited slices and show the ledger."""
        layer = layer if layer is not None else self.labels_layer()
        if layer is None or np.asarray(layer.data).ndim != 3:
            self.slice_list.clear()
            self.counts.setText("Choose a 3D labels layer.")
            return
        self._show_ledger(_ledger_sync.refresh(layer))

    def update_ledger_view_soon(self, layer=None):
        """After the event loop's current turn: napari emits ``paint`` before the new values are written."""
        self._ledger_layer = layer
        self._ledger_timer.start()

    def _show_ledger(self, ledger):
        self.slice_list.clear()
        c = ledger.counts()
        self.counts.setText(f"edited {c['edited']} \u00b7 reviewed {c['reviewed']} \u00b7 predicted {c['predicted']}"
                            f" \u00b7 locked {len(ledger.locked)}\nthis round: {self.round_cost():,} px changed")
        for z in ledger.locked:
            item = QListWidgetItem(f"slice {z}: {ledger.state(z).value}")
            item.setData(Qt.ItemDataRole.UserRole, z)
            self.slice_list.addItem(item)
        self._set_running(self.worker is not None)

    def current_slice(self) -> int | None:
        layer = self.labels_layer()
        if layer is None:
            return None
        point = self.viewer.dims.point[-layer.ndim:]
        z = int(round(layer.world_to_data(point)[0]))
        return z if 0 <= z < layer.data.shape[0] else None

    def go_to_slice(self, z: int):
        go_to_slice(self.viewer, self.labels_layer(), z)

    def toggle_reviewed(self):
        layer, z = self.labels_layer(), self.current_slice()
        if z is None:
            return
        ledger = _ledger_sync.ledger_for(layer)
        ledger.mark_reviewed(z, z not in ledger.reviewed)
        self.update_ledger_view(layer)

    def suggest_next_slice(self):
        from napari_medseg.retrain.loop import describe_suggestion

        layer = self.labels_layer()
        scores = self._slice_scores(layer)
        if scores is None:
            self.status.setText("No uncertainty yet: fine-tune, or segment with the uncertainty map, first.")
            return
        picks, slice_mm = self.slices_to_correct_next(layer, 1, scores)
        if picks:
            self.go_to_slice(picks[0])
            locked = _ledger_sync.ledger_for(layer).locked
            self.status.setText(f"Suggested slice {picks[0]}: {describe_suggestion(picks[0], locked, slice_mm)}"
                                " Correct it or mark it reviewed.")

    def slices_to_correct_next(self, layer, n: int, scores=None) -> tuple[list[int], float | None]:
        """``(up to n unlocked slices, slice spacing mm or None)``: the most uncertain, kept apart.

        ``scores``: per-slice uncertainty already at hand (default: :meth:`_slice_scores`)."""
        from napari_medseg.retrain.loop import suggest_slices

        unc = scores if scores is not None else self._slice_scores(layer)
        image = self.image_layer()
        spacing = known_spacing(image) if image is not None else None
        slice_mm = spacing[0] if spacing else None
        if unc is None:
            return [], slice_mm
        ledger = _ledger_sync.ledger_for(layer)
        return suggest_slices(unc, ledger.unlocked, n, corrected=ledger.locked, slice_mm=slice_mm), slice_mm

    def set_slice_uncertainty(self, layer, scores, organs=None) -> None:
        """Per-slice mean uncertainty ``(z,)`` and the ``OrganStat`` rows (if known) of ``layer``'s model output
        (the Cases dock's segmentation), so that a fine-tune's *Revert* can bring them back."""
        self._slice_uncertainty[_key(layer)] = np.asarray(scores, np.float64)
        if organs is not None:
            self._organs[_key(layer)] = organs

    def _slice_scores(self, layer):
        """What *Suggest next slice* ranks for ``layer``: the last fine-tune's or case's per-slice
        uncertainty, else the Segment dock's ``"<image> uncertainty"`` layer when it matches; None."""
        if layer is None:
            return None
        scores = self._slice_uncertainty.get(_key(layer))
        if scores is not None:
            return scores
        image = self.image_layer()
        name = uncertainty_layer_name(image.name) if image is not None else None
        if name in self.viewer.layers and np.shape(self.viewer.layers[name].data) == layer.data.shape:
            from napari_medseg.retrain.loop import slice_uncertainty

            return slice_uncertainty(np.asarray(self.viewer.layers[name].data))
        return None
