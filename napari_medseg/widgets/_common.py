"""Small helpers shared by the dock widgets."""

from __future__ import annotations

import numpy as np


def labels_name(image_name: str) -> str:
    """Name of the Labels layer that belongs to an image layer."""
    return f"{image_name} labels"


def current_volume(viewer, image) -> tuple[np.ndarray, int | None]:
    """The image layer's ``(z, y, x)`` data; for a 4D layer the frame on screen.

    Returns ``(array, t)`` with ``t`` the time index, or ``None`` for 3D images.
    """
    data = image.data[0] if image.multiscale else image.data
    if data.ndim != 4:
        return np.asarray(data), None
    t = int(viewer.dims.current_step[viewer.dims.ndim - 4])  # the layer's time axis
    return np.asarray(data[t]), t


def known_spacing(image) -> tuple[float, float, float] | None:
    """``(sz, sy, sx)`` mm of an image layer, or None when unknown.

    A layer without medseg geometry and with unit in-plane scale has no known voxel
    size: a ``"spacing"``-policy model then refuses it instead of assuming 1 mm pixels.
    """
    spacing = tuple(float(s) for s in image.scale[-3:])
    known = "geometry" in image.metadata.get("medseg", {}) or spacing[-2:] != (1.0, 1.0)
    return spacing if known else None
