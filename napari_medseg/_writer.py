"""napari writers: a Labels layer -> NIfTI, Slicer ``.seg.nrrd`` or DICOM-SEG, and an Image layer -> NIfTI,
in its source image's exact geometry.

It never replaces a file it did not write: an existing target must be a
napari-medseg label file (and its ``.json`` a napari-medseg sidecar).
Refusals raise :class:`SaveRefused`, which napari shows as a notification
with the reason.
"""

from __future__ import annotations

import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

_MEDSEG_DESCRIP = b"napari-medseg"  # the NIfTI header descrip of every file the writers make (labels, image)


class SaveRefused(Exception):
    """The layer was not saved; the message says why.

    Deliberately not a ``ValueError``: napari reports a writer's ``ValueError``
    as "not a valid writer" and drops the reason.
    """


def _written_by_medseg(path: Path) -> bool:
    """True when ``path`` is a NIfTI file (labels or image) written by napari-medseg (header ``descrip``)."""
    import nibabel as nib

    try:
        return bytes(nib.load(str(path)).header["descrip"]).rstrip(b"\0").startswith(_MEDSEG_DESCRIP)
    except Exception:  # unreadable or not NIfTI: not ours
        return False


def _is_medseg_sidecar(path: Path) -> bool:
    from .io.writer import SIDECAR_FORMAT

    try:
        return json.loads(path.read_text()).get("format") == SIDECAR_FORMAT
    except Exception:  # unreadable, not JSON, not a dict: not ours
        return False


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing
        return False


def check_save_target(path: Path, source_path: str | None) -> None:
    """Refuse a target that is a folder, the source image, or a file napari-medseg did not write."""
    from .io.read import sidecar_path

    if path.is_dir():
        raise SaveRefused(f"{path} is a folder; give a file name ending in .nii.gz")
    if source_path and _same_file(path, source_path):
        raise SaveRefused(f"refusing to overwrite the source image {path.name}; choose another file name")
    if path.exists():
        if not _written_by_medseg(path):
            raise SaveRefused(
                f"refusing to replace {path.name}: it exists and was not written by napari-medseg "
                "(it may be an image or someone's reference labels); choose a new file name"
            )
        if not os.access(path, os.W_OK):
            raise SaveRefused(f"{path.name} is write-protected; not replaced")
    side = sidecar_path(path)
    if side.exists() and not _is_medseg_sidecar(side):
        raise SaveRefused(f"refusing to replace {side.name}, which napari-medseg did not write; choose a new file name")
    parent = path.parent
    if not parent.is_dir():
        raise SaveRefused(f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SaveRefused(f"folder {parent} is not writable; choose another place")


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers.

    Uses ``attributes["metadata"]["medseg"]["geometry"]`` (set by the reader,
    the sample data and the segment widget).  A Labels layer without it is
    written in an LPS-canonical geometry built from its ``scale``/``translate``,
    with a warning.  Raises :class:`SaveRefused` with the reason.
    """
    from .io import write_labels as write_nifti_labels
    from .labels import LabelSet

    meta = (attributes.get("metadata") or {}).get("medseg") or {}
    data = _volume(data, "label volumes")
    try:
        geometry = _target_geometry(path, data, attributes)
        label_set = LabelSet.from_dict(meta["label_set"]) if meta.get("label_set") else None
        algorithm = None
        if str(path).lower().endswith(".dcm"):
            from .io.dicom_seg import Algorithm

            algorithm = Algorithm.from_checkpoint_paths(meta.get("checkpoints") or [])
        started = datetime.now(timezone.utc)
        written = write_nifti_labels(data, path, geometry, label_set, algorithm=algorithm)
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise SaveRefused(f"{Path(path).name} not saved: {' '.join(str(err).split())}") from err
    _mark_autosave_saved(attributes.get("metadata"), written, started)
    return [str(written)]


def write_image(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer for Image layers: NIfTI (``.nii.gz``/``.nii``) in the source geometry.

    For example a DICOM series as NIfTI, or the uncertainty map next to the labels.
    Raises :class:`SaveRefused` with the reason (4D, the source itself, a file it did not write).
    """
    from .io.writer import write_image as write_nifti_image

    data = _volume(data, "images (one frame of a 4D series at a time)")
    try:
        written = write_nifti_image(data, path, _target_geometry(path, data, attributes))
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise SaveRefused(f"{Path(path).name} not saved: {' '.join(str(err).split())}") from err
    return [str(written)]


def _volume(data, what: str) -> np.ndarray:
    """The layer's 3D array (a leading axis of 1 dropped); :class:`SaveRefused` otherwise."""
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise SaveRefused(
            f"napari-medseg saves 3D {what}; this layer has shape {data.shape}"
            + (" (a 4D layer: save one frame as its own layer)" if data.ndim == 4 else "")
        )
    return data


def _target_geometry(path, data: np.ndarray, attributes: dict):
    """The layer's source geometry, after :func:`check_save_target`; warns when built from scale/translate."""
    from .io import VolumeWarning, layer_geometry

    geometry, from_metadata = layer_geometry(attributes.get("metadata"), data.shape,
                                             attributes.get("scale", (1, 1, 1)), attributes.get("translate", (0, 0, 0)))
    check_save_target(Path(path), geometry.source_path)
    if not from_metadata:
        warnings.warn(
            f"layer {attributes.get('name', '')!r} carries no source geometry (it was not opened or created "
            "by napari-medseg); saving it with its scale/translate as LPS (S, P, L) millimetres",
            VolumeWarning,
            stacklevel=3,
        )
    return geometry


def _mark_autosave_saved(metadata, written: Path, when) -> None:
    """Tell the layer's autosave (``metadata["medseg_recovery"]``) that the user saved these labels: no restore offer
    for an autosave older than ``when``.  A failure only warns: the user's file is written."""
    from .recovery import RecoveryWarning, mark_saved

    stamp = (metadata or {}).get("medseg_recovery")
    folder = stamp.get("folder") if isinstance(stamp, dict) else None
    if folder:
        try:
            mark_saved(folder, written, when)
        except (OSError, ValueError, TypeError) as err:  # a bad path in the metadata: the save itself stands
            warnings.warn(f"{written.name} is saved, but its autosave in {folder} could not be marked as saved ({err}); "
                          "reopening the image may offer an older autosave", RecoveryWarning, stacklevel=2)
