"""The Retrain dock's fine-tune job: start it in a worker, show its progress, apply its result, undo it.

A mixin of :class:`~napari_medseg.widgets.retrain.RetrainWidget`, kept apart so
``retrain.py`` stays small.  The loop itself is the Qt-free
:func:`napari_medseg.retrain.loop.retrain_volume`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_medseg.widgets import _ledger_sync
from napari_medseg.widgets._common import current_volume, known_spacing
from napari_medseg.widgets._preview import LivePreview, throttled
from napari_medseg.widgets._scribble_actions import layer_key

#: Undo steps kept per labels layer (each holds one full label volume).
HISTORY_CAP = 3


@dataclass
class UndoStep:
    """What *Revert* brings back: the model version before a fine-tune, and what it said."""

    start_choice: str  # the Start from entry: a checkpoint path, or a scratch choice
    labels_before: np.ndarray  # (z, y, x) uint8, the layer before the fine-tune wrote its output
    slice_uncertainty: np.ndarray | None  # (z,) mean uncertainty per slice of that output, if known
    organs: list | None  # its OrganStat rows (the Cases dock's Check first), if known
    model: tuple | None  # (model, CheckpointInfo) that guides Fill slice, if any


class FineTuneJob:
    """Needs ``viewer``, ``options`` (:class:`~._retrain_options.RetrainOptions`), ``image_layer()``,
    ``labels_layer()``, ``scribbles_for_training()``, ``round_cost()``, ``start_round()``, ``_show_ledger()``,
    ``_set_running()``, ``_on_step_changed()``, the widgets ``status``, ``progress``, ``loss_plot``, ``store_row``,
    ``autosave``, ``model_output_changed`` (a signal), and the attributes ``worker``, ``_stop``, ``_job``,
    ``_preview``, ``_history``, ``_slice_uncertainty``, ``_organs`` and ``_models``."""

    def fine_tune(self):
        """Fine-tune on the locked and scribbled slices in a worker; the unlocked slices are re-segmented after."""
        import threading

        from napari.qt.threading import create_worker

        from napari_medseg.compute_thread import on_compute_thread
        from napari_medseg.retrain.loop import retrain_volume

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
            start = self.options.start_from()
        except ValueError as err:
            self.status.setText(str(err))
            return
        meta = image.metadata.get("medseg", {})
        if start.checkpoint is not None:  # one click fixes it (Start from), so the dock refuses; the CLI warns
            from napari_medseg.checkpoint import read_checkpoint_info
            from napari_medseg.preprocess import modality_mismatch

            try:
                made_for = read_checkpoint_info(start.checkpoint).preprocessing.modality
            except (OSError, ValueError) as err:
                self.status.setText(f"Not started: {err}")
                return
            mismatch = modality_mismatch(Path(start.checkpoint).name, made_for, meta.get("modality"))
            if mismatch:
                self.status.setText(f"Not started: {mismatch} (Start from).")
                return
        self._stop = threading.Event()
        device, precision = self.options.device_combo.currentText(), self.options.precision_combo.currentText()
        self._preview = LivePreview(array, ledger.locked, device=device, precision=precision,
                                    spacing=known_spacing(image))
        self._on_step_changed()
        self._job = dict(layer=layer, start_choice=self.options.start_combo.currentText(),
                         labels_before=np.array(layer.data, np.uint8), locked=ledger.locked, cost=self.round_cost())
        gen = retrain_volume(array, labels_before, slices, start=start, spacing=known_spacing(image),
                             source=str(meta.get("source_path") or image.name),
                             options=dict(scope=self.options.scope(), device=device, precision=precision,
                                          **self.options.budget_kwargs()),
                             store=self.store_row.store(), replay=self.store_row.replay.isChecked(),
                             should_stop=self._stop.is_set, on_model=self._preview.on_model, partial=bool(scribbled))
        self.worker = create_worker(on_compute_thread(_train), gen, self._preview, _start_thread=False)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: self.status.setText(f"Fine-tuning failed: {err}"))
        self.worker.finished.connect(self._on_finished)
        self.loss_plot.clear()
        self.progress.setValue(0)
        self._prepare_preview(layer)  # now, not mid-run: adding a layer stalls napari ~0.2 s
        self._set_running(True)
        self.status.setText(f"Fine-tuning on {len(ledger.locked)} full and {len(scribbled)} scribbled slice(s)\u2026")
        self.worker.start()

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
        self._hide_preview()
        self._set_running(False)

    def _on_done(self, result):
        job, layer = self._job, self._job["layer"]
        unlocked = [z for z in range(layer.data.shape[0]) if z not in set(job["locked"])]
        self.remember(layer, job["start_choice"], job["labels_before"])
        self._apply_labels(layer, result.labels, unlocked)
        # per-slice means: ranking is instant; the model guides Fill slice
        self._set_model_output(layer, result.slice_uncertainty, result.organs, (result.model, result.checkpoint))
        self.start_round(layer)  # the next round starts from this version
        self.update_ledger_view(layer)  # "this round: 0 px changed" (the count above saw the old round)
        path = str(result.checkpoint.path)
        medseg = dict(layer.metadata.get("medseg", {}))
        medseg.update(checkpoints=[path], label_set=result.checkpoint.label_set.to_dict())
        layer.metadata["medseg"] = medseg
        self.autosave.save(layer, self.image_layer(), reason="fine-tune")
        self.options.fill_start_combo(layer, select=path)
        from napari_medseg.retrain.members import describe_steps

        ft = result.finetune
        self.progress.setValue(100)
        self.status.setText(  # the next action first: the dock may be taller than the window
            _next_round_hint(self.slices_to_correct_next(layer, NEXT_ROUND_SLICES)[0])
            + _least_certain_hint(result.organs)
            + f"Saved {Path(path).name} ({describe_steps(ft)}, {ft.seconds:.0f} s, stopped by {ft.stopped_by}); "
            f"Dice on {ft.dice_on} slices {ft.dice_before:.2f} \u2192 {ft.dice_after:.2f}. "
            f"Re-segmented {len(unlocked)} unlocked slice(s), kept {len(job['locked'])} locked; "
            f"replayed {result.replayed_slices} stored slice(s){_left_out(result.replay_plan)}. "
            f"This round cost {job['cost']:,} px changed.")
        self.store_row.refresh()
        self._set_running(False)
        self.model_output_changed.emit(layer)

    def remember(self, layer, start_choice: str, labels_before: np.ndarray):
        """Push one undo step for :meth:`revert`; only the last :data:`HISTORY_CAP` are kept (a volume each)."""
        key = layer_key(layer)
        history = self._history.setdefault(key, [])
        history.append(UndoStep(start_choice, labels_before, self._slice_uncertainty.get(key), self._organs.get(key),
                                self._models.get(key)))
        del history[:-HISTORY_CAP]

    def _set_model_output(self, layer, slice_uncertainty, organs, model) -> None:
        """Record what the model now on ``layer`` said (None: not known); the caller then emits
        ``model_output_changed``, once the layer's metadata names that model too."""
        key = layer_key(layer)
        for store, value in ((self._slice_uncertainty, slice_uncertainty), (self._organs, organs),
                             (self._models, model)):
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value

    def model_output(self, layer) -> tuple:
        """``(organs, slice_uncertainty)`` of the model output on ``layer``; None where not known."""
        key = layer_key(layer)
        return self._organs.get(key), self._slice_uncertainty.get(key)

    def _apply_labels(self, layer, labels, slices):
        """Write model output into ``slices`` of the layer (in place) and tell the ledger it is not an edit."""
        layer.data[slices] = labels[slices]
        self._show_ledger(_ledger_sync.record_prediction(layer, slices))
        layer.refresh()

    def revert(self):
        """Back to the previous checkpoint version and its labels on the unlocked slices."""
        layer = self.labels_layer()
        history = self._history.get(layer_key(layer))
        if not history:
            self.status.setText("Nothing to revert.")
            return
        step = history.pop()
        checkpoint = step.start_choice
        ledger = _ledger_sync.refresh(layer)
        self._apply_labels(layer, step.labels_before, ledger.unlocked)
        # the ranking and the fill's guide go back with the labels (else they describe the discarded version)
        self._set_model_output(layer, step.slice_uncertainty, step.organs, step.model)
        scratch = checkpoint in self.options.scratch
        medseg = dict(layer.metadata.get("medseg", {}))
        medseg["checkpoints"] = [] if scratch else [checkpoint]
        layer.metadata["medseg"] = medseg
        self.options.fill_start_combo(layer, select=checkpoint)
        self.status.setText(f"Reverted to {checkpoint if scratch else Path(checkpoint).name}.")
        self._set_running(False)
        self.model_output_changed.emit(layer)


def _train(gen, preview):
    """The worker: the fine-tune's throttled progress, then its result.

    ``hide_triton`` first, in this thread (the dock's warm-up has usually done it): the optimizer
    imports ``torch._dynamo``, which must not load triton next to Mesa (see ``_torch_compat``).
    """
    from napari_medseg._torch_compat import hide_triton

    hide_triton()
    return (yield from throttled(gen, preview=preview))


#: Slices the status line proposes for the next round after a fine-tune: two rounds of 2 suggested
#: slices after scribbles reached full-slice Dice at 29 % of the painting (docs/retrain.md).
NEXT_ROUND_SLICES = 2


def _left_out(plan) -> str:
    """`` (left out N scribbled ones ...)`` when the replay left stored scribbles out."""
    n = plan.scribbled_left_out if plan is not None else 0
    return f" (left out {n} scribbled one(s): replay uses fully labelled slices)" if n else ""


def _least_certain_hint(organs) -> str:
    """``Least certain organs now (uncertainty, 0 = certain): spleen 0.64, ...`` and a line break (empty without
    organ stats)."""
    from napari_medseg.organ_stats import format_least_certain

    ranked = format_least_certain(organs or [])
    return f"Least certain organs now (uncertainty, 0 = certain): {ranked}.\n" if ranked else ""


def _next_round_hint(picks) -> str:
    """``Next round: correct slices 16, 12 ...`` and a line break (empty when there is nothing to suggest)."""
    if not picks:
        return ""
    return (f"Next round: correct slice{'s' if len(picks) > 1 else ''} {', '.join(map(str, picks))} "
            "(the most uncertain; Suggest next slice goes there), then Fine-tune.\n")
