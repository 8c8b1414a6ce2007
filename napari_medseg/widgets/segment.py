"""The "Segment" dock widget: pick an image and checkpoint(s), run the engine in a worker.

All computation is ``napari_medseg.inference.segment_volume`` (a generator),
run in ``napari.qt.threading`` with napari's progress bar.  The widget only
gathers inputs and shows the result as a Labels layer named
``"<image> labels"`` (organ names and colours from the checkpoint's label
set), an optional uncertainty Image layer, and a per-organ table.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QMenu,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_medseg.models.spec import PRECISIONS
from napari_medseg.widgets import _autosave, _ledger_sync
from napari_medseg.widgets._common import (aligned_labels_kwargs, current_volume, is_uncertainty_name, known_spacing,
                                          labels_name, show_organ, uncertainty_layer_name)
from napari_medseg.widgets._layout import ElidedComboBox, button, fill_layer_combo
from napari_medseg.widgets._organ_table import OrganTable
from napari_medseg.widgets._warm_up import warm_up
from napari_medseg.zsmooth import Z_SIGMA_MM

NO_CHECKPOINT_TEXT = (
    "No model checkpoint chosen. Add a trained checkpoint (.safetensors) above, or train one "
    "from scratch on your own corrections in the \u201cCorrect and retrain\u201d widget. "
    "Untrained (random) weights are never shown as a prediction."
)

TTA_TIP = ("Average the prediction over the 4 flips of each slice. Only for checkpoints trained with flips "
           "(the papers' recipes): a fine-tuned model never saw a flipped slice, and a left-right flip "
           "swaps its left and right organs.")


class SegmentWidget(QWidget):
    """Dock widget: image + checkpoint(s) + options -> Labels layer, uncertainty and organ table."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._models: dict = {}  # (path, mtime, device) -> (model, CheckpointInfo), this widget only
        self._flip_refusals: dict[str, str | None] = {}  # path -> why flip TTA is off for it (None: allowed)
        self.autosave = _autosave.attach(napari_viewer)  # recovery: see widgets/_autosave.py
        self._build_ui()
        self.warming = warm_up(self.device_combo)  # listing devices imports torch: off the GUI thread
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                      napari_viewer.layers.events.renamed):
            event.connect(self._refresh_images)
        self._refresh_images()
        self._refresh_state()

    # ---------------------------------------------------------------- UI
    def _build_ui(self):
        self.image_combo = ElidedComboBox()  # a long image name must not widen the dock
        self.ckpt_list = QListWidget()
        self.ckpt_list.setMaximumHeight(60)
        self.ckpt_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.ckpt_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.add_button = button("Add\u2026", self._choose_files, "Choose checkpoint file(s) (.safetensors)")
        self.recent_button = QPushButton("Recent")
        self.recent_button.setToolTip("Checkpoints used before")
        self.recent_menu = QMenu(self.recent_button)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.recent_button.setMenu(self.recent_menu)
        self.remove_button = button("Remove", self._remove_selected)
        self.ensemble_check = QCheckBox("Ensemble: average all listed checkpoints")
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto")  # the devices follow (widgets/_warm_up.py)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(list(PRECISIONS))  # the same list as the Retrain dock and the CLI
        self.precision_combo.setToolTip("auto: fp16/bf16 on CUDA; on CPU the faster of fp32/bf16, timed once per model "
                                        "family and cached; fp16: CUDA only")
        self.tta_check = QCheckBox("Flip TTA (4\u00d7 slower)")
        self.tta_check.setToolTip(TTA_TIP)
        self.ckpt_list.currentItemChanged.connect(lambda *_: self._refresh_state())
        self.ensemble_check.toggled.connect(lambda *_: self._refresh_state())
        self.unc_check = QCheckBox("Uncertainty layer")
        self.unc_check.setToolTip("Also add the per-voxel uncertainty (normalised entropy) as a heat-map layer. "
                                  "The organ table's uncertainty column is there either way.")
        self.one_piece_check = QCheckBox("One piece per organ")
        self.one_piece_check.setChecked(True)
        self.one_piece_check.setToolTip("Keep only the largest 3D piece of each organ (built-in label sets): removes "
                                        "islands far from the organ. Locked slices, and pieces touching them, are kept.")
        self.z_sigma = QDoubleSpinBox()
        self.z_sigma.setRange(0.0, 20.0)
        self.z_sigma.setSingleStep(0.5)
        self.z_sigma.setDecimals(1)
        self.z_sigma.setSuffix(" mm")
        self.z_sigma.setSpecialValueText("off")
        self.z_sigma.setValue(Z_SIGMA_MM)
        self.z_sigma.setToolTip("Before the argmax, average each slice's probabilities with its neighbours' (Gaussian "
                                "of this sigma; corrected, locked slices count as their labels). Needs the slice "
                                "thickness; 0 = off.")
        self.hint = QLabel(NO_CHECKPOINT_TEXT)
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #e0b050;")
        self.retrain_button = button("Open \u201cCorrect and retrain\u201d", self._open_retrain)
        self.segment_button = button("Segment", self.segment)
        self.cancel_button = button("Cancel", self.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = OrganTable()
        self.table.setVisible(False)
        self.table.organ_clicked.connect(self.go_to_organ)
        self.table_hint = QLabel("Click an organ: go to the slice to check first, and paint with it.")
        self.table_hint.setVisible(False)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Checkpoints", self.ckpt_list)
        buttons = QHBoxLayout()
        for b in (self.add_button, self.recent_button, self.remove_button):
            buttons.addWidget(b)
        form.addRow("", buttons)
        form.addRow("", self.ensemble_check)
        form.addRow("Device", self.device_combo)
        form.addRow("Precision", self.precision_combo)
        opts = QHBoxLayout()
        opts.addWidget(self.tta_check)
        opts.addWidget(self.unc_check)
        opts.addWidget(self.one_piece_check)
        form.addRow("Options", opts)
        form.addRow("Smooth across slices", self.z_sigma)
        run = QHBoxLayout()
        run.addWidget(self.segment_button, 2)
        run.addWidget(self.cancel_button, 1)
        # no taller than its contents: a dock below (Correct and retrain) gets the rest of the height
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        layout.addWidget(self.retrain_button)
        layout.addLayout(run)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addWidget(self.table_hint)
        layout.addStretch(1)

    def _refresh_images(self, event=None):
        from napari.layers import Image

        fill_layer_combo(self.image_combo, [layer for layer in self.viewer.layers if isinstance(layer, Image)
                                            and layer.ndim >= 3 and not is_uncertainty_name(layer.name)])
        self._refresh_state()

    def _refresh_state(self):
        running = self.worker is not None
        has_ckpt = self.ckpt_list.count() > 0
        self.hint.setVisible(not has_ckpt)
        self.retrain_button.setVisible(not has_ckpt)
        self.segment_button.setEnabled(not running and has_ckpt and self.image_combo.count() > 0)
        self.cancel_button.setEnabled(running)
        self.ensemble_check.setEnabled(self.ckpt_list.count() > 1)
        self._refresh_tta()

    def _refresh_tta(self):
        """Flip TTA only for checkpoints trained with flips (``checkpoint.flip_tta_refusal``)."""
        refusals = [(p.name, self._flip_refusals.get(str(p))) for p in self._chosen_paths()]
        refused = [f"{name} {why}" for name, why in refusals if why]
        self.tta_check.setEnabled(not refused)
        if refused:
            self.tta_check.setChecked(False)
        self.tta_check.setToolTip(TTA_TIP + ("\nOff: " + "; ".join(refused) + "." if refused else ""))

    # ------------------------------------------------------- checkpoints
    def add_checkpoint(self, path) -> bool:
        """Add a checkpoint to the list (its metadata is read, not its weights); False on error."""
        from napari_medseg.checkpoint import flip_tta_refusal, read_checkpoint_info
        from napari_medseg.recent import remember_checkpoint

        path = Path(path).expanduser().resolve()
        if any(p == path for p in self.checkpoint_paths()):
            return True
        try:
            info = read_checkpoint_info(path)
        except (OSError, ValueError) as err:
            self.status.setText(f"Cannot use {path.name}: {err}")
            return False
        self._flip_refusals[str(path)] = flip_tta_refusal(info)
        prep = info.preprocessing
        model = info.model_name + (f" \u00d7{info.members}" if info.members > 1 else "")  # an averaged ensemble
        item = QListWidgetItem(f"{path.name} \u00b7 {model} \u00b7 {info.label_set.name} \u00b7 "
                               f"{prep.modality.upper()} \u00b7 {prep.resize_policy}")
        item.setData(Qt.ItemDataRole.UserRole, str(path))
        item.setToolTip(f"{path}\norgans: {', '.join(info.label_set.organs.values())}")
        self.ckpt_list.addItem(item)
        self.ckpt_list.setCurrentItem(item)
        remember_checkpoint(path)
        self._refresh_state()
        return True

    def checkpoint_paths(self) -> list[Path]:
        return [Path(self.ckpt_list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.ckpt_list.count())]

    def _chosen_paths(self) -> list[Path]:
        paths = self.checkpoint_paths()
        if self.ensemble_check.isChecked() or len(paths) < 2:
            return paths
        item = self.ckpt_list.currentItem() or self.ckpt_list.item(0)
        return [Path(item.data(Qt.ItemDataRole.UserRole))]

    def _choose_files(self):
        files, _ = QFileDialog.getOpenFileNames(self, "Choose model checkpoint(s)", "",
                                                "Checkpoints (*.safetensors);;All files (*)")
        for f in files:
            self.add_checkpoint(f)

    def _fill_recent_menu(self):
        from napari_medseg.recent import recent_checkpoints

        self.recent_menu.clear()
        recent = recent_checkpoints()
        if not recent:
            self.recent_menu.addAction("(no recent checkpoints)").setEnabled(False)
        for p in recent:
            self.recent_menu.addAction(str(p), lambda p=p: self.add_checkpoint(p))

    def _remove_selected(self):
        row = self.ckpt_list.currentRow()
        if row >= 0:
            self.ckpt_list.takeItem(row)
        self._refresh_state()

    def _open_retrain(self):
        try:
            self.viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
        except Exception as err:  # that widget belongs to another module; say why it did not open
            self.status.setText(f"Could not open \u201cCorrect and retrain\u201d: {err}")

    # --------------------------------------------------------------- run
    def _image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _labels_layer(self, image, frame: int | None = None):
        """The image's labels layer; a 4D image has one per time frame (``"<image> labels t=<frame>"``)."""
        from napari.layers import Labels

        name = _labels_name(image, frame)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Labels) else None

    def segment(self):
        """Start segmenting the chosen image (no-op with a plain message when inputs are missing)."""
        from napari.qt.threading import create_worker

        from napari_medseg.checkpoint import read_checkpoint_info
        from napari_medseg.compute_thread import on_compute_thread
        from napari_medseg.inference import check_same_label_set
        from napari_medseg.preprocess import modality_mismatch

        if self.worker is not None:
            return
        paths = self._chosen_paths()
        if not paths:
            self.status.setText(NO_CHECKPOINT_TEXT)
            return
        image = self._image_layer()
        if image is None:
            self.status.setText("Open a CT or MR volume first (File \u25b8 Open, or File \u25b8 Open Sample).")
            return
        try:
            infos = [read_checkpoint_info(p) for p in paths]
            label_set = check_same_label_set(infos)
        except (OSError, ValueError) as err:
            self.status.setText(str(err))
            return
        modality = image.metadata.get("medseg", {}).get("modality")
        remedy = "add {an} {modality} checkpoint, or make one in \u201cCorrect and retrain\u201d"
        mismatch = next(filter(None, (modality_mismatch(Path(p).name, i.preprocessing.modality, modality, remedy)
                                      for p, i in zip(paths, infos))), None)
        if mismatch:  # its output would be organ-shaped noise presented as a prediction
            self.status.setText(f"Not segmented: {mismatch}.")
            return
        array, t = current_volume(self.viewer, image)
        frame_note = "" if t is None else f" (4D image: time frame t={t} only)"
        target = self._labels_layer(image, t)  # never another frame's layer: its edits are not this frame's
        locked, previous = [], None
        if target is not None and target.data.shape == array.shape:
            locked = _ledger_sync.refresh(target).locked  # edited + reviewed slices, found by diff
            previous = np.asarray(target.data) if locked else None
        batch = 8
        n_batches = math.ceil((array.shape[0] - len(set(locked))) / batch)
        kwargs = dict(device=self.device_combo.currentText(), precision=self.precision_combo.currentText(),
                      batch_size=batch, tta=self.tta_check.isChecked(), locked=locked, previous=previous,
                      uncertainty=True, largest_component=self.one_piece_check.isChecked(),
                      z_sigma_mm=self.z_sigma.value())
        spacing = tuple(float(s) for s in image.scale[-3:])  # organ volumes (mL) use the layer's scale
        kwargs["spacing"] = known_spacing(image)
        self._models = {k: v for k, v in self._models.items() if Path(k[0]) in paths}  # free unlisted models
        self._job = dict(image=image, label_set=label_set, paths=paths, frame_note=frame_note, locked=locked, frame=t)
        # the heat map when asked for, and kept current when it is already shown (a stale one would mislead)
        heat_map = self.unc_check.isChecked() or uncertainty_layer_name(image.name) in self.viewer.layers
        self.worker = create_worker(on_compute_thread(self._work), array, paths, kwargs, spacing, label_set, heat_map,
                                    _progress={"total": n_batches + 1, "desc": f"Segmenting {image.name}"},
                                    _start_thread=False)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(lambda: self.status.setText("Cancelled; existing layers were left unchanged."))
        self.worker.finished.connect(self._on_finished)
        self.status.setText(f"Loading {len(paths)} checkpoint(s)\u2026{frame_note}")
        self._refresh_state()
        self.worker.start()

    def _work(self, array, paths, kwargs, spacing, label_set, keep_uncertainty: bool):
        """Worker generator: load (cached) models, segment, compute organ stats.

        The uncertainty is always computed, for the organ table's column (which organ to check first); the
        float16 volume is handed back only for the uncertainty layer (``keep_uncertainty``)."""
        from napari_medseg.checkpoint import load_checkpoint
        from napari_medseg.device import pick_device
        from napari_medseg.inference import segment_volume
        from napari_medseg.organ_stats import organ_stats

        device = pick_device(kwargs.pop("device"))
        checkpoints = []
        for p in paths:
            key = (str(p), p.stat().st_mtime_ns, str(device))
            if key not in self._models:
                model, info = load_checkpoint(p, device=str(device))
                self._models[key] = (model.eval(), info)
            checkpoints.append(self._models[key])
        result = yield from segment_volume(array, checkpoints, device=device, **kwargs)
        stats = organ_stats(result.labels, spacing, label_set, array, uncertainty=result.uncertainty)
        if not keep_uncertainty:
            result.uncertainty = None
        return result, stats

    def cancel(self):
        """Ask the running worker to stop (it stops after the current batch)."""
        if self.worker is not None:
            self.status.setText("Cancelling after the current batch\u2026")
            self.worker.quit()

    def _on_progress(self, p):
        self.status.setText(f"Segmenting: {p.done}/{p.total} slices \u00b7 {p.slices_per_s:.1f} slices/s \u00b7 "
                            f"{p.device}{self._job['frame_note']}")

    def _on_error(self, err):
        self.status.setText(f"Segmentation failed: {err}")

    def _on_finished(self):
        self.worker = None
        self._refresh_state()

    def _on_done(self, out):
        result, stats = out
        job = self._job
        image, label_set = job["image"], job["label_set"]
        layer = self._show_labels(image, result, label_set, job["paths"], job["frame"])
        self.autosave.save(layer, image, reason="segment")
        if result.uncertainty is not None:
            self._show_uncertainty(image, result.uncertainty, job["frame"])
        unit = "HU" if image.metadata.get("medseg", {}).get("modality") == "ct" else "a.u."
        self.table.show_stats(stats, label_set, unit=unit)
        self.table.setVisible(True)
        self.table_hint.setVisible(True)
        kept = f"; {len(job['locked'])} locked slice(s) kept" if job["locked"] else ""
        islands = sum(result.islands_removed.values())
        kept += f"; {islands} island voxel(s) removed" if islands else ""
        self.status.setText(f"Done: {len(result.segmented)} slices in {result.seconds:.1f} s "
                            f"({result.slices_per_s:.1f} slices/s) on {result.device}, {result.precision}"
                            f"{kept}{job['frame_note']}. Layer \u201c{layer.name}\u201d.")

    def go_to_organ(self, value: int, z: int) -> None:
        """Show slice ``z`` of the last result's labels layer and make ``value`` its paint label."""
        job = getattr(self, "_job", None)
        layer = self._labels_layer(job["image"], job["frame"]) if job and job["image"] in self.viewer.layers else None
        show_organ(self.viewer, layer, value, z)

    def _show_labels(self, image, result, label_set, paths, frame: int | None = None):
        """The result on the image's (frame's) labels layer: updated in place (its locked slices kept) or added."""
        from napari.utils.colormaps import DirectLabelColormap

        # the reader's colours and hover names
        kwargs = aligned_labels_kwargs(image, result.labels, label_set, _labels_name(image, frame))
        meta = kwargs["metadata"]["medseg"]
        meta["checkpoints"] = [str(p) for p in paths]
        layer = self._labels_layer(image, frame)
        if layer is not None and layer.data.shape == result.labels.shape:
            meta["locked_slices"] = list(layer.metadata.get("medseg", {}).get("locked_slices", []))
            layer.data[...] = result.labels
            layer.metadata = {**layer.metadata, "medseg": meta}
            layer.colormap = DirectLabelColormap(color_dict=kwargs["colormap"])
            layer.features = kwargs["features"]
        else:
            if layer is not None:
                self.viewer.layers.remove(layer)
            meta["locked_slices"] = []
            layer = self.viewer.add_labels(result.labels, **kwargs)
        _ledger_sync.record_prediction(layer, result.segmented)  # fresh output is not an "edit"
        layer.refresh()
        return layer

    def _show_uncertainty(self, image, unc, frame: int | None = None):
        name = uncertainty_layer_name(image.name)
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == unc.shape:
            layer = self.viewer.layers[name]
            layer.data = unc
            return layer
        layer = self.viewer.add_image(unc, name=name, scale=image.scale[-3:], translate=image.translate[-3:],
                                      colormap="inferno", contrast_limits=(0.0, 1.0), blending="additive",
                                      opacity=0.5, metadata={"medseg": {"uncertainty": "normalised entropy"}})
        labels = self._labels_layer(image, frame)
        if labels is not None:  # draw the organ colours on top of the uncertainty heat map
            self.viewer.layers.move(self.viewer.layers.index(layer), self.viewer.layers.index(labels))
        return layer


def _labels_name(image, frame: int | None) -> str:
    """``"<image> labels"``, and for a 4D image's frame ``"<image> labels t=<frame>"``."""
    return labels_name(image.name) + ("" if frame is None else f" t={frame}")
