"""Keep the GUI cheap while fine-tuning runs: throttled progress and a live one-slice preview.

Both run in the worker thread, between optimiser steps: :func:`throttled`
forwards a ``retrain_volume`` generator's progress at most every
``interval_s`` (losses batched), so the GUI thread repaints a few times a
second instead of once per step; :class:`LivePreview` predicts the slice on
screen every ``every_s`` seconds (never a locked one) with the model being trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

#: At most this many progress updates per second reach the GUI thread.
UPDATES_PER_S = 3.0
#: Seconds between two live-preview predictions.
PREVIEW_EVERY_S = 5.0
PREVIEW = " preview"  # name suffix of the live-preview layer


@dataclass
class Update:
    """What the worker hands the GUI thread: the latest progress, the losses since the last update, a preview."""

    progress: object
    losses: list = field(default_factory=list)  # [(step, loss), ...]
    preview: tuple | None = None  # (z, (y, x) uint8 labels)


def throttled(gen, interval_s: float = 1.0 / UPDATES_PER_S, preview: LivePreview | None = None, clock=time.monotonic):
    """Wrap a ``retrain_volume`` generator: yield :class:`Update` at most every ``interval_s``; return its result.

    A change of phase is always forwarded (with the losses gathered so far).
    """
    last, phase, losses = -float("inf"), None, []
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            if p.loss is not None:
                losses.append((p.step, p.loss))
            now = clock()
            if p.phase == phase and now - last < interval_s:
                continue
            shown = preview.maybe_predict(now) if preview is not None and p.phase == "fine-tune" else None
            yield Update(p, losses, shown)
            last, phase, losses = now, p.phase, []
    finally:
        gen.close()


class LivePreview:
    """Predicts one slice (``self.z``, set by the GUI thread) with the model while it trains.

    Args:
        image: raw ``(z, y, x)`` volume.
        locked: slices never previewed (their labels are the user's).
        device, precision: as for the fine-tune.
        every_s: seconds between predictions (default :data:`PREVIEW_EVERY_S`).
        spacing: the volume's ``(sz, sy, sx)`` mm (``"spacing"``-policy models need it).
    """

    def __init__(self, image: np.ndarray, locked, device: str = "cpu", precision: str = "fp32",
                 every_s: float | None = None, spacing=None):
        self.image, self.locked, self.spacing = image, {int(z) for z in locked}, spacing
        self.device, self.precision = device, precision
        self.every_s = PREVIEW_EVERY_S if every_s is None else every_s
        self.z: int | None = None
        self.model = None
        self._info = None
        self._last = None

    def on_model(self, model, label_set, preprocessing) -> None:
        """``retrain_volume``'s ``on_model`` hook: the model that is about to be trained."""
        self.model = model
        self._info = SimpleNamespace(label_set=label_set, preprocessing=preprocessing, path="(training)")

    def maybe_predict(self, now: float):
        """``(z, labels)`` when a preview is due and the slice on screen is unlocked, else None."""
        z = self.z
        if self.model is None or z is None or z in self.locked or not 0 <= z < self.image.shape[0]:
            return None
        if self._last is None:
            self._last = now  # first preview after one interval: the first steps teach the model little
            return None
        if now - self._last < self.every_s:
            return None
        self._last = now
        return z, self.predict(z)

    def predict(self, z: int) -> np.ndarray:
        """``(y, x)`` uint8 labels of slice ``z`` from the current weights (the model's train mode is restored)."""
        from napari_medseg.inference import run_segmentation, segment_volume
        from napari_medseg.models.ensemble import paused

        with paused(self.model):  # an ensemble's members train in threads of their own: predict between steps
            seg = segment_volume(self.image[z:z + 1], [(self.model, self._info)], device=self.device,
                                 precision=self.precision, uncertainty=False, spacing=self.spacing)
            return run_segmentation(seg).labels[0]


class PreviewLayer:
    """Mixin of the Retrain dock: shows :class:`LivePreview` results on ``"<labels> preview"``.

    Adding or removing a napari layer stalls the event loop for about 0.2-0.3 s
    (layer controls, vispy visuals, the layer list), so the preview layer is
    made once per labels layer, when *Fine-tune* is clicked and before the
    worker starts, never while the model trains (the user may be painting), and
    then kept, hidden between fine-tunes, until its labels layer goes.

    Needs ``viewer``, ``current_slice()``, ``_preview`` (a LivePreview or None) and ``_job["layer"]``.
    """

    def _on_step_changed(self, event=None):
        if self._preview is not None:
            self._preview.z = self.current_slice()

    def _prepare_preview(self, layer):
        """Make ``layer``'s (empty, one-slice) preview layer if it has none; painting stays on ``layer``.

        Made visible: all zeros show nothing, and its first draw (shaders, textures: about
        0.1 s under software OpenGL) happens now rather than at the first preview.
        """
        name = layer.name + PREVIEW
        if name in self.viewer.layers:
            return
        self.viewer.add_labels(np.zeros((1, *layer.data.shape[-2:]), np.uint8), name=name, scale=layer.scale,
                               translate=layer.translate, colormap=layer.colormap, opacity=0.5)
        self.viewer.layers.selection.active = layer

    def _show_preview(self, z: int, labels: np.ndarray):
        """Show the model's current prediction of slice ``z`` on a one-slice layer (locked slices never).

        The layer holds ``(1, y, x)`` placed at slice ``z`` by its translation, so it shows on that
        slice only, and moving it never allocates a volume on the GUI thread (a 600 x 512 x 512
        volume of zeros stalled napari for about a second).
        """
        layer = self._job["layer"]
        name = layer.name + PREVIEW
        translate = np.array(layer.translate, float)
        translate[-3] += z * float(layer.scale[-3])
        if name not in self.viewer.layers:  # the user deleted it mid-run
            self._prepare_preview(layer)
        preview = self.viewer.layers[name]
        # each of these refreshes the layer on the GUI thread: set only what changed (the slice
        # on screen usually stays, and the layer stays visible during a run)
        if not np.allclose(preview.translate, translate):
            preview.translate = translate
        preview.data = labels[None]
        if not preview.visible:
            preview.visible = True

    def _hide_preview(self):
        """Hide the job's preview layer (kept for the next fine-tune: removing it stalls like adding it)."""
        layer = self._job.get("layer")
        if layer is not None and layer.name + PREVIEW in self.viewer.layers:
            self.viewer.layers[layer.name + PREVIEW].visible = False

    def _drop_orphan_previews(self):
        """Remove preview layers whose labels layer is gone (deleted or renamed)."""
        names = {layer.name for layer in self.viewer.layers}
        for name in [n for n in names if n.endswith(PREVIEW) and n.removesuffix(PREVIEW) not in names]:
            self.viewer.layers.remove(name)
