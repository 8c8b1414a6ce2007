"""Write labels in the source image's exact geometry (atomic, never over the source).

One call, :func:`write_labels`, picks the format from the file name:
``.nii.gz``/``.nii`` NIfTI (label table in a header extension + ``.json``
sidecar), ``.seg.nrrd`` 3D Slicer segmentation, ``.dcm`` DICOM-SEG (DICOM
sources only).  :func:`write_image` saves an image (e.g. a DICOM series, or the
uncertainty map) as NIfTI in the same geometry.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..labels import LabelSet
from .geometry import Geometry
from .volume import VolumeWarning

SIDECAR_FORMAT = "napari-medseg label sidecar v1"


LABEL_FORMATS = ((".nii.gz", "nifti"), (".nii", "nifti"), (".seg.nrrd", "slicer"), (".dcm", "dicom-seg"))


def label_target(path) -> tuple[Path, str, str]:
    """``(path, format, extension)`` with format ``nifti``/``slicer``/``dicom-seg``; refuses other names."""
    path = Path(path)
    lower = path.name.lower()
    for ext, fmt in LABEL_FORMATS:
        if lower.endswith(ext) and len(lower) > len(ext):
            return path, fmt, ext
    raise ValueError(
        "labels are saved as .nii.gz/.nii (NIfTI), .seg.nrrd (3D Slicer) or .dcm (DICOM-SEG, DICOM sources only); "
        f"got {path.name!r}"
    )


def check_label_output(path, geometry: Geometry | None = None) -> tuple[Path, str, str]:
    """Validate an output name before any work: format by suffix, not the source, DICOM-SEG only for DICOM."""
    path, fmt, ext = label_target(path)
    if geometry is not None:
        _refuse_source(path, geometry)
        if fmt == "dicom-seg":
            from .dicom_seg import dicom_seg_ready

            dicom_seg_ready(geometry)
    return path, fmt, ext


def _refuse_source(path: Path, geometry: Geometry) -> None:
    if geometry.source_path and _same_file(path, geometry.source_path):
        raise ValueError(f"refusing to overwrite the source image {path}; choose another file name")


def _same_file(a: Path, b) -> bool:
    try:
        return a.resolve() == Path(b).resolve()
    except OSError:
        return False


def _label_array(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or np.any(labels != np.round(labels)):
            raise ValueError(f"labels must hold integers, got dtype {labels.dtype}")
    low = int(labels.min()) if labels.size else 0
    high = int(labels.max()) if labels.size else 0
    if low < 0:
        raise ValueError(f"labels must be >= 0, found {low}")
    if high > 65535:
        raise ValueError(f"label value {high} does not fit uint16; NIfTI label maps here are uint8/uint16")
    return labels.astype(np.uint8 if high <= 255 else np.uint16, copy=False)


def write_labels(labels, path, geometry: Geometry, label_set: LabelSet | None = None, *, algorithm=None) -> Path:
    """Save canonical labels in the source voxel order and geometry; the format follows the suffix.

    Args:
        labels: ``(z, y, x)`` integer array in canonical order, shape ``geometry.shape``.
        path: ``.nii.gz``/``.nii``, ``.seg.nrrd`` or ``.dcm``; must not be the source file.
        geometry: the source image's :class:`Geometry` (a DICOM series for ``.dcm``).
        label_set: names and colours (default: ``label k``).
        algorithm: DICOM-SEG only: :class:`~napari_medseg.io.dicom_seg.Algorithm` (model, checkpoint sha256).

    Returns:
        The written path.  NIfTI also gets ``<stem>.json`` (names, colours) next to it.
    """
    path, fmt, ext = check_label_output(path, geometry)
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    data = _label_array(labels)
    if data.shape != geometry.shape:
        raise ValueError(
            f"labels have shape {data.shape} but the source geometry is {geometry.shape}; "
            "save labels drawn on that image (one frame for 4D)"
        )
    if label_set is None:
        top = int(data.max()) if data.size else 0
        label_set = LabelSet.numbered(top)
    else:
        unknown = sorted(set(np.unique(data).tolist()) - set(label_set.names))
        if unknown:
            warnings.warn(f"label values {unknown} are not named in label set {label_set.name!r}", VolumeWarning, stacklevel=2)
            label_set = LabelSet.from_table({v: (n, label_set.colors[v]) for v, n in label_set.names.items()}
                                            | {v: (f"label {v}", (0.5, 0.5, 0.5, 1.0)) for v in unknown}, label_set.name)
    source = np.asarray(geometry.to_source(data))
    if fmt == "slicer":
        from .slicer_seg import write_slicer_seg

        return atomic_write(path, lambda tmp: write_slicer_seg(source, geometry.source_affine_ras, label_set, tmp), suffix=ext)
    if fmt == "dicom-seg":
        from .dicom_seg import write_dicom_seg

        return atomic_write(path, lambda tmp: write_dicom_seg(source, geometry, label_set, tmp, algorithm), suffix=ext)
    return _write_nifti(source, path, ext, geometry, label_set)


IMAGE_DESCRIP = b"napari-medseg image"


def write_image(image, path, geometry: Geometry) -> Path:
    """Save a canonical ``(z, y, x)`` image as NIfTI in the source voxel order and geometry.

    Integer and float32/float64 voxels keep their dtype (HU stay HU); float16
    (the uncertainty map) becomes float32, which NIfTI-1 can hold.  ``path``:
    ``.nii.gz``/``.nii``, never the source file.
    """
    import nibabel as nib

    path = Path(path)
    ext = next((e for e in (".nii.gz", ".nii") if path.name.lower().endswith(e) and len(path.name) > len(e)), None)
    if ext is None:
        raise ValueError(f"images are saved as .nii.gz or .nii; got {path.name!r}")
    _refuse_source(path, geometry)
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    data = np.asarray(image)
    if data.shape != geometry.shape:
        raise ValueError(f"the image has shape {data.shape} but its source geometry is {geometry.shape}")
    if data.dtype == np.float16 or data.dtype == bool:
        data = data.astype(np.float32 if data.dtype == np.float16 else np.uint8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(f"cannot save voxels of dtype {data.dtype} as NIfTI")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        warnings.warn(f"{path.name}: the image holds NaN or infinite values; saved as they are",
                      VolumeWarning, stacklevel=2)
    img = _nifti_in_source_geometry(np.asarray(geometry.to_source(data)), geometry)
    img.header["descrip"] = IMAGE_DESCRIP
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=ext)


def _nifti_in_source_geometry(source: np.ndarray, geometry: Geometry):
    """A ``Nifti1Image`` of source-ordered voxels with the source affine and its sform/qform codes."""
    import nibabel as nib

    affine = np.asarray(geometry.source_affine_ras, float)
    img = nib.Nifti1Image(source, affine)
    header = geometry.source_header
    if geometry.source_format == "nifti" and "sform_code" in header:
        sform = header.get("sform") or affine
        qform = header.get("qform") or affine
        img.set_sform(np.asarray(sform, float), code=int(header["sform_code"]))
        img.set_qform(np.asarray(qform, float), code=int(header["qform_code"]))
    else:  # DICOM / ITK / layer: scanner coordinates
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
    img.header.set_data_dtype(source.dtype)
    return img


def _write_nifti(source: np.ndarray, path: Path, ext: str, geometry: Geometry, label_set: LabelSet) -> Path:
    """NIfTI with the source affine/codes, the label table extension, and the ``.json`` sidecar."""
    import nibabel as nib

    from .nifti import label_table_extension

    img = _nifti_in_source_geometry(source, geometry)
    img.header["descrip"] = b"napari-medseg labels"
    img.header.extensions.append(label_table_extension(label_set))

    sidecar = path.with_name(path.name[: -len(ext)] + ".json")
    if geometry.source_path and _same_file(sidecar, geometry.source_path):
        raise ValueError(f"refusing to overwrite the source {sidecar} with the label sidecar")

    atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=ext)
    side = dict(label_set.to_dict(), format=SIDECAR_FORMAT, labels_file=path.name, source=geometry.source_path)
    text = json.dumps(side, indent=2)
    atomic_write(sidecar, lambda tmp: Path(tmp).write_text(text), suffix=".json")
    return path
