"""One identity for an image's content: :func:`voxel_hash` (numpy only, no napari, no torch).

The datastore keys corrected slices by it (a re-run on the same volume replaces,
never duplicates) and autosave finds a case's recovery folder by it.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Bytes hashed per update (bounded memory for a 512x512x600 CT).
CHUNK_BYTES = 1 << 24


def voxel_hash(array) -> str:
    """sha256 hex digest of an array's shape, dtype and voxel bytes (C order), hashed in chunks.

    Equal values in another dtype or shape give another hash; the same voxels
    read from another file (NIfTI, DICOM, a copy) give the same one.
    """
    array = np.asarray(array)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype.str}|".encode())
    if array.ndim == 0 or array.size == 0:
        digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
    rows = max(1, CHUNK_BYTES // max(array[0].nbytes, 1))  # whole leading-axis slabs: C order, copies bounded
    for start in range(0, array.shape[0], rows):
        digest.update(np.ascontiguousarray(array[start:start + rows]).tobytes())
    return digest.hexdigest()
