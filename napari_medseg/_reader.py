"""napari reader: NIfTI, DICOM series folders, NRRD, MHA/MHD -> aligned layers.

``napari_get_reader`` only looks at names and magic bytes and never raises;
the function it returns raises :class:`napari_medseg.io.VolumeReadError`
(a ``ValueError`` with a plain reason) for files it cannot read.
"""

from __future__ import annotations

from pathlib import Path


def volume_layer_data(vol) -> tuple:
    """``(data, kwargs, layer_type)`` for a :class:`~napari_medseg.io.Volume`."""
    from napari.utils.colormaps import DirectLabelColormap

    from .io import layer_kwargs

    kwargs = layer_kwargs(vol)
    if vol.is_labels:
        kwargs["colormap"] = DirectLabelColormap(color_dict=kwargs["colormap"])
        return vol.array, kwargs, "labels"
    offer_restore_later()
    return vol.array, kwargs, "image"


def offer_restore_later() -> None:
    """Attach the autosaver to the viewer the image goes into, so it offers *Restore* with no dock open.

    Only in napari's GUI thread with a viewer open.  Once the layer is in
    (``QTimer.singleShot``), it attaches to every open viewer holding a layer
    opened through the plugin (attaching twice is a no-op).  Costs nothing
    here (the autosaver hashes the image when it sees the layer).
    """
    try:
        import napari
        from qtpy.QtCore import QThread, QTimer
        from qtpy.QtWidgets import QApplication
    except ImportError:  # no Qt binding: nothing to offer in
        return
    app = QApplication.instance()
    if app is None or QThread.currentThread() is not app.thread() or napari.current_viewer() is None:
        return

    def attach():
        from .widgets import _autosave

        viewers = list(getattr(napari.Viewer, "_instances", ())) or [napari.current_viewer()]  # all open viewers
        for viewer in viewers:
            if viewer is not None and any("geometry" in layer.metadata.get("medseg", {}) for layer in viewer.layers):
                _autosave.attach(viewer)

    QTimer.singleShot(0, attach)


def read_layers(path) -> list[tuple]:
    """Read one path (file or DICOM folder) into a list with one layer tuple.

    A DICOM folder with several series opens a chooser when napari's window is
    shown (cancel returns napari's "no layers" sentinel ``[(None,)]``); hidden or
    headless, the largest opens with a warning.
    """
    from .io import detect_format, read_volume

    series_uid = None
    if detect_format(path) == "dicom":
        from .io import list_dicom_series
        from .widgets import series_chooser

        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        series = list_dicom_series(folder)
        if len(series) > 1 and series_chooser.can_ask():
            chosen = series_chooser.choose_series(folder, series)
            if chosen is None:
                return [(None,)]
            series_uid = chosen.uid
    return [volume_layer_data(read_volume(path, series_uid=series_uid))]


def _read_paths(paths) -> list[tuple]:
    layers = []
    for p in paths:
        layers.extend(layer for layer in read_layers(p) if layer[0] is not None)  # skip cancelled choices
    return layers or [(None,)]


def napari_get_reader(path):
    """The reader function for ``path`` (str, Path or list of them), or None."""
    try:
        from .io import detect_format

        paths = [path] if isinstance(path, (str, Path)) else list(path)
        if not paths or any(detect_format(p) is None for p in paths):
            return None
        return read_layers if len(paths) == 1 and isinstance(path, (str, Path)) else lambda _: _read_paths(paths)
    except Exception:  # a reader probe must never break napari
        return None
