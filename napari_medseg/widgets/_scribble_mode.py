"""Scribble mode of the Retrain dock: the scribble layer, its training labels, and fill-from-scribbles.

A scribble layer is a Labels layer on the image's grid named ``"<image> scribbles"``:
``0`` nothing painted, ``1..K`` organ strokes, ``K+1`` background strokes
(see :mod:`napari_medseg.scribbles`).  Fine-tuning reads it as partial labels
(``255`` = not labelled), so a scribbled slice teaches the model without being locked.
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_medseg.labels import LabelSet
from napari_medseg.scribbles import UNLABELLED, ScribbleWarning, scribble_label_set, scribbles_to_partial
from napari_medseg.widgets._common import is_scribble_name, scribble_layer_name

MODE_HELP = ("Full: edited or reviewed slices are truth and get locked. "
             "Scribbles: strokes teach the model, which fills the rest of the slice (locked only once reviewed).")


def is_scribble_layer(layer) -> bool:
    return is_scribble_name(layer.name)


def add_scribble_layer(viewer, image, label_set: LabelSet, data: np.ndarray | None = None):
    """A scribble Labels layer aligned with ``image`` (or the existing one), selected for painting.

    ``data``: strokes to start from (uint8 ``(z, y, x)`` on the image's grid, e.g. a saved case's);
    default empty.  An existing layer of that name is returned as it is, never overwritten."""
    from napari_medseg.widgets._common import aligned_labels_kwargs

    name = scribble_layer_name(image.name)
    if name in viewer.layers:
        return viewer.layers[name]
    shape = tuple(image.data.shape[-3:])
    strokes = np.zeros(shape, np.uint8) if data is None else np.array(data, dtype=np.uint8)
    if strokes.shape != shape:
        raise ValueError(f"scribbles {strokes.shape} do not match image \u201c{image.name}\u201d {shape}")
    layer = viewer.add_labels(strokes, **aligned_labels_kwargs(image, strokes, scribble_label_set(label_set), name))
    layer.opacity = 0.9
    layer.brush_size = 3
    layer.selected_label = 1
    layer.mode = "paint"
    return layer


def check_aligned(scribbles, image) -> None:
    """One-line ``ValueError`` unless the scribble layer lies on the image's voxel grid."""
    s_shape, i_shape = tuple(scribbles.data.shape), tuple(image.data.shape[-3:])
    same_grid = (s_shape == i_shape and np.allclose(scribbles.scale[-3:], image.scale[-3:])
                 and np.allclose(scribbles.translate[-3:], image.translate[-3:]))
    if not same_grid:
        raise ValueError(f"scribble layer \u201c{scribbles.name}\u201d {s_shape} is not aligned with image "
                         f"\u201c{image.name}\u201d {i_shape}; delete it and press \u201cScribble mode\u201d again")


def training_labels(labels: np.ndarray, locked, scribbles: np.ndarray | None, num_organs: int):
    """Labels for ``retrain_volume``: full slices as they are, scribbled slices as partial labels.

    Args:
        labels: ``(z, y, x)`` uint8 labels layer data (0..K).
        locked: edited/reviewed slice indices (full corrections; they win over scribbles).
        scribbles: ``(z, y, x)`` scribble layer data or None.
        num_organs: K.

    Returns ``(array, slices, scribbled)``: uint8 ``(z, y, x)`` where scribbled
    slices hold ``255`` wherever nobody painted, the sorted slices to train on,
    and the scribbled (unlocked) ones.  Warns (:class:`ScribbleWarning`) when
    the scribbles have no background stroke.
    """
    array = np.array(labels, dtype=np.uint8)
    locked = sorted({int(z) for z in locked})
    if scribbles is None:
        return array, locked, []
    partial = scribbles_to_partial(scribbles, num_organs, image_shape=array.shape)
    painted = np.flatnonzero((partial != UNLABELLED).reshape(partial.shape[0], -1).any(axis=1))
    scribbled = [int(z) for z in painted if int(z) not in set(locked)]
    if scribbled and not (partial[scribbled] == 0).any():
        warnings.warn("the scribbles have no background stroke: the model cannot learn what is not an organ; "
                      "paint some with \u201cbackground (scribble)\u201d", ScribbleWarning, stacklevel=2)
    array[scribbled] = partial[scribbled]
    return array, sorted(locked + scribbled), scribbled


def fill_slice(image_slice: np.ndarray, scribble_slice: np.ndarray, num_organs: int, *,
               probabilities: np.ndarray | None = None, value_range=None, modality: str | None = None) -> np.ndarray:
    """Full ``(y, x)`` uint8 labelling (0..K) of one slice grown from its scribbles (seeded watershed)."""
    from napari_medseg.scribbles import fill_from_scribbles

    partial = scribbles_to_partial(scribble_slice, num_organs)
    return fill_from_scribbles(np.asarray(image_slice), partial, modality=modality, probabilities=probabilities,
                               value_range=value_range)


def slice_probabilities(model, info, image_slice: np.ndarray, device: str = "cpu", value_range=None,
                        spacing=None) -> np.ndarray:
    """The model's softmax ``(K+1, y, x)`` float32 for one raw slice (guides the fill).

    ``value_range``: the volume's raw ``(low, high)`` for MR (see ``preprocess.intensity_range``);
    ``spacing``: the slice's in-plane ``(sy, sx)`` mm (needed by ``"spacing"``-policy checkpoints).
    """
    from napari_medseg.inference import _predict_probs  # the one place that maps a slice to model probabilities

    from napari_medseg.models.modes import evaluating

    with evaluating(model):
        probs = _predict_probs([(model, info)], np.asarray(image_slice)[None], [value_range], device, "fp32", False, False,
                               spacing=spacing)
    return probs[0].cpu().numpy()
