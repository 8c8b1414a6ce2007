"""The Retrain dock's scribble-mode actions and round cost (a mixin of :class:`RetrainWidget`).

Kept apart so ``retrain.py`` stays small; the array work is in :mod:`._scribble_mode`.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from napari_medseg.widgets._common import current_volume, known_spacing, scribble_layer_name
from napari_medseg.widgets._scribble_mode import (
    add_scribble_layer, check_aligned, fill_slice, slice_probabilities, training_labels,
)


class ScribbleActions:
    """Needs ``viewer``, ``image_layer()``, ``labels_layer()``, ``current_slice()``, ``label_set()``,
    ``status``, ``update_ledger_view()``, the dicts ``_models`` and ``_round_base`` and the set ``_watched``."""

    def scribble_layer(self):
        image = self.image_layer()
        name = scribble_layer_name(image.name) if image is not None else None
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def scribble_mode(self):
        """Add (or select) the image's scribble layer: organ strokes 1..K, background strokes K+1."""
        image = self.image_layer()
        if image is None:
            self.status.setText("Open an image first.")
            return None
        label_set = self.label_set()
        layer = add_scribble_layer(self.viewer, image, label_set)
        self.viewer.layers.selection.active = layer
        self.watch_scribbles(layer)
        bg = len(label_set.organs) + 1
        self.status.setText(f"Scribble mode: paint a few strokes per organ (1..{bg - 1}) and background strokes "
                            f"with {bg} \u201cbackground (scribble)\u201d on \u201c{layer.name}\u201d; "
                            "Fill slice (Shift-F) or Fine-tune.")
        return layer

    def watch_scribbles(self, layer) -> None:
        """Strokes on ``layer`` update the round's cost shown in the dock (once per layer, however it was added:
        *Scribble mode*, a case reopened in the Cases dock, a restored autosave)."""
        if layer is not None and layer_key(layer) not in self._watched:
            self._watched.add(layer_key(layer))
            layer.events.paint.connect(lambda e: self.update_ledger_view_soon())
            self._count_round_from(layer)

    def _count_round_from(self, scribbles) -> None:
        """Strokes a layer arrives with (a reopened case's, a restored autosave's) were not painted in this round:
        the round's cost counts changes from them, as it does for the labels layer's restored edits."""
        labels = self.labels_layer()
        base = self._round_base.get(layer_key(labels)) if labels is not None else None
        data = np.asarray(scribbles.data)
        if base is not None and (base[1] is None or base[1].shape != data.shape):
            self._round_base[layer_key(labels)] = (base[0], np.array(data, np.uint8))

    def label_set(self):
        """The labels layer's label set, else the one chosen for new layers."""
        from napari_medseg.labels import get_label_set
        from napari_medseg.widgets.legend import layer_label_set

        layer = self.labels_layer()
        found = layer_label_set(layer) if layer is not None else None
        return found or get_label_set(self.label_set_combo.currentText())

    def scribbles_for_training(self, labels_data, locked):
        """``training_labels`` for the current layers, or a one-line message (str) for bad input."""
        scribbles = self.scribble_layer()
        if scribbles is not None:
            try:
                check_aligned(scribbles, self.image_layer())
            except ValueError as err:
                self._notify(str(err))
                return str(err)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = training_labels(labels_data, locked, None if scribbles is None else scribbles.data,
                                      len(self.label_set().organs))
            except ValueError as err:
                return str(err)
        for w in caught:
            self._notify(str(w.message), warning=True)
        return out

    def fill_from_scribbles(self):
        """Replace the current slice of the labels layer by the fill grown from its scribbles."""
        image, layer, z = self.image_layer(), self.labels_layer(), self.current_slice()
        scribbles = self.scribble_layer()
        if image is None or layer is None or z is None or scribbles is None:
            self.status.setText("Fill needs an image, its labels layer and its scribble layer (Scribble mode).")
            return None
        try:
            check_aligned(scribbles, image)
        except ValueError as err:
            self._notify(str(err))
            return None
        t0 = time.perf_counter()
        array, _ = current_volume(self.viewer, image)
        probs, guided = None, self._models.get(layer_key(layer))
        if guided is not None:
            from napari_medseg import compute_thread
            from napari_medseg.preprocess import intensity_range

            model, info = guided
            value_range = intensity_range(array, info.preprocessing) if info.preprocessing.modality == "mr" else None
            probs = compute_thread.call(slice_probabilities, model, info, array[z], value_range=value_range,
                                        spacing=known_spacing(image))  # torch stays on one thread
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                filled = fill_slice(array[z], scribbles.data[z], len(self.label_set().organs), probabilities=probs)
            except ValueError as err:
                self.status.setText(str(err))
                return None
        for w in caught:
            self._notify(str(w.message), warning=True)
        layer.data[z] = filled
        base = self._round_base.get(layer_key(layer))
        if base is not None and base[0].shape == layer.data.shape:
            base[0][z] = filled  # the round's cost counts the strokes and later touch-ups, not the fill itself
        layer.refresh()
        self.update_ledger_view(layer)  # an edited slice now: check it, touch it up, mark it reviewed
        self.status.setText(f"Filled slice {z} from its scribbles in {time.perf_counter() - t0:.2f} s"
                            f" ({'guided by the model' if probs is not None else 'unguided'}). "
                            "Check it, touch it up, then mark it reviewed (Shift-R).")
        return filled

    def round_cost(self) -> int:
        """Pixels the user changed since the last fine-tune (labels changed + scribble pixels changed)."""
        layer = self.labels_layer()
        base = self._round_base.get(layer_key(layer)) if layer is not None else None
        if base is None:
            return 0
        labels_base, scribbles_base = base
        cost = int(np.count_nonzero(np.asarray(layer.data) != labels_base)) if labels_base.shape == layer.data.shape else 0
        scribbles = self.scribble_layer()
        if scribbles is not None:
            data = np.asarray(scribbles.data)
            cost += int(np.count_nonzero(data != scribbles_base) if scribbles_base is not None
                        and scribbles_base.shape == data.shape else np.count_nonzero(data))
        return cost

    def start_round(self, layer):
        """Remember what the layers hold now: the next round's cost counts changes from here."""
        scribbles = self.scribble_layer()
        self._round_base[layer_key(layer)] = (np.array(layer.data, np.uint8),
                                               None if scribbles is None else np.array(scribbles.data, np.uint8))

    def _notify(self, message: str, warning: bool = False):
        from napari.utils.notifications import show_error, show_warning

        (show_warning if warning else show_error)(message)
        self.status.setText(message)


def layer_key(layer) -> str | None:
    """A stable key for a layer (plugin docks see a new proxy object on every access, so not ``id``)."""
    return None if layer is None else str(layer.unique_id)
