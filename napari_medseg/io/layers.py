"""napari layer keyword arguments for a :class:`Volume` (no napari import here).

Readers, the sample data and widgets all build layers through
:func:`layer_kwargs`, so every layer carries the same metadata and lines up in
world ``(S, P, L)`` mm.
"""

from __future__ import annotations

import numpy as np

from ..labels import LabelSet
from .geometry import Geometry
from .volume import Volume

CT_DISPLAY_WINDOW = (-160.0, 240.0)  # soft tissue: W400 / L40 (HU)
MR_DISPLAY_PERCENTILES = (1.0, 99.0)
LABELS_OPACITY = 0.6


def display_contrast(array: np.ndarray, modality: str | None) -> tuple[float, float]:
    """Contrast limits: CT soft-tissue window, else 1st-99th percentiles of finite voxels."""
    if modality == "ct":
        return CT_DISPLAY_WINDOW
    flat = np.asarray(array).reshape(-1)
    sample = flat[:: max(1, flat.size // 2_000_000)]
    sample = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) else sample
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, MR_DISPLAY_PERCENTILES)
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def medseg_metadata(geometry: Geometry, *, modality=None, label_set: LabelSet | None = None, **extra) -> dict:
    """The ``layer.metadata["medseg"]`` dict."""
    meta = {"geometry": geometry.to_dict(), "modality": modality, "source_path": geometry.source_path}
    if label_set is not None:
        meta["label_set"] = label_set.to_dict()
    meta.update(extra)
    return meta


def labels_display_kwargs(label_set: LabelSet) -> dict:
    """``colormap`` (a dict napari turns into a ``DirectLabelColormap``) and
    ``features`` with a ``name`` column, so hovering shows the organ name."""
    values = sorted(label_set.names)
    return {
        "colormap": label_set.color_dict(),
        "features": {"index": np.asarray(values), "name": [label_set.names[v] for v in values]},
        "opacity": LABELS_OPACITY,
    }


def geometry_kwargs(geometry: Geometry, time_axis: bool = False) -> dict:
    """``scale`` and ``translate`` (de-obliqued) for a canonical array; time gets scale 1."""
    scale, translate = list(geometry.spacing), list(geometry.origin)
    if time_axis:
        scale, translate = [1.0] + scale, [0.0] + translate
    return {"scale": tuple(scale), "translate": tuple(translate)}


def layer_kwargs(vol: Volume) -> dict:
    """kwargs for ``viewer.add_image`` / ``add_labels`` (or a reader's layer tuple).

    Returns ``name``, ``scale``, ``translate``, ``metadata`` and, for images,
    ``contrast_limits`` / ``colormap``; for labels, ``colormap``, ``features``
    and ``opacity``.  The layer type is ``"labels" if vol.is_labels else "image"``.
    """
    kwargs = {"name": vol.name, **geometry_kwargs(vol.geometry, vol.is_4d)}
    extra = {"time_axis": True, "time_spacing": vol.time_spacing} if vol.is_4d else {}
    if vol.is_labels:
        label_set = vol.label_set or LabelSet.numbered(vol.array.max())
        kwargs["metadata"] = {"medseg": medseg_metadata(vol.geometry, label_set=label_set, **extra)}
        kwargs.update(labels_display_kwargs(label_set))
    else:
        kwargs["metadata"] = {"medseg": medseg_metadata(vol.geometry, modality=vol.modality, **extra)}
        kwargs["contrast_limits"] = display_contrast(vol.array, vol.modality)
        kwargs["colormap"] = "gray"
    return kwargs


def layer_geometry(metadata, shape, scale, translate) -> tuple[Geometry, bool]:
    """Geometry of a napari layer from its attributes (no napari import).

    Returns ``(geometry, from_metadata)``: the medseg geometry when
    ``metadata["medseg"]["geometry"]`` exists, else an LPS-canonical one built
    from the last three axes of ``shape``/``scale``/``translate`` (False).
    """
    data = ((metadata or {}).get("medseg") or {}).get("geometry")
    if data:
        return Geometry.from_dict(data), True
    return Geometry.from_layer(tuple(shape)[-3:], tuple(scale)[-3:], tuple(translate)[-3:]), False


def labels_layer_kwargs(labels: np.ndarray, like: Geometry, label_set: LabelSet, name: str = "labels") -> dict:
    """kwargs for a new Labels layer drawn on an image of geometry ``like`` (e.g. a model's output)."""
    if tuple(labels.shape[-3:]) != like.shape:
        raise ValueError(f"labels shape {labels.shape} does not match the image's {like.shape}")
    kwargs = {"name": name, **geometry_kwargs(like, labels.ndim == 4)}
    kwargs["metadata"] = {"medseg": medseg_metadata(like, label_set=label_set)}
    kwargs.update(labels_display_kwargs(label_set))
    return kwargs
