"""How the Cases dock meets the viewer and the other docks: case layers, the Segment and Retrain docks, the autosave.

The docks hold napari's proxies of layers, so layers are compared by ``unique_id`` (:func:`same`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QWidget

from napari_medseg.widgets import _ledger_sync
from napari_medseg.widgets._common import labels_name

RETRAIN = "Correct and retrain"


def same(a, b) -> bool:
    """Whether two layers (or their proxies) are the same layer."""
    return a is not None and b is not None and a.unique_id == b.unique_id


def find_dock(viewer, kind):
    """The open dock widget of class ``kind`` in the viewer's window, or None."""
    window = getattr(getattr(getattr(viewer, "__wrapped__", viewer), "window", None), "_qt_window", None)
    found = [w for w in window.findChildren(QWidget) if isinstance(w, kind)] if window is not None else []
    return found[0] if found else None


def segment_choice(viewer) -> Path | None:
    """The checkpoint chosen in the open Segment dock (its selected row, else its first), or None."""
    from qtpy.QtCore import Qt

    from napari_medseg.widgets.segment import SegmentWidget

    dock = find_dock(viewer, SegmentWidget)
    item = (dock.ckpt_list.currentItem() or dock.ckpt_list.item(0)) if dock is not None else None
    return Path(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None


def retrain_dock(viewer, open_it: bool = True):
    """The "Correct and retrain" dock; opened through the manifest when ``open_it`` and not open yet."""
    from napari_medseg.widgets.retrain import RetrainWidget

    dock = find_dock(viewer, RetrainWidget)
    if dock is None and open_it:
        dock = viewer.window.add_plugin_dock_widget("napari-medseg", RETRAIN)[1]
        share_segment_tab(viewer, dock)
    return dock


#: Height share of the window the Retrain dock gets when the Cases dock opens it beside the Segment dock.
RETRAIN_HEIGHT_SHARE = 0.55


def share_segment_tab(viewer, retrain) -> bool:
    """Put a newly opened Retrain dock in a tab beside the Segment dock, in front (False when no Segment dock).

    With the Segment, Cases and Retrain docks stacked in one column, the Retrain dock (the one a case is
    corrected in) was squeezed to its first two rows on a 1000-px screen. The Cases dock segments each case
    itself, so the Segment dock can wait behind a tab.
    """
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QDockWidget, QSizePolicy

    from napari_medseg.widgets.segment import SegmentWidget

    def frame(widget):
        while widget is not None and not isinstance(widget, QDockWidget):
            widget = widget.parentWidget()
        return widget

    segment_widget = find_dock(viewer, SegmentWidget)
    segment, mine = frame(segment_widget), frame(retrain)
    window = getattr(getattr(getattr(viewer, "__wrapped__", viewer), "window", None), "_qt_window", None)
    if segment is None or mine is None or window is None or segment.isFloating() or not segment.isVisible():
        return False
    window.tabifyDockWidget(segment, mine)
    # the Segment dock asks to be no taller than its contents (QSizePolicy.Maximum); in one tab with the
    # Retrain dock that cap would bound the Retrain dock too
    segment_widget.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    mine.show()
    mine.raise_()
    # the Cases dock's table has room to spare; the dock the case is corrected in gets the larger share
    from napari_medseg.widgets.cases import CasesWidget

    cases = frame(find_dock(viewer, CasesWidget))
    if cases is not None and not cases.isFloating() and window.dockWidgetArea(cases) == window.dockWidgetArea(mine):
        share = int(RETRAIN_HEIGHT_SHARE * window.height())
        QTimer.singleShot(0, lambda: window.resizeDocks([mine, cases], [share, window.height() - share],
                                                        Qt.Orientation.Vertical))  # once the tab is laid out
    return True


def add_case_layers(viewer, case, label_set_name: str = "synapse") -> tuple:
    """``(image, labels)`` layers of an :class:`~napari_medseg.worklist.OpenedCase`, the ledger attached.

    The image goes through the plugin's reader code (same geometry as File > Open); an empty
    case gets empty labels of ``label_set_name``.
    """
    from napari_medseg._reader import volume_layer_data
    from napari_medseg.io.layers import labels_layer_kwargs
    from napari_medseg.labels import LabelSet, get_label_set

    data, kwargs, _ = volume_layer_data(case.volume)
    image = viewer.add_image(data, **kwargs)
    label_set = LabelSet.from_dict(case.label_set) if case.label_set else get_label_set(label_set_name)
    labels = case.labels if case.labels is not None else np.zeros(case.volume.array.shape, np.uint8)
    kwargs = labels_layer_kwargs(labels, case.volume.geometry, label_set, labels_name(image.name))
    kwargs["metadata"]["medseg"]["checkpoints"] = [case.checkpoint] if case.checkpoint else list(case.extra.get("checkpoints") or [])
    if case.ledger is not None:
        kwargs["metadata"][_ledger_sync.KEY] = case.ledger  # in place before the Retrain dock sees the layer
    layer = viewer.add_labels(labels, **kwargs)
    if case.ledger is not None:
        layer.metadata[_ledger_sync.KEY] = case.ledger
    _ledger_sync.refresh(layer)
    return image, layer


def add_case_scribbles(viewer, image, labels, scribbles):
    """The case's saved scribble layer (``"<image> scribbles"``) on ``image``, or None when it has no strokes."""
    from napari_medseg.labels import get_label_set
    from napari_medseg.widgets._scribble_mode import add_scribble_layer
    from napari_medseg.widgets.legend import layer_label_set

    if scribbles is None or not np.any(scribbles):
        return None
    label_set = layer_label_set(labels) or get_label_set("synapse")
    layer = add_scribble_layer(viewer, image, label_set, data=scribbles)
    layer.mode = "pan_zoom"  # restored, not being painted: no stroke by accident on the first click
    return layer


def case_scribble_layer(viewer, image):
    """The scribble layer that belongs to the case's ``image`` (same name stem and grid), or None."""
    from napari.layers import Labels

    from napari_medseg.widgets._common import scribble_layer_name

    name = scribble_layer_name(image.name)
    layer = viewer.layers[name] if name in viewer.layers else None
    if isinstance(layer, Labels) and tuple(layer.data.shape) == tuple(image.data.shape[-3:]):
        return layer
    return None


PROJECT_STORE = "corrections"  # <project>/corrections: the corrections store the project's cases share


def point_retrain(dock, image, labels, project=None) -> None:
    """Point the Retrain dock at the case's layers, starting from the checkpoint its labels came from
    (from scratch, the first family, when no checkpoint made them).

    With ``project``, a dock still on the default store switches to ``<project>/corrections``, so
    fine-tuning on one case replays the corrections of the project's earlier cases (a store the
    user chose is kept).
    """
    if project is not None and dock.store_row.root is None:
        dock.store_row.choose(str(Path(project) / PROJECT_STORE))
    dock.image_combo.setCurrentText(image.name)
    dock.labels_combo.setCurrentText(labels.name)
    start = (labels.metadata.get("medseg", {}).get("checkpoints") or [None])[0]
    if not start:  # labels no model made (no checkpoint of the scan's modality yet): a new model, not the last case's
        start = next(iter(dock.scratch))
    if dock.start_combo.findText(start) < 0:
        dock.start_combo.insertItem(0, start)
    dock.start_combo.setCurrentText(start)


def drop_same_autosave(viewer, image, case) -> None:
    """Withdraw the autosave's restore offer for ``image`` when the recovery copy is the state just restored."""
    from napari_medseg.casestate import CaseStateError, load_case
    from napari_medseg.widgets import _autosave
    from napari_medseg.widgets._common import is_scribble_name

    saver = _autosave.attach(viewer)
    state = case.ledger.to_state()
    for offer in [o for o in saver.offers if o.image_id == str(image.unique_id)]:
        try:
            recovered = load_case(offer.folder)
        except CaseStateError:
            continue  # the autosave warns about it itself
        if is_scribble_name(offer.layer_name):  # the autosave of the case's strokes (none saved: all zero)
            same_state = (np.array_equal(recovered.labels, case.scribbles) if case.scribbles is not None
                          else not recovered.labels.any())
        else:
            same_state = np.array_equal(recovered.labels, case.labels) and all(
                np.array_equal(v, state[k]) for k, v in recovered.ledger.to_state().items())
        if same_state:
            saver.withdraw(offer)
