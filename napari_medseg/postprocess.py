"""Post-processing of a predicted label volume: one connected piece per organ.

A 2D slice-wise model has no 3D context, so it leaves small islands far from
the organ (a "spleen" in the arm, an "aorta" in the table).  Each organ of the
built-in label sets is one connected structure in 3D, so everything but the
largest 3D component of each organ is set to background, as nnU-Net's
post-processing does when it helps on validation.  Measured in
``bench/postprocess.py`` (docs/inference.md).

For CT, organ voxels outside the trunk are set to background first
(:func:`trunk_mask`): an organ piece in an arm can be the largest piece when
the model missed the organ in the trunk, and would otherwise be the one kept.

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


#: A body piece on a slice counts as trunk (or a leg) when it has at least this share of the
#: slice's largest piece; arms beside an abdomen measured 4-7 % of it on the real DICOM series.
TRUNK_SHARE = 1 / 3
#: Depth (mm) of the erosion that splits a slice's body into cores: the trunk, each arm, each leg.
#: An arm resting against the trunk touches it through a bridge of skin and fat; the erosion cuts
#: bridges up to twice this wide and keeps the core of any limb more than twice as thick (an adult's
#: arm is 60-100 mm across, a child's 40 mm).  On the real DICOM series (0.98 mm) the right arm stayed
#: joined after an opening of 2-20 mm (the dilation back re-joins cores less than twice the radius
#: apart), while the erosion split it off from 5 mm up on every slice.
TRUNK_EROSION_MM = 8.0


def trunk_mask(ct: np.ndarray, spacing=None) -> np.ndarray | None:
    """``(z, y, x)`` bool: per slice, the body's large pieces above the body threshold (HU), holes filled.

    Per slice, the body (above the threshold) is eroded by :data:`TRUNK_EROSION_MM` into cores,
    and every body pixel belongs to its nearest core.  A core is kept when it has at least
    :data:`TRUNK_SHARE` of the slice's largest one: the trunk, both legs below the pelvis; not an
    arm lying against the trunk, whose bridge of fat the erosion cuts.  A body piece holding no
    kept core (the couch) is left out, unless it lies within the erosion depth of a kept core (a
    thin wall that partial volume broke up).  Holes are filled last (gas in the bowel and
    stomach, the lungs, and gas that a gap in a thin wall joins to the air outside): filled
    first, the air pocket enclosed between an arm and the trunk would widen the bridge.

    Args:
        ct: ``(z, y, x)`` HU.
        spacing: ``(sy, sx)`` or ``(sz, sy, sx)`` mm; ``None`` (unknown): 1 mm pixels.

    Returns:
        The mask, or None when nothing is above the threshold (then nothing is removed).
        A CT not in HU (all above the threshold) keeps everything.  Slice by slice, so
        memory stays one slice of distances.
    """
    from scipy import ndimage

    from napari_medseg.scribbles import CT_BODY_THRESHOLD_HU

    ct = np.asarray(ct)
    pixel = _pixel_mm(spacing)
    mask = np.zeros(ct.shape, bool)
    for z in range(ct.shape[0]):
        body = ct[z] > CT_BODY_THRESHOLD_HU
        if not body.any():
            continue
        cores, n = ndimage.label(ndimage.distance_transform_edt(body, sampling=pixel) > TRUNK_EROSION_MM)
        if n == 0:  # nothing thicker than the erosion: keep the body as it is
            mask[z] = ndimage.binary_fill_holes(body)
            continue
        sizes = np.bincount(cores.ravel())
        sizes[0] = 0
        keep = sizes >= TRUNK_SHARE * sizes.max()
        keep[0] = False
        distance, (iy, ix) = ndimage.distance_transform_edt(cores == 0, sampling=pixel, return_indices=True)
        pieces, _ = ndimage.label(body)
        holding = np.zeros(pieces.max() + 1, bool)
        holding[pieces[keep[cores]]] = True  # body pieces that hold a kept core (not the couch)
        holding[0] = False
        # a thin piece next to the trunk (a wall broken by partial volume) still closes the trunk's holes
        near = body & (distance <= TRUNK_EROSION_MM + max(pixel))
        trunk = keep[cores[iy, ix]] & (holding[pieces] | near)
        # holes: gas in the bowel and stomach, the lungs; also gas that a gap in a thin wall joins to the
        # air outside (a closing by the erosion depth bridges the gap; it adds air, never another body part)
        dilated = ndimage.distance_transform_edt(~trunk, sampling=pixel) <= TRUNK_EROSION_MM
        closed = ndimage.distance_transform_edt(dilated, sampling=pixel) > TRUNK_EROSION_MM
        mask[z] = ndimage.binary_fill_holes(trunk | (closed & ~body))
    return mask if mask.any() else None


def _pixel_mm(spacing) -> tuple[float, float]:
    """In-plane pixel size ``(sy, sx)`` mm (``preprocess.inplane_spacing``); 1 mm when unknown or unusable."""
    from napari_medseg.preprocess import inplane_spacing

    try:
        return inplane_spacing(spacing)
    except ValueError:
        return (1.0, 1.0)


def largest_component_only(labels: np.ndarray, organs: Iterable[int], *,
                           protected: Iterable[int] = (),
                           inside: np.ndarray | None = None) -> tuple[np.ndarray, dict[int, int]]:
    """Keep the largest 3D component of each organ value of a ``(z, y, x)`` integer volume.

    Components are 26-connected (the slice gap of a thick-slice CT still joins an organ
    across slices).  A component with a voxel on a ``protected`` slice (indices along
    axis 0, e.g. the user's corrected ones) is also kept.  Returns the new labels
    (a copy) and, per organ value, the number of voxels set to background.
    ``inside``: a ``(z, y, x)`` bool mask (:func:`trunk_mask`); organ voxels outside it
    are set to background first, except on protected slices.

    Cost: one pass over the volume, then work in the number of organ voxels (a
    512 x 512 x 600 CT takes about a second, not a label pass per organ).
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected (z, y, x) labels, got shape {labels.shape}")
    out = labels.copy()
    protected_mask = np.zeros(labels.shape[0], bool)
    protected_mask[[int(z) for z in protected if 0 <= int(z) < labels.shape[0]]] = True
    removed: dict[int, int] = {}
    if inside is not None:
        if inside.shape != labels.shape:
            raise ValueError(f"inside mask {inside.shape} does not match the labels {labels.shape}")
        organ_set = np.zeros(max(int(labels.max()), max(organs, default=0)) + 1, bool)
        organ_set[list(organs)] = True
        outside = organ_set[out] & ~inside & ~protected_mask[:, None, None]
        counts = np.bincount(out[outside].ravel(), minlength=organ_set.size)
        removed.update({int(v): int(c) for v, c in enumerate(counts) if c})
        out[outside] = 0
    labels = out
    coords = np.nonzero(labels)  # every organ voxel, once
    values = labels[coords]
    order = np.argsort(values, kind="stable")
    values = values[order]
    coords = tuple(c[order] for c in coords)
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
        removed[int(value)] = removed.get(int(value), 0) + int(drop.sum())
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
