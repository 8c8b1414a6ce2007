"""Axis bookkeeping between a file's voxel order and the canonical ``(z, y, x)`` order.

World coordinates follow DICOM LPS (x -> patient left, y -> posterior,
z -> superior).  The canonical voxel order lists the axes that grow towards
S, P, L, i.e. array axis ``c`` follows LPS world axis ``2 - c``.

An affine here is always a 4x4 matrix mapping a *source* voxel index
``(i, j, k, 1)`` (nibabel's order: the first index varies fastest in the file)
to world millimetres.
"""

from __future__ import annotations

import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
# Swaps LPS (x, y, z) rows into canonical (S, P, L) = (z, y, x) order.
LPS_TO_SPL = np.array(
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
)


def canonical_axes(affine_lps: np.ndarray) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Which source axis feeds each canonical axis, and whether it is flipped.

    Args:
        affine_lps: 4x4, source index -> LPS mm.  Oblique axes go to the
            nearest patient axis (each source axis used once).

    Returns:
        ``(source_axes, flips)``: ``source_axes[c]`` is the source axis that
        becomes canonical axis ``c`` (0 = z, 1 = y, 2 = x); ``flips[c]`` is
        True when that source axis runs towards I, A or R and must be reversed.
    """
    from nibabel.orientations import io_orientation

    affine_lps = np.asarray(affine_lps, dtype=float)
    columns = affine_lps[:3, :3]
    if not np.all(np.isfinite(columns)) or np.any(np.linalg.norm(columns, axis=0) == 0):
        raise ValueError(f"the voxel-to-world matrix is degenerate (a zero or non-finite axis):\n{columns}")
    if abs(np.linalg.det(columns)) < 1e-12:
        raise ValueError(f"the voxel-to-world matrix is singular:\n{columns}")
    ornt = io_orientation(affine_lps)
    if np.isnan(ornt).any():
        raise ValueError(f"cannot determine the voxel orientation from the matrix:\n{columns}")
    source_axes = [0, 0, 0]
    flips = [False, False, False]
    for src_axis, (world_axis, direction) in enumerate(ornt):
        c = 2 - int(world_axis)
        source_axes[c] = src_axis
        flips[c] = bool(direction < 0)
    return tuple(source_axes), tuple(flips)


def from_source(array: np.ndarray, source_axes, flips) -> np.ndarray:
    """Source-ordered array (first 3 axes spatial) -> canonical view (no copy).

    Extra trailing axes (time) are moved to the front: ``(i, j, k, t)`` ->
    ``(t, z, y, x)``.
    """
    extra = list(range(3, array.ndim))
    out = np.transpose(array, extra + list(source_axes))
    flip_axes = [len(extra) + c for c in range(3) if flips[c]]
    return np.flip(out, axis=flip_axes) if flip_axes else out


def to_source(array: np.ndarray, source_axes, flips) -> np.ndarray:
    """Inverse of :func:`from_source` for a 3D canonical array (a view)."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3D canonical (z, y, x) array, got shape {array.shape}")
    flip_axes = [c for c in range(3) if flips[c]]
    out = np.flip(array, axis=flip_axes) if flip_axes else array
    return np.transpose(out, np.argsort(source_axes))


def canonical_to_source_index(source_shape, source_axes, flips) -> np.ndarray:
    """4x4 matrix mapping canonical ``(z, y, x, 1)`` to source ``(i, j, k, 1)``."""
    m = np.zeros((4, 4))
    m[3, 3] = 1.0
    for c in range(3):
        s = source_axes[c]
        if flips[c]:
            m[s, c] = -1.0
            m[s, 3] = source_shape[s] - 1
        else:
            m[s, c] = 1.0
    return m


def world_affine_spl(affine_ras: np.ndarray, source_shape, source_axes, flips) -> np.ndarray:
    """4x4: canonical index ``(z, y, x, 1)`` -> world ``(S, P, L, 1)`` mm."""
    index_map = canonical_to_source_index(source_shape, source_axes, flips)
    return LPS_TO_SPL @ RAS_TO_LPS @ np.asarray(affine_ras, dtype=float) @ index_map
