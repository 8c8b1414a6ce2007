"""napari writer: a Labels layer -> NIfTI, Slicer ``.seg.nrrd`` or DICOM-SEG in its source image's exact geometry."""

from __future__ import annotations

import warnings

import numpy as np


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer.

    Uses ``attributes["metadata"]["medseg"]["geometry"]`` (set by the reader,
    the sample data and the segment widget).  A Labels layer without it is
    written in an LPS-canonical geometry built from its ``scale``/``translate``,
    with a warning.
    """
    from .io import VolumeWarning, layer_geometry, write_labels as write_nifti_labels
    from .labels import LabelSet

    meta = (attributes.get("metadata") or {}).get("medseg") or {}
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise ValueError(
            f"napari-medseg saves 3D label volumes; this layer has shape {data.shape}"
            + (" (a 4D layer: save one frame as its own layer)" if data.ndim == 4 else "")
        )
    geometry, from_metadata = layer_geometry(
        attributes.get("metadata"), data.shape, attributes.get("scale", (1, 1, 1)), attributes.get("translate", (0, 0, 0))
    )
    if not from_metadata:
        warnings.warn(
            f"layer {attributes.get('name', '')!r} carries no source geometry (it was not opened or created "
            "by napari-medseg); saving it with its scale/translate as LPS (S, P, L) millimetres",
            VolumeWarning,
            stacklevel=2,
        )
    label_set = LabelSet.from_dict(meta["label_set"]) if meta.get("label_set") else None
    algorithm = None
    if str(path).lower().endswith(".dcm"):
        from .io.dicom_seg import Algorithm

        algorithm = Algorithm.from_checkpoint_paths(meta.get("checkpoints") or [])
    return [str(write_nifti_labels(data, path, geometry, label_set, algorithm=algorithm))]
