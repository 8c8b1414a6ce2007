"""Volume I/O in one canonical orientation (see docs/architecture.md).

Arrays are ``(z, y, x)`` (z -> superior, y -> posterior, x -> patient left),
or ``(t, z, y, x)`` for 4D cine; napari world coordinates are LPS millimetres
in ``(S, P, L)`` order.  No napari or Qt import here.
"""

from .dicom import DicomSeries, list_dicom_series
from .geometry import Geometry
from .layers import display_contrast, labels_layer_kwargs, layer_geometry, layer_kwargs, medseg_metadata
from .read import detect_format, looks_like_labels, read_volume, sidecar_path
from .volume import Volume, VolumeReadError, VolumeWarning
from .writer import write_labels

__all__ = [
    "DicomSeries",
    "Geometry",
    "Volume",
    "VolumeReadError",
    "VolumeWarning",
    "detect_format",
    "display_contrast",
    "labels_layer_kwargs",
    "layer_geometry",
    "layer_kwargs",
    "list_dicom_series",
    "looks_like_labels",
    "medseg_metadata",
    "read_volume",
    "sidecar_path",
    "write_labels",
]
