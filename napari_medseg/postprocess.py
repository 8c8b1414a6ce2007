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
    """Keep the largest 3D component of each organ value of a ``(z, y, x)`` integer volume.

    Components are 26-connected (the slice gap of a thick-slice CT still joins an organ
    across slices).  A component with a voxel on a ``protected`` slice (indices along
    axis 0, e.g. the user's corrected ones) is also kept.  Returns the new labels
    (a copy) and, per organ value, the number of voxels set to background.

    Cost: one pass over the volume, then work in the number of organ voxels (a
    512 x 512 x 600 CT takes about a second, not a label pass per organ).
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected (z, y, x) labels, got shape {labels.shape}")
    out = labels.copy()
    protected_mask = np.zeros(labels.shape[0], bool)
    protected_mask[[int(z) for z in protected if 0 <= int(z) < labels.shape[0]]] = True
    coords = np.nonzero(labels)  # every organ voxel, once
    values = labels[coords]
    order = np.argsort(values, kind="stable")
    values = values[order]
    coords = tuple(c[order] for c in coords)
    removed: dict[int, int] = {}
    for value in organs:
        lo, hi = np.searchsorted(values, [value, value + 1])
        if hi - lo < 2:
            continue
        zyx = tuple(c[lo:hi] for c in coords)
        comp = _components(zyx)
        n = int(comp.max())
        if n <= 1:
            continue
        keep = np.zeros(n + 1, bool)
        keep[int(np.argmax(np.bincount(comp, minlength=n + 1)[1:])) + 1] = True
        keep[comp[protected_mask[zyx[0]]]] = True
        drop = ~keep[comp]
        out[tuple(c[drop] for c in zyx)] = 0
        removed[int(value)] = int(drop.sum())
    return out, removed


def _components(zyx: tuple[np.ndarray, ...]) -> np.ndarray:
    """26-connected component id (1..n) of each voxel given by coordinate arrays ``(z, y, x)``.

    The voxels are labelled on a compressed grid: along each axis, planes holding no voxel
    are dropped except one per gap, which keeps separated pieces separated.  The grid is
    then about the size of the organ, not of the volume.
    """
    from scipy import ndimage

    squeezed = []
    for c in zyx:
        occupied = np.unique(c)
        position = np.arange(len(occupied)) + np.cumsum(np.r_[0, np.diff(occupied) > 1])
        squeezed.append(position[np.searchsorted(occupied, c)])
    grid = np.zeros([int(s.max()) + 1 for s in squeezed], bool)
    grid[tuple(squeezed)] = True
    comp, _ = ndimage.label(grid, structure=np.ones((3, 3, 3), bool))
    return comp[tuple(squeezed)]
