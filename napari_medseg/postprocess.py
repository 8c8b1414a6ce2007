"""Post-processing of a predicted label volume: one connected piece per organ.

A 2D slice-wise model has no 3D context, so it leaves small islands far from
the organ (a "spleen" in the arm, an "aorta" in the table).  Each organ of the
built-in label sets is one connected structure in 3D, so everything but the
largest 3D component of each organ is set to background, as nnU-Net's
post-processing does when it helps on validation.  Measured in
``bench/postprocess.py`` (docs/inference.md).

Voxels the user made are never changed: a component that touches a
``protected`` slice is kept whole, and protected slices are never edited.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def one_piece_organs(label_set) -> tuple[int, ...]:
    """Organ values that are one connected structure: all organs of a built-in label set
    (Synapse's 8 abdominal organs, ACDC's cardiac structures), none of an embedded or custom one
    (its names promise nothing: "ribs", "lymph nodes")."""
    from napari_medseg.labels import BUILTIN

    builtin = BUILTIN.get(label_set.name)
    if builtin is None or builtin.names != label_set.names:
        return ()
    return tuple(label_set.organs)


def largest_component_only(labels: np.ndarray, organs: Iterable[int], *,
                           protected: Iterable[int] = ()) -> tuple[np.ndarray, dict[int, int]]:
    """Keep the largest 3D component of each organ value of a ``(z, y, x)`` uint8 volume.

    Components are 26-connected (the slice gap of a thick-slice CT still joins an organ
    across slices).  A component with a voxel on a ``protected`` slice (indices along
    axis 0, e.g. the user's corrected ones) is also kept.  Returns the new labels
    (a copy) and, per organ value, the number of voxels set to background.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected (z, y, x) labels, got shape {labels.shape}")
    out = labels.copy()
    protected = sorted({int(z) for z in protected if 0 <= int(z) < labels.shape[0]})
    structure = np.ones((3, 3, 3), bool)
    removed: dict[int, int] = {}
    for value in organs:
        mask = labels == value
        box = ndimage.find_objects(mask.astype(np.uint8))
        if not box or box[0] is None:
            continue
        box = box[0]
        comp, n = ndimage.label(mask[box], structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        keep = np.zeros(n + 1, bool)
        keep[int(np.argmax(sizes))] = True
        z0 = box[0].start
        local = [z - z0 for z in protected if box[0].start <= z < box[0].stop]
        if local:
            keep[np.unique(comp[local])] = True
            keep[0] = False
        drop = ~keep[comp] & (comp > 0)
        region = out[box]
        region[drop] = 0
        removed[int(value)] = int(drop.sum())
    return out, removed
