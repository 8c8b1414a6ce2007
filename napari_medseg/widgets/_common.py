"""Small helpers shared by the dock widgets."""

from __future__ import annotations

import numpy as np


def labels_name(image_name: str) -> str:
    """Name of the Labels layer that belongs to an image layer."""
    return f"{image_name} labels"


SCRIBBLES_SUFFIX = " scribbles"
UNCERTAINTY_SUFFIX = " uncertainty"


def uncertainty_layer_name(image_name: str) -> str:
    """Name of the Segment dock's heat-map layer (per-voxel uncertainty) of an image layer."""
    return f"{image_name}{UNCERTAINTY_SUFFIX}"


def is_uncertainty_name(name: str) -> bool:
    """Whether a layer of this name is such a heat map (``"<image> uncertainty"``)."""
    return name.endswith(UNCERTAINTY_SUFFIX)


def scribble_layer_name(image_name: str) -> str:
    """Name of the scribble layer (the Retrain dock's strokes) that belongs to an image layer."""
    return f"{image_name}{SCRIBBLES_SUFFIX}"


def is_scribble_name(name: str) -> bool:
    """Whether a layer of this name is a scribble layer (``"<image> scribbles"``, maybe ``" (recovered)"``)."""
    return name.removesuffix(" (recovered)").endswith(SCRIBBLES_SUFFIX)


def current_volume(viewer, image) -> tuple[np.ndarray, int | None]:
    """The image layer's ``(z, y, x)`` data; for a 4D layer the frame on screen.

    Returns ``(array, t)`` with ``t`` the time index, or ``None`` for 3D images.
    """
    data = image.data[0] if image.multiscale else image.data
    if data.ndim != 4:
        return np.asarray(data), None
    t = int(viewer.dims.current_step[viewer.dims.ndim - 4])  # the layer's time axis
    return np.asarray(data[t]), t


def go_to_slice(viewer, layer, z: int) -> None:
    """Move the viewer to axial slice ``z`` of ``layer`` (its first data axis), in world coordinates."""
    world = layer.data_to_world([z] + [0] * (layer.ndim - 1))
    viewer.dims.set_point(viewer.dims.ndim - layer.ndim, world[0])


def show_organ(viewer, layer, value: int, z: int) -> bool:
    """Go to slice ``z`` of the labels ``layer``, make it active and ``value`` its paint label (an organ
    to check and correct).  False when ``z`` is outside the layer."""
    if layer is None or not 0 <= z < layer.data.shape[0]:
        return False
    go_to_slice(viewer, layer, z)
    layer.selected_label = value
    viewer.layers.selection.active = layer
    return True


def known_spacing(image) -> tuple[float, float, float] | None:
    """``(sz, sy, sx)`` mm of an image layer, or None when unknown.

    A layer without medseg geometry and with unit in-plane scale has no known voxel
    size: a ``"spacing"``-policy model then refuses it instead of assuming 1 mm pixels.
    """
    spacing = tuple(float(s) for s in image.scale[-3:])
    known = "geometry" in image.metadata.get("medseg", {}) or spacing[-2:] != (1.0, 1.0)
    return spacing if known else None


def aligned_labels_kwargs(image, labels: np.ndarray, label_set, name: str | None = None) -> dict:
    """kwargs for ``viewer.add_labels(labels, ...)``: ``(z, y, x)`` labels on the image layer's grid.

    :func:`napari_medseg.io.layers.labels_layer_kwargs` for the image's geometry (scale,
    translate, the label set's colours and hover names, ``medseg`` metadata), with the image's
    modality.  An image without medseg geometry gives labels without it, so saving them warns
    as saving the image would.
    """
    from napari_medseg.io.layers import labels_layer_kwargs, layer_geometry

    geometry, known = layer_geometry(image.metadata, image.data.shape, image.scale, image.translate)
    kwargs = labels_layer_kwargs(labels, geometry, label_set, name or labels_name(image.name))
    meta = kwargs["metadata"]["medseg"]
    meta["modality"] = image.metadata.get("medseg", {}).get("modality")
    if not known:
        del meta["geometry"]
    return kwargs
