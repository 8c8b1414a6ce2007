"""``read_volume``: any supported file or folder -> canonical :class:`Volume`.

Choices (documented here because users meet them):

* Integer volumes with non-negative values and at most ``MAX_LABEL_VALUES``
  distinct values are segmentations (``is_labels``), from NIfTI, NRRD or
  MHA/MHD.  DICOM series are always images.  Label names come from a sidecar
  ``<stem>.json`` (as written by :func:`write_labels`), else the ``synapse``
  set when the values fit 0..8, else a custom set ``label 1..K``.
* NaNs: a volume with some NaN voxels opens with a warning (contrast is
  computed from the finite voxels; segmentation refuses NaNs later).  A
  volume with no finite voxel at all is an error.
* Oblique volumes open de-obliqued with a warning; the true geometry stays in
  :attr:`Geometry.direction` and is used when saving.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..atomic import is_temp_name
from ..labels import BUILTIN, SYNAPSE, LabelSet
from .dicom import folder_has_dicom, is_dicom_file, read_dicom
from .geometry import Geometry
from .itk_formats import read_itk
from .nifti import nifti_stem, read_nifti
from .volume import Volume, VolumeReadError, VolumeWarning

MAX_LABEL_VALUES = 64
_ITK_EXTENSIONS = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}


def detect_format(path) -> str | None:
    """``"nifti"``, ``"dicom"``, ``"nrrd"``, ``"mha"`` or None; cheap, never raises."""
    try:
        path = Path(path)
        name = path.name.lower()
        if path.is_dir():
            return "dicom" if folder_has_dicom(path) else None
        if not path.is_file():
            return None
        if name.endswith(".nii") or name.endswith(".nii.gz"):
            return "nifti"
        if path.suffix.lower() in _ITK_EXTENSIONS:
            return _ITK_EXTENSIONS[path.suffix.lower()]
        if is_dicom_file(path):
            return "dicom"
    except Exception:
        return None
    return None


def check_readable(path: Path) -> None:
    """Raise :class:`VolumeReadError` naming why ``path`` cannot be opened (missing, symlink loop, permission)."""
    try:
        path.stat()
    except FileNotFoundError:
        reason = "is a broken symbolic link" if path.is_symlink() else "does not exist"
        raise VolumeReadError(f"{path} {reason}") from None
    except OSError as exc:  # ELOOP, EACCES on a parent, ...
        raise VolumeReadError(f"cannot open {path}: {exc.strerror or exc}") from None
    if is_temp_name(path):
        raise VolumeReadError(f"{path.name} is a temporary file left by an interrupted save, not a volume; delete it")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise VolumeReadError(f"cannot open {path}: permission denied")
    if path.is_file() and path.stat().st_size == 0:
        raise VolumeReadError(f"{path} is empty (0 bytes); it was not saved completely")


def volume_name(path) -> str:
    path = Path(path)
    if path.is_dir():
        return path.name
    return nifti_stem(path)  # the stem of other files too


def sidecar_path(path) -> Path:
    """``<stem>.json`` next to a volume file."""
    path = Path(path)
    return path.with_name(volume_name(path) + ".json")


def looks_like_labels(array: np.ndarray) -> bool:
    """Non-negative integer values (integral floats count) with few distinct values."""
    if array.dtype == bool:
        return True
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        return False
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 200_000)]
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(sample)) or np.any(sample != np.round(sample)):
            return False
    if sample.min() < 0 or len(np.unique(sample)) > MAX_LABEL_VALUES:
        return False
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(flat)) or np.any(flat != np.round(flat)):
            return False
    if flat.min() < 0:
        return False
    return len(np.unique(flat)) <= MAX_LABEL_VALUES


def as_label_array(array: np.ndarray) -> np.ndarray:
    """Integer labels in the smallest unsigned type that holds them."""
    top = int(array.max()) if array.size else 0
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
    if array.dtype == dtype:
        return array
    return array.astype(dtype)


def choose_label_set(path, values: np.ndarray, embedded=None) -> LabelSet:
    """Sidecar JSON (when it names every value), else the label table embedded in the file, else
    synapse (values within 0..8, more than a 0/1 mask), else ``label 1..K``.
    ``embedded``: ``[[value, name, rgba], ...]``."""
    values = [int(v) for v in values]
    top = max(values) if values else 0
    side = sidecar_path(path) if path is not None and not Path(path).is_dir() else None
    if side is not None and side.is_file():
        try:
            label_set = LabelSet.from_dict(json.loads(side.read_text()))
        except Exception as exc:
            warnings.warn(f"ignoring label sidecar {side.name}: {exc}", VolumeWarning, stacklevel=3)
        else:
            unknown = sorted(set(values) - set(label_set.names))
            if not unknown:
                return label_set
            warnings.warn(
                f"label sidecar {side.name} does not name values {unknown}; using default names",
                VolumeWarning,
                stacklevel=3,
            )
    if embedded:
        return _embedded_label_set(embedded, values)
    if 1 < top <= SYNAPSE.num_classes - 1:  # a plain 0/1 mask is not "aorta"
        return SYNAPSE
    return LabelSet.numbered(top)


def _embedded_label_set(embedded, values) -> LabelSet:
    """A label set from a file's own table ``[[value, name, rgba], ...]``; unnamed values get ``label k``."""
    table = {int(v): (str(n), tuple(c)) for v, n, c in embedded}
    table.update({v: (f"label {v}", (0.5, 0.5, 0.5, 1.0)) for v in values if v > 0 and v not in table})
    label_set = LabelSet.from_table(table)
    builtin = next((b for b in BUILTIN.values() if b.names == label_set.names), None)
    return LabelSet(builtin.name, label_set.names, label_set.colors) if builtin else label_set


def _modality(array: np.ndarray) -> str | None:
    from ..preprocess import guess_modality

    try:
        return guess_modality(array)
    except ValueError:
        return None


def read_volume(path, series_uid: str | None = None) -> Volume:
    """Read a NIfTI file, DICOM folder (or file of a series), NRRD or MHA/MHD.

    Args:
        path: file or DICOM folder.
        series_uid: DICOM only: which series (default: the largest).

    Returns:
        :class:`Volume` in canonical orientation.  Raises :class:`VolumeReadError`
        (a ``ValueError``) with a plain reason for anything it cannot read.
    """
    path = Path(path)
    check_readable(path)
    fmt = detect_format(path)
    if fmt is None:
        if path.is_dir():
            raise VolumeReadError(f"{path} holds no DICOM files (empty folder or other files only)")
        raise VolumeReadError(
            f"{path.name}: unsupported file type; napari-medseg reads .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd "
            "and DICOM series folders"
        )
    if fmt == "nifti":
        source = read_nifti(path)
    elif fmt == "dicom":
        folder = path if path.is_dir() else path.parent
        source = read_dicom(folder, series_uid)
        path = folder
    else:
        source = read_itk(path)

    try:
        geometry = Geometry.from_source_affine(
            source.affine_ras,
            source.array.shape[:3],
            source_format=fmt,
            source_path=str(path.resolve()),
            source_header=source.header,
        )
    except ValueError as exc:
        raise VolumeReadError(f"{path.name}: unusable geometry: {' '.join(str(exc).split())}") from exc
    canonical = geometry.from_source(source.array)
    array = np.ascontiguousarray(canonical, dtype=canonical.dtype.newbyteorder("="))  # native, at most one copy
    name = volume_name(path)

    if geometry.oblique:
        tilt = source.header.get("gantry_tilt_degrees")
        what = f"gantry tilt of {tilt:.2f} degrees" if tilt else f"oblique axes (up to {geometry.obliquity_degrees:.2f} degrees)"
        warnings.warn(
            f"{name}: {what}; shown de-obliqued (straightened), so on-screen millimetres are approximate. "
            "The true geometry is kept in the layer metadata and used when saving.",
            VolumeWarning,
            stacklevel=2,
        )

    if fmt != "dicom" and looks_like_labels(array):
        array = as_label_array(array)
        label_set = choose_label_set(path, np.unique(array), source.header.get("label_table"))
        return Volume(array, geometry, None, True, name, label_set, source.time_spacing)

    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.any():
            raise VolumeReadError(f"{name} holds no finite values (all NaN or infinite)")
        if not finite.all():
            warnings.warn(
                f"{name}: {int((~finite).sum())} voxels are NaN or infinite; they show as black and must be "
                "fixed before segmenting",
                VolumeWarning,
                stacklevel=2,
            )
    modality = source.modality or _modality(array)
    return Volume(array, geometry, modality, False, name, None, source.time_spacing)
