"""The "Correct and retrain" dock: see which slices were corrected, fine-tune on them, re-segment.

Thin by design: the loop itself is :func:`napari_medseg.retrain.loop.retrain_volume`
(Qt-free); this widget gathers the inputs, runs it in a ``thread_worker``, and
shows progress, the loss curve, Dice before/after, and the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QListWidget,
    QListWidgetItem, QProgressBar, QPushButton, QVBoxLayout, QWidget,
)

from napari_medseg._torch_compat import hide_triton
from napari_medseg.widgets import _autosave, _ledger_sync
from napari_medseg.widgets._common import current_volume, known_spacing, labels_name
from napari_medseg.widgets._loss_plot import LossPlot
from napari_medseg.widgets._preview import PREVIEW, LivePreview, PreviewLayer, throttled
from napari_medseg.widgets._scribble_actions import ScribbleActions
from napari_medseg.widgets._scribble_actions import layer_key as _key
from napari_medseg.widgets._scribble_mode import MODE_HELP, is_scribble_layer
from napari_medseg.widgets._store_row import StoreRow

BROWSE = "Browse for a checkpoint\u2026"
#: Undo steps kept per labels layer (each holds one full label volume).
HISTORY_CAP = 3


def scratch_choices() -> dict[str, str]:
    """``{"New DCAU-Net (from scratch)": "dcaunet", ...}`` from the family specs."""
    from napari_medseg.models import family_spec, model_names

    return {f"New {family_spec(name).display} (from scratch)": name for name in model_names()}


class RetrainWidget(ScribbleActions, PreviewLayer, QWidget):
    """Dock widget: slice ledger, scribbles and fill, fine-tune / cancel / revert, suggest next slice."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._stop = None
        self._job: dict = {}
        self._history: dict[str, list] = {}  # _key(layer) -> [(checkpoint, labels before), ...]
        self._uncertainty: dict[str, np.ndarray] = {}
        self._watched: set[str] = set()
        self._models: dict[str, tuple] = {}  # _key(layer) -> (model, CheckpointInfo) of the last fine-tune
        self._round_base: dict[str, tuple] = {}  # _key(layer) -> (labels, scribbles) when the round began
        self._preview = None
        self.autosave = _autosave.attach(napari_viewer)  # recovery: see widgets/_autosave.py
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.bind_key("Shift-R", lambda viewer: self.toggle_reviewed(), overwrite=True)
        self.viewer.bind_key("Shift-F", lambda viewer: self.fill_from_scribbles(), overwrite=True)
        self.viewer.dims.events.current_step.connect(self._on_step_changed)
        self._refresh_layers()

    # ------------------------------------------------------------------ UI
    def _build_ui(self):
        from napari_medseg.device import available_devices
        from napari_medseg.labels import BUILTIN
        from napari_medseg.models import fine_tuning_scopes
        from napari_medseg.models.spec import PRECISIONS

        self.scratch = scratch_choices()
        form = QFormLayout()
        self.image_combo, self.labels_combo, self.start_combo = QComboBox(), QComboBox(), QComboBox()
        self.label_set_combo = QComboBox()
        self.label_set_combo.addItems(sorted(BUILTIN, key=lambda name: name != "synapse"))
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(["default"] + fine_tuning_scopes())
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(list(PRECISIONS))
        self.budget = QDoubleSpinBox(minimum=5, maximum=3600, value=60, suffix=" s", decimals=0)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["seconds", "steps"])
        self.budget_unit.currentTextChanged.connect(self._on_budget_unit)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto"] + available_devices())
        for label, w in [("Image", self.image_combo), ("Labels", self.labels_combo), ("Start from", self.start_combo),
                         ("Label set (new)", self.label_set_combo), ("Train", self.scope_combo),
                         ("Device", self.device_combo), ("Precision", self.precision_combo)]:
            form.addRow(label, w)
        form.addRow("Budget", _row(self.budget, self.budget_unit))
        for combo in (self.image_combo, self.labels_combo, self.start_combo):  # long paths must not widen the dock
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(18)
        self.labels_combo.currentTextChanged.connect(self._on_labels_changed)
        self.start_combo.activated.connect(self._on_start_chosen)

        self.counts = QLabel()
        self.slice_list = QListWidget()
        self.slice_list.setMaximumHeight(120)
        self.slice_list.itemClicked.connect(lambda item: self.go_to_slice(item.data(Qt.ItemDataRole.UserRole)))
        self.new_labels_btn = QPushButton("New labels layer to paint on")
        self.new_labels_btn.setToolTip("An empty labels layer on the image's grid, with the chosen label set's names and colours")
        self.new_labels_btn.clicked.connect(self.new_labels_layer)
        self.scribble_btn = QPushButton("Scribble mode")
        self.scribble_btn.setToolTip("A scribble layer on the image's grid: organ strokes and “background (scribble)” strokes")
        self.scribble_btn.clicked.connect(self.scribble_mode)
        self.fill_btn = QPushButton("Fill slice (Shift-F)")
        self.fill_btn.setToolTip("Turn the strokes on the slice on screen into a full labelling of it (seeded watershed)")
        self.fill_btn.clicked.connect(self.fill_from_scribbles)
        self.mode_help = QLabel(MODE_HELP)
        self.mode_help.setWordWrap(True)
        self.review_btn = QPushButton("Mark reviewed (Shift-R)")
        self.suggest_btn = QPushButton("Suggest next slice")
        self.review_btn.clicked.connect(self.toggle_reviewed)
        self.suggest_btn.clicked.connect(self.suggest_next_slice)
        self.run_btn, self.cancel_btn, self.revert_btn = QPushButton("Fine-tune"), QPushButton("Cancel"), QPushButton("Revert")
        self.run_btn.clicked.connect(self.fine_tune)
        self.cancel_btn.clicked.connect(self.cancel)
        self.revert_btn.clicked.connect(self.revert)
        self.progress = QProgressBar()
        self.loss_plot = LossPlot()
        self.status = QLabel("Paint corrections on a few slices, or mark good slices reviewed; then Fine-tune.")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        self.store_row = StoreRow(self)
        layout.addWidget(self.store_row)
        layout.addWidget(self.new_labels_btn)
        layout.addLayout(_row(self.scribble_btn, self.fill_btn))
        layout.addWidget(self.mode_help)
        layout.addWidget(self.counts)
        layout.addWidget(self.slice_list)
        layout.addLayout(_row(self.review_btn, self.suggest_btn))
        layout.addLayout(_row(self.run_btn, self.cancel_btn, self.revert_btn))
        layout.addWidget(self.progress)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.status)
        layout.addStretch()
        self._set_running(False)

    def _set_running(self, running: bool):
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.revert_btn.setEnabled(not running and bool(self._history.get(_key(self.labels_layer()))))

    # --------------------------------------------------------------- layers
    def _refresh_layers(self, event=None):
        from napari.layers import Image, Labels

        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, kind)
                            and not (kind is Labels and (is_scribble_layer(layer) or layer.name.endswith(PREVIEW)))])
            if current:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self._on_labels_changed()

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
        self._fill_start_combo(layer)
        self.update_ledger_view(layer)

    def _fill_start_combo(self, layer, select: str | None = None):
        """Offer the layer's checkpoint, the scratch models and Browse; keep or set the selection."""
        select = select or self.start_combo.currentText()
        checkpoints = list((layer.metadata.get("medseg", {}) if layer is not None else {}).get("checkpoints", []))
        items = [select] if select and select != BROWSE else []
        items += [c for c in checkpoints[:1] + list(self.scratch) if c not in items] + [BROWSE]
        self.start_combo.clear()
        self.start_combo.addItems(items)
        if not select or select == BROWSE:
            self.start_combo.setCurrentIndex(0)
        else:
            self.start_combo.setCurrentText(select)

    def _on_start_chosen(self, index):
        if self.start_combo.itemText(index) != BROWSE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Base checkpoint", "", "Checkpoints (*.safetensors)")
        if path:
            self.start_combo.insertItem(0, path)
            self.start_combo.setCurrentIndex(0)

    def new_labels_layer(self):
        """Add an empty labels layer aligned to the image, coloured by the chosen label set."""
        from napari_medseg.io.layers import labels_layer_kwargs, layer_geometry
        from napari_medseg.labels import get_label_set

        image = self.image_layer()
        if image is None:
            self.status.setText("Open an image first.")
            return
        shape = tuple(image.data.shape[-3:])
        geometry, _ = layer_geometry(image.metadata, image.data.shape, image.scale, image.translate)
        label_set = get_label_set(self.label_set_combo.currentText())
        empty = np.zeros(shape, np.uint8)
        layer = self.viewer.add_labels(empty, **labels_layer_kwargs(empty, geometry, label_set, labels_name(image.name)))
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
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, lambda: self.update_ledger_view(layer))

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
        layer = self.labels_layer()
        world = layer.data_to_world([z] + [0] * (layer.ndim - 1))
        self.viewer.dims.set_point(self.viewer.dims.ndim - layer.ndim, world[0])

    def toggle_reviewed(self):
        layer, z = self.labels_layer(), self.current_slice()
        if z is None:
            return
        ledger = _ledger_sync.ledger_for(layer)
        ledger.mark_reviewed(z, z not in ledger.reviewed)
        self.update_ledger_view(layer)

    def suggest_next_slice(self):
        from napari_medseg.retrain.loop import rank_uncertain_slices

        layer = self.labels_layer()
        unc = self._uncertainty.get(_key(layer)) if layer is not None else None
        if unc is None:
            self.status.setText("No uncertainty yet: fine-tune (or segment with uncertainty) first.")
            return
        ranked = rank_uncertain_slices(unc, _ledger_sync.ledger_for(layer).unlocked)
        if ranked:
            self.go_to_slice(ranked[0])
            self.status.setText(f"Most uncertain unlocked slice: {ranked[0]}. Correct it or mark it reviewed.")

    # ------------------------------------------------------------ fine-tune
    def _start(self):
        from napari_medseg.retrain.loop import StartFrom

        choice = self.start_combo.currentText()
        if choice in self.scratch:  # U-DFA: DINOv2 weights from $MEDSEG_DINOV2_WEIGHTS, the cache or a download
            return StartFrom(model_name=self.scratch[choice], label_set=self.label_set_combo.currentText())
        return StartFrom(checkpoint=choice)

    def fine_tune(self):
        import threading

        from napari.qt.threading import create_worker

        from napari_medseg.retrain.loop import retrain_volume

        hide_triton()  # see napari_medseg._torch_compat: triton + Mesa's LLVM segfault
        image, layer = self.image_layer(), self.labels_layer()
        if image is None or layer is None:
            self.status.setText("Choose an image and its labels layer (paint on a new Labels layer to start from scratch).")
            return
        ledger = _ledger_sync.refresh(layer)
        array, _ = current_volume(self.viewer, image)
        if array.shape != layer.data.shape:
            self.status.setText(f"Image {array.shape} and labels {layer.data.shape} differ in shape.")
            return
        prepared = self.scribbles_for_training(layer.data, ledger.locked)
        if isinstance(prepared, str):
            return
        labels_before, slices, scribbled = prepared
        if not slices:
            self.status.setText("No corrected, reviewed or scribbled slice yet: paint fixes, scribbles, "
                                "or press Shift-R on good slices.")
            return
        try:
            start = self._start()
        except ValueError as err:
            self.status.setText(str(err))
            return
        scope = None if self.scope_combo.currentText() == "default" else self.scope_combo.currentText()
        meta = image.metadata.get("medseg", {})
        self._stop = threading.Event()
        device, precision = self.device_combo.currentText(), self.precision_combo.currentText()
        self._preview = LivePreview(array, ledger.locked, device=device, precision=precision,
                                    spacing=known_spacing(image))
        self._on_step_changed()
        self._job = dict(layer=layer, start_choice=self.start_combo.currentText(), labels_before=np.array(layer.data, np.uint8),
                         locked=ledger.locked, cost=self.round_cost())
        gen = retrain_volume(array, labels_before, slices, start=start, spacing=known_spacing(image),
                             source=str(meta.get("source_path") or image.name),
                             options=dict(scope=scope, device=device, precision=precision, **self.budget_kwargs()),
                             store=self.store_row.store(), replay=self.store_row.replay.isChecked(),
                             should_stop=self._stop.is_set, on_model=self._preview.on_model, partial=bool(scribbled))
        self.worker = create_worker(lambda: (yield from throttled(gen, preview=self._preview)), _start_thread=False)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: self.status.setText(f"Fine-tuning failed: {err}"))
        self.worker.finished.connect(self._on_finished)
        self.loss_plot.clear()
        self.progress.setValue(0)
        self._set_running(True)
        self.status.setText(f"Fine-tuning on {len(ledger.locked)} full and {len(scribbled)} scribbled slice(s)\u2026")
        self.worker.start()

    def _on_budget_unit(self, unit: str):
        if unit == "steps":
            self.budget.setRange(1, 100000)
            self.budget.setSuffix(" steps")
            self.budget.setValue(300)
        else:
            self.budget.setRange(5, 3600)
            self.budget.setSuffix(" s")
            self.budget.setValue(60)

    def budget_kwargs(self) -> dict:
        """``time_budget_s`` or ``steps`` for the fine-tune, from the Budget row."""
        if self.budget_unit.currentText() == "steps":
            return {"steps": int(self.budget.value()), "time_budget_s": None}
        return {"time_budget_s": float(self.budget.value())}

    def cancel(self):
        """Stop fine-tuning now; the best weights so far are saved and used."""
        if self._stop is not None:
            self._stop.set()
            self.status.setText("Stopping: keeping the best weights so far\u2026")

    def _on_progress(self, update):
        """A throttled :class:`~._preview.Update` (a few per second at most)."""
        p = update.progress
        offset = 0 if p.phase == "fine-tune" else 90
        self.progress.setValue(int(offset + (90 if p.phase == "fine-tune" else 10) * p.fraction))
        self.loss_plot.extend(update.losses)
        self.status.setText(f"{p.phase}: {p.message}")
        if update.preview is not None:
            self._show_preview(*update.preview)

    def _on_finished(self):
        self.worker = None
        self._preview = None
        self._remove_preview()
        self._set_running(False)

    def _on_done(self, result):
        job, layer = self._job, self._job["layer"]
        unlocked = [z for z in range(layer.data.shape[0]) if z not in set(job["locked"])]
        self.remember(layer, job["start_choice"], job["labels_before"])
        self._apply_labels(layer, result.labels, unlocked)
        self._uncertainty[_key(layer)] = result.uncertainty
        self._models[_key(layer)] = (result.model, result.checkpoint)
        self.start_round(layer)  # the next round starts from this version
        path = str(result.checkpoint.path)
        medseg = dict(layer.metadata.get("medseg", {}))
        medseg.update(checkpoints=[path], label_set=result.checkpoint.label_set.to_dict())
        layer.metadata["medseg"] = medseg
        self.autosave.save(layer, self.image_layer(), reason="fine-tune")
        self._fill_start_combo(layer, select=path)
        ft = result.finetune
        self.progress.setValue(100)
        self.status.setText(
            f"Saved {Path(path).name} ({ft.steps} steps, {ft.seconds:.0f} s, stopped by {ft.stopped_by}). "
            f"Mean Dice on {ft.dice_on} slices: {ft.dice_before:.2f} \u2192 {ft.dice_after:.2f}. "
            f"Re-segmented {len(unlocked)} unlocked slice(s); {len(job['locked'])} locked kept; "
            f"replayed {result.replayed_slices} stored slice(s). This round cost {job['cost']:,} px changed.")
        self.store_row.refresh()
        self._set_running(False)

    def remember(self, layer, start_choice: str, labels_before: np.ndarray):
        """Push one undo step for :meth:`revert`; only the last :data:`HISTORY_CAP` are kept (a volume each)."""
        history = self._history.setdefault(_key(layer), [])
        history.append((start_choice, labels_before))
        del history[:-HISTORY_CAP]

    def _apply_labels(self, layer, labels, slices):
        """Write model output into ``slices`` of the layer (in place) and tell the ledger it is not an edit."""
        layer.data[slices] = labels[slices]
        self._show_ledger(_ledger_sync.record_prediction(layer, slices))
        layer.refresh()

    def revert(self):
        """Back to the previous checkpoint version and its labels on the unlocked slices."""
        layer = self.labels_layer()
        history = self._history.get(_key(layer))
        if not history:
            self.status.setText("Nothing to revert.")
            return
        checkpoint, labels_before = history.pop()
        ledger = _ledger_sync.refresh(layer)
        self._apply_labels(layer, labels_before, ledger.unlocked)
        medseg = dict(layer.metadata.get("medseg", {}))
        medseg["checkpoints"] = [] if checkpoint in self.scratch else [checkpoint]
        layer.metadata["medseg"] = medseg
        self._fill_start_combo(layer, select=checkpoint)
        self.status.setText(f"Reverted to {Path(checkpoint).name if checkpoint not in self.scratch else checkpoint}.")
        self._set_running(False)


def _row(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row

