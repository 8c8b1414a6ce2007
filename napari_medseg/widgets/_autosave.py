"""Autosave of the plugin's labels layers, and the offer to restore them after a crash.

One :class:`Autosaver` per viewer: the docks call :func:`attach`, and so does
the reader (and the sample) once an image is open, so the offer comes with no
dock open.  It saves each managed labels layer with its slice ledger to its own
case folder ``<data dir>/recovery/<voxel hash of the image>/<layer slug>/`` (a
:mod:`napari_medseg.casestate` folder written atomically; layout and pruning
in :mod:`napari_medseg.recovery`):

- right after each model update (Segment, Fine-tune): :func:`after_model_update`;
- every :data:`INTERVAL_MS` while it has unsaved changes (a cheap adler32 of
  the labels plus the reviewed slices tells whether anything changed).

A labels layer is *managed* when a model update went through it, or when it is
named ``"<image> labels"`` or ``"<image> scribbles"`` (the Retrain dock's strokes) on
the grid of an open image.  A scribble layer is saved without a slice ledger (its
strokes are not corrections; ``case.json`` lists the ``scribbled`` slices) and comes
back as a scribble layer.  For a 4D (cine)
image, as Segment and Fine-tune do, the managed layer is the 3D labels of one
frame: the frame on screen at a model update (or at its first save), recorded
in the case and in ``layer.metadata["medseg_recovery"]``; each frame has its own
case folder.  A 4D labels layer is not autosaved (a warning says so, once).

When an image whose voxel hash has an autosave (written by another session)
is opened, and that autosave is newer than the user's last save of those
labels through the napari writer (``saved.json``), a non-modal dialog per
labels layer offers *Restore*; :meth:`Autosaver.restore` does the same for
scripts and tests.  A restore never replaces a layer the user has: if a
different layer of that name is open, the autosave comes back as
``"<name> (recovered)"``.  A folder offered and not restored is never
overwritten: this session's saves of a layer of that name go to ``<slug>~2``.
"""

from __future__ import annotations

import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, QTimer

from napari_medseg import recovery
from napari_medseg.recovery import (
    recovery_dir,  # also imported from here by scripts and tests
)
from napari_medseg.casestate import slices_with_strokes
from napari_medseg.widgets import _ledger_sync
from napari_medseg.widgets._common import current_volume, is_scribble_name, labels_name, scribble_layer_name
from napari_medseg.widgets._on_close import call_before_close

#: Autosave period while a layer has unsaved changes (issue 11: every 30 s).
INTERVAL_MS = 30_000
#: seconds napari's close waits for the last autosave writes (a 512x512x600 volume takes ~2 s)
CLOSE_TIMEOUT_S = 30.0
#: ``layer.metadata`` key: ``{"folder": case folder, "frame": 4D time index or None}`` (the writer marks that folder).
RECOVERY_KEY = "medseg_recovery"
_BY_VIEWER: dict[int, tuple] = {}  # id(viewer) -> (weakref(viewer), Autosaver): one per open viewer


@dataclass
class RestoreOffer:
    """An autosave found for an open image (one per autosaved labels layer)."""

    image_id: str  # the image layer's unique_id
    image_name: str
    folder: Path
    saved_at: str  # when the autosaved labels were taken, ISO-8601 UTC
    locked: list[int]  # corrected or reviewed slices; for a scribble layer, the slices holding strokes
    layer_name: str = ""
    frame: int | None = None  # 4D images: the time frame the labels belong to
    last_saved: dict | None = None  # the user's last explicit save of these labels (recovery.last_saved), if any


def attach(viewer) -> "Autosaver":
    """The viewer's autosaver (created on first call; docks call this in their ``__init__``)."""
    real = getattr(viewer, "__wrapped__", viewer)  # docks get a proxy; key on the viewer itself
    for key, (ref, _) in list(_BY_VIEWER.items()):
        if ref() is None:
            del _BY_VIEWER[key]
    entry = _BY_VIEWER.get(id(real))
    if entry is None or entry[0]() is not real:
        entry = (weakref.ref(real), Autosaver(real))
        _BY_VIEWER[id(real)] = entry
    return entry[1]


def attached(viewer) -> "Autosaver | None":
    """The viewer's autosaver if one was attached (by a dock or the reader), else None; creates nothing."""
    entry = _BY_VIEWER.get(id(getattr(viewer, "__wrapped__", viewer)))
    return entry[1] if entry is not None and entry[0]() is getattr(viewer, "__wrapped__", viewer) else None


def after_model_update(viewer, image, labels) -> None:
    """Hook for the docks: ``labels`` now holds fresh model output for ``image``; save it now."""
    if image is not None and labels is not None:
        attach(viewer).save(labels, image, reason="model update")


def _write(folder, labels, ledger_state, kwargs) -> None:
    from napari_medseg.casestate import save_case_snapshot

    save_case_snapshot(folder, labels, ledger_state, **kwargs)


class Autosaver(QObject):
    """Saves managed labels layers to the recovery folder and offers restores.  See the module docstring."""

    def __init__(self, viewer):
        super().__init__()
        self.viewer = viewer
        self.offers: list[RestoreOffer] = []
        self.last_error: str | None = None
        self._dialogs: list[tuple] = []  # (offer, QMessageBox) of open restore offers
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medseg-autosave")
        self._pending: list[tuple] = []  # (labels uid, name, folder, Future) of saves not yet reported
        self._hashes: dict[str, str] = {}  # image unique_id -> voxel hash
        self._pairs: dict[str, str] = {}  # labels unique_id -> image unique_id (from model updates / restores)
        self._saved: dict[str, tuple] = {}  # labels unique_id -> fingerprint at the last save
        self._written: set[Path] = set()  # recovery folders this session wrote (not offered back to it)
        self._folders: dict[tuple, Path] = {}  # (labels uid, image hash, layer name, frame) -> case folder
        self._warned: set[str] = set()  # labels unique_ids already warned about (4D labels)
        self._pruning: tuple | None = None  # (errors, Future) of the pruning started by __init__
        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self.save_changed)
        self.timer.start()
        viewer.layers.events.inserted.connect(lambda event: self._on_inserted(event.value))
        viewer.layers.events.removing.connect(lambda event: self._on_removing(event.index))
        for layer in list(viewer.layers):
            self._on_inserted(layer)
        self.prune()
        call_before_close(viewer, self.save_before_close)

    def save_before_close(self) -> None:
        """Save what changed since the last tick and wait for it to be written (napari is closing)."""
        self.save_changed()
        self.flush(timeout=CLOSE_TIMEOUT_S)

    def _on_removing(self, index) -> None:
        """A layer is about to go (deleted, or ``viewer.close()`` clearing the list): save what it or its
        labels changed since the last tick, so removing a layer never loses strokes."""
        try:
            going = self.viewer.layers[index]
        except (IndexError, TypeError):
            return
        for layer, image in self.managed():
            if going is layer or going is image:
                if self._fingerprint(layer) != self._saved.get(str(layer.unique_id)):
                    self.save(layer, image, reason="closed")

    @property
    def dialog(self):
        """The most recent restore offer still open, or None."""
        return self._dialogs[-1][1] if self._dialogs else None

    # ------------------------------------------------------------- saving
    def managed(self) -> list[tuple]:
        """``[(labels layer, image layer), ...]`` this autosaver keeps safe."""
        from napari.layers import Image, Labels

        layers = {str(layer.unique_id): layer for layer in self.viewer.layers}
        images = [layer for layer in layers.values() if isinstance(layer, Image) and self._image_hash(layer)]
        pairs = []
        for uid, layer in layers.items():
            if not isinstance(layer, Labels) or layer.data.ndim not in (3, 4):
                continue
            image = layers.get(self._pairs.get(uid, ""))
            if image is None:
                name = layer.name.removesuffix(" (recovered)")
                image = next((i for i in images if name in (labels_name(i.name), scribble_layer_name(i.name))), None)
            if image is not None and layer.data.ndim == 3 and tuple(image.data.shape[-3:]) == tuple(layer.data.shape):
                pairs.append((layer, image))
            elif image is not None and tuple(image.data.shape) == tuple(layer.data.shape) and uid not in self._warned:
                self._warned.add(uid)
                self._warn(f"\u201c{layer.name}\u201d is not autosaved: it is a 4D labels layer, and autosave (like Segment "
                           "and Fine-tune) keeps the 3D labels of one frame; save it yourself to keep it")
        return pairs

    def save_changed(self) -> list[str]:
        """Save every managed layer whose labels or reviewed slices changed since its last save; their names."""
        self._report()
        saved = []
        for layer, image in self.managed():
            if self._fingerprint(layer) != self._saved.get(str(layer.unique_id)):
                if self.save(layer, image, reason="periodic"):
                    saved.append(layer.name)
        return saved

    def save(self, layer, image, reason: str = "manual") -> Path | None:
        """Save ``layer`` (labels of ``image``) with its ledger; returns the case folder, or None when not managed.

        The labels and ledger are copied here (GUI thread, ~0.1 s for 512x512x600);
        compressing and writing run in one background thread, in order
        (:meth:`flush` waits for them).  A failed write is reported as a
        warning and retried at the next tick.
        """
        image_hash = self._image_hash(image) if image is not None else None
        if image_hash is None or layer.data.ndim != 3 or tuple(image.data.shape[-3:]) != tuple(layer.data.shape):
            return None
        uid = str(layer.unique_id)
        self._pairs[uid] = str(image.unique_id)
        frame = self._frame(layer, image, reason)
        snapshot_at = datetime.now(timezone.utc).isoformat()
        labels = np.array(layer.data)  # a snapshot: painting goes on while it is written
        strokes = is_scribble_name(layer.name)
        ledger_state = _no_corrections_state(labels) if strokes else _ledger_sync.ledger_for(layer).to_state()
        meta = layer.metadata.get("medseg", {})
        folder = self._folder(uid, image_hash, layer.name, frame)
        layer.metadata[RECOVERY_KEY] = {"folder": str(folder), "frame": frame}  # the writer marks it when the user saves
        extra = {"layer_name": layer.name, "image_name": image.name, "reason": reason, "frame": frame,
                 "snapshot_at": snapshot_at, "checkpoints": list(meta.get("checkpoints", []))}
        if strokes:
            extra["scribbled"] = slices_with_strokes(labels)
        kwargs = dict(image_hash=image_hash, source_path=image.metadata.get("medseg", {}).get("source_path"),
                      label_set=meta.get("label_set"), status="in progress", extra=extra)
        self._written.add(folder)
        self._saved[uid] = self._fingerprint(layer)
        self._pending.append((uid, layer.name, folder, self._executor.submit(_write, folder, labels, ledger_state, kwargs)))
        return folder

    def _frame(self, layer, image, reason: str) -> int | None:
        """4D images: the frame the 3D labels belong to (on screen at a model update or first save; then kept)."""
        if image.data.ndim != 4:
            return None
        kept = (layer.metadata.get(RECOVERY_KEY) or {}).get("frame")
        if reason == "periodic" and kept is not None:
            return int(kept)
        return current_volume(self.viewer, image)[1]

    def _folder(self, uid: str, image_hash: str, name: str, frame: int | None) -> Path:
        """The layer's case folder; never one offered to this session and not restored (that autosave stays)."""
        key = (uid, image_hash, name, frame)
        if key not in self._folders:
            base = folder = recovery.case_folder(image_hash, name, frame)
            offered, n = {offer.folder for offer in self.offers}, 2
            while folder in offered or folder in self._folders.values():
                folder, n = base.with_name(f"{base.name}~{n}"), n + 1
            self._folders[key] = folder
        return self._folders[key]

    def prune(self) -> None:
        """Remove old recovery folders in the autosave thread (:func:`napari_medseg.recovery.prune`), never those of
        images open in any viewer; :meth:`flush` waits for it, failures are shown as warnings."""
        in_use = set()
        for _, saver in list(_BY_VIEWER.values()) + [(None, self)]:
            for folder in saver._written | set(saver._folders.values()):
                in_use |= {folder.name, folder.parent.name}  # case folders, or old one-per-image ones
            in_use |= set(saver._hashes.values())
        errors: list[str] = []
        self._pruning = (errors, self._executor.submit(recovery.prune, in_use, errors=errors))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every submitted save is on disk; report failures."""
        for *_, future in list(self._pending) + ([self._pruning] if self._pruning else []):
            future.exception(timeout=timeout)
        self._report()

    def _report(self) -> None:
        """Warn (GUI thread) about finished saves (and pruning) that failed, and mark their layers unsaved."""
        if self._pruning and self._pruning[1].done():
            (errors, future), self._pruning = self._pruning, None
            for message in errors + ([f"{future.exception()}"] if future.exception() else []):
                self._warn(f"Pruning old autosaves in {recovery_dir()}: {message}")
        still = []
        for uid, name, folder, future in self._pending:
            if not future.done():
                still.append((uid, name, folder, future))
            elif future.exception() is not None:
                self._saved.pop(uid, None)
                self._warn(f"Autosave of \u201c{name}\u201d to {folder} failed: {future.exception()}")
        self._pending = still

    # ------------------------------------------------------------ restoring
    def _on_inserted(self, layer) -> None:
        from napari.layers import Image

        if not isinstance(layer, Image):
            return
        image_hash = self._image_hash(layer)
        if image_hash is None:
            return
        from napari_medseg.casestate import CaseStateError, read_case_info

        try:
            folders = recovery.autosave_folders(image_hash)
        except OSError as err:
            self._warn(f"Could not look for autosaves of \u201c{layer.name}\u201d in {recovery_dir()}: {err}")
            return
        for folder in folders:
            if folder in self._written:
                continue
            try:
                info = read_case_info(folder)
                marker = recovery.last_saved(folder)
                if not recovery.autosave_is_newer(info, marker):
                    continue  # the user saved these labels after the autosave
            except (CaseStateError, ValueError) as err:
                self._warn(f"An autosave for \u201c{layer.name}\u201d exists but cannot be read: {err}")
                continue
            offer = RestoreOffer(str(layer.unique_id), layer.name, folder, recovery.autosave_time(info),
                                 list(info.get("scribbled", info.get("locked", []))), str(info.get("layer_name") or ""),
                                 info.get("frame"), marker)
            self.offers.append(offer)
            self._notify(offer)

    def _notify(self, offer: RestoreOffer) -> None:
        """A non-modal dialog (it stays until answered, unlike a toast): Restore / Not now."""
        from qtpy.QtWidgets import QMessageBox

        what = f"\u201c{offer.layer_name}\u201d on " if offer.layer_name else "the labels for "
        frame = "" if offer.frame is None else f", time frame t={offer.frame}"
        saved = offer.last_saved
        since = (f"It is newer than your last save of these labels ({Path(saved['path']).name}, {_local(saved['saved_at'])}).\n\n"
                 if saved else "")
        parent = getattr(self.viewer.window, "_qt_window", None)
        box = QMessageBox(QMessageBox.Icon.Question, "napari-medseg: restore autosave?",
                          f"An autosave of {what}\u201c{offer.image_name}\u201d{frame} exists, taken {_local(offer.saved_at)} "
                          f"({len(offer.locked)} {_slices_kind(offer.layer_name)}).\n\n{since}"
                          f"Restore it as a labels layer? Layers you have open are not changed.",
                          parent=parent)
        box.setDetailedText(f"Recovery folder: {offer.folder}")
        restore = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Not now", QMessageBox.ButtonRole.RejectRole)
        box.setModal(False)
        box.buttonClicked.connect(lambda button: self._answer(offer, button is restore))
        self._dialogs.append((offer, box))
        box.show()

    def _answer(self, offer: RestoreOffer, restore: bool) -> None:
        self._close_dialog(offer)
        if restore:
            try:
                self.restore(offer)
            except ValueError as err:  # CaseStateError is a ValueError
                self._warn(f"Could not restore the autosave: {err}")

    def restore(self, offer: RestoreOffer | None = None):
        """Add the autosaved labels (and ledger) of ``offer`` (default: the latest) as a labels layer; returns it."""
        from napari_medseg.casestate import CaseStateError, load_case
        from napari_medseg.io.layers import labels_layer_kwargs, layer_geometry
        from napari_medseg.labels import LabelSet

        offer = offer if offer is not None else (self.offers[-1] if self.offers else None)
        if offer is None:
            raise ValueError("no autosave to restore: none was found for the images opened in this viewer")
        image = next((layer for layer in self.viewer.layers if str(layer.unique_id) == offer.image_id), None)
        if image is None:
            raise ValueError(f"the image \u201c{offer.image_name}\u201d was closed; open it again to restore its autosave")
        try:
            case = load_case(offer.folder)
        except CaseStateError as err:
            self._warn(str(err))
            raise
        if case.image_hash != self._image_hash(image) or case.labels.shape != tuple(image.data.shape[-3:]):
            raise ValueError(f"the autosave in {offer.folder} does not belong to \u201c{image.name}\u201d (voxels differ)")
        name = _restored_name(case.extra, image.name)
        strokes = is_scribble_name(name)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None or not np.array_equal(np.asarray(layer.data), case.labels):
            if layer is not None:
                name += " (recovered)"  # never replace labels the user has open (napari numbers repeats)
            geometry, _ = layer_geometry(image.metadata, image.data.shape[-3:], image.scale[-3:], image.translate[-3:])
            label_set = LabelSet.from_dict(case.label_set) if case.label_set else LabelSet.numbered(int(case.labels.max()))
            kwargs = labels_layer_kwargs(case.labels, geometry, label_set, name)
            kwargs["metadata"]["medseg"]["checkpoints"] = list(case.extra.get("checkpoints") or [])
            if not strokes:
                kwargs["metadata"][_ledger_sync.KEY] = case.ledger  # in place before the docks see the new layer
            layer = self.viewer.add_labels(case.labels, **kwargs)
        frame = case.extra.get("frame")
        layer.metadata[RECOVERY_KEY] = {"folder": str(offer.folder), "frame": frame}
        if not strokes:  # a scribble layer has no slice ledger
            layer.metadata[_ledger_sync.KEY] = case.ledger
            _ledger_sync.refresh(layer)
        uid = str(layer.unique_id)
        self._pairs[uid] = offer.image_id
        self._saved[uid] = self._fingerprint(layer)
        self._written.add(offer.folder)  # from now on this session owns that autosave ...
        self._folders[(uid, case.image_hash, layer.name, frame)] = offer.folder  # ... and saves this layer there
        self.offers = [o for o in self.offers if o is not offer]
        self._close_dialog(offer)
        return layer

    def withdraw(self, offer: RestoreOffer) -> None:
        """Drop ``offer`` and close its dialog (its state was restored another way, e.g. by the Cases dock)."""
        self.offers = [o for o in self.offers if o is not offer]
        self._close_dialog(offer)

    def _close_dialog(self, offer: RestoreOffer) -> None:
        for entry in [e for e in self._dialogs if e[0] is offer]:
            self._dialogs.remove(entry)
            entry[1].close()

    # -------------------------------------------------------------- helpers
    def _image_hash(self, image) -> str | None:
        """Voxel hash of a 3D (or whole 4D) grey-value image layer (cached per layer); None otherwise.

        Opened through the plugin or added by a script (``viewer.add_image(array)``): both
        can be segmented and painted on, so both are autosaved.  RGB, multiscale and the
        plugin's uncertainty layers are not volumes to segment."""
        from napari_medseg.hashing import voxel_hash

        uid = str(image.unique_id)
        if uid not in self._hashes:
            meta = image.metadata.get("medseg") or {}
            if image.multiscale or image.rgb or image.data.ndim not in (3, 4) or "uncertainty" in meta:
                return None
            self._hashes[uid] = voxel_hash(np.asarray(image.data))
        return self._hashes[uid]

    @staticmethod
    def _fingerprint(layer) -> tuple:
        reviewed = () if is_scribble_name(layer.name) else tuple(_ledger_sync.ledger_for(layer).reviewed)
        return zlib.adler32(np.ascontiguousarray(layer.data).data), reviewed

    def _warn(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        self.last_error = message
        show_warning(message)


def _restored_name(extra: dict, image_name: str) -> str:
    """The autosaved layer's name; ``"<image> labels"`` and ``"<image> scribbles"`` follow the image's name now
    (the file may be another copy)."""
    saved, old_image = extra.get("layer_name"), extra.get("image_name")
    if not saved or (old_image and saved == labels_name(old_image)):
        return labels_name(image_name)
    if old_image and saved == scribble_layer_name(old_image):
        return scribble_layer_name(image_name)
    return str(saved)


def _no_corrections_state(strokes: np.ndarray) -> dict:
    """The ledger state (:meth:`SliceLedger.to_state`) saved with a scribble layer: strokes are not corrections,
    so every slice counts as model output and none is edited or locked.  ``strokes`` is the save's own
    snapshot, used as it is: no volume is copied on the GUI thread (the writer rebuilds the ledger)."""
    depth = strokes.shape[0]
    return {"model_output": strokes, "has_prediction": np.ones(depth, bool), "reviewed": np.zeros(depth, bool)}


def _slices_kind(layer_name: str) -> str:
    """What the slices counted in a restore offer are."""
    return "slice(s) with strokes" if is_scribble_name(layer_name) else "corrected or reviewed slice(s)"


def _local(stamp: str) -> str:
    """An ISO UTC time stamp as local time for people: ``2026-11-23 17:40:02 CET``."""
    return recovery.parse_time(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()
