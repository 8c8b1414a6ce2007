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
    return vol.array, kwargs, "image"


def read_layers(path) -> list[tuple]:
    """Read one path (file or DICOM folder) into a list with one layer tuple."""
    from .io import read_volume

    return [volume_layer_data(read_volume(path))]


def _read_paths(paths) -> list[tuple]:
    layers = []
    for p in paths:
        layers.extend(read_layers(p))
    return layers


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
