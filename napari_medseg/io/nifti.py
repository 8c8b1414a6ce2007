"""NIfTI reading with nibabel: source array, affine and the header facts worth keeping."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .volume import VolumeReadError, VolumeWarning

# Larger volumes are refused before any data is read (a header claiming more is
# corrupt or needs a different tool): 2**31 voxels is 8 GiB as float32.
MAX_VOXELS = 2**31


@dataclass
class SourceImage:
    """What a format reader hands on: source-ordered data and its NIfTI affine.

    ``array`` is ``(i, j, k)`` or ``(i, j, k, t)`` in the file's voxel order.
    """

    array: np.ndarray
    affine_ras: np.ndarray
    header: dict
    time_spacing: float | None = None
    modality: str | None = None


def nifti_stem(path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def check_shape(shape, path) -> tuple[int, ...]:
    """Drop trailing singleton axes past 3; refuse 2D, 5D+ and absurd sizes."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        raise VolumeReadError(
            f"{path} is a {len(shape)}D image (shape {shape}); napari-medseg reads 3D volumes "
            "(or 4D cine). Open 2D images with napari's built-in reader instead."
        )
    if len(shape) > 4:
        raise VolumeReadError(f"{path} has {len(shape)} dimensions (shape {shape}); only 3D and 4D (time) are supported")
    if min(shape) < 1:
        raise VolumeReadError(f"{path} has an empty dimension (shape {shape})")
    voxels = int(np.prod(shape, dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise VolumeReadError(
            f"{path}: the header claims shape {shape} ({voxels:.3g} voxels), more than the "
            f"{MAX_VOXELS:.3g} this reader accepts; the header is probably corrupt"
        )
    return shape


# deflate cannot compress better than about 1032:1, so a .nii.gz holds at most this many bytes per file byte
GZIP_MAX_RATIO = 1100


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_voxel_bytes(path: Path, shape, dtype, data_offset: int = 0, layout: str | None = None) -> None:
    """Refuse, before any allocation, a header claiming more voxel bytes than the file or memory can hold.

    ``layout``: ``"raw"`` (voxels stored uncompressed after ``data_offset``), ``"compressed"``
    (at most ``GZIP_MAX_RATIO`` bytes per file byte), or ``"detached"`` (data in another file:
    memory check only).  Default: compressed for ``.gz`` names, else raw.
    """
    needed = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    layout = layout or ("compressed" if path.name.lower().endswith(".gz") else "raw")
    if layout == "compressed" and needed > GZIP_MAX_RATIO * size:
        kind = f"{np.dtype(dtype).itemsize}-byte" if np.dtype(dtype).kind == "V" else np.dtype(dtype).name
        raise VolumeReadError(
            f"{path.name}: the header claims shape {tuple(int(s) for s in shape)} {kind} voxels "
            f"({needed / 1e9:.3g} GB), more than a {size}-byte compressed file can hold; the header is corrupt"
        )
    if layout == "raw" and size < data_offset + needed:
        raise VolumeReadError(f"{path} is truncated: the header needs {data_offset + needed} bytes, the file has {size}")
    free = available_memory()
    if free is not None and needed > free:
        raise VolumeReadError(
            f"{path.name} needs {needed / 1e9:.3g} GB of memory for its voxels, more than the "
            f"{free / 1e9:.3g} GB available; close other programs or crop the volume"
        )


def stored_pixdim(path: Path, header_class) -> np.ndarray:
    """``pixdim`` as stored in the file (``nib.load`` silently replaces zeros with 1)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fh:
        return np.asarray(header_class.from_fileobj(fh, check=False)["pixdim"], float)


def warn_bad_pixdim(path: Path, pixdim, ndim: int, qform_code: int, sform_code: int) -> None:
    """Warn when a spatial pixdim is zero, negative or not finite (nibabel then assumes 1 mm or |value|)."""
    pixdim = np.asarray(pixdim[1 : 1 + min(ndim, 3)], float)
    bad = [f"pixdim[{i + 1}]={v:g}" for i, v in enumerate(pixdim) if not np.isfinite(v) or v <= 0]
    if not bad:
        return
    used = "the sform, so the spacing comes from it" if sform_code > 0 else "1 mm for a zero value and the absolute value of a negative one"
    warnings.warn(
        f"{path.name}: voxel size {', '.join(bad)} is zero, negative or not finite; using {used}. "
        "Check the spacing before measuring volumes",
        VolumeWarning,
        stacklevel=4,
    )


def _scaled_voxels(img) -> np.ndarray:
    """Voxels with scl_slope/scl_inter applied, in a compact dtype (int16 CT stays integer)."""
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    if not np.isfinite(slope) or slope == 0:
        slope = 1.0
    if not np.isfinite(inter):
        inter = 0.0
    raw = np.asanyarray(img.dataobj.get_unscaled())
    if slope == 1.0 and inter == 0.0:
        return raw
    if np.issubdtype(raw.dtype, np.integer) and slope.is_integer() and inter.is_integer():
        small = raw.dtype.itemsize <= 2 and abs(slope) < 2**14 and abs(inter) < 2**29  # fits int32
        scaled = raw.astype(np.int32 if small else np.int64) * int(slope) + int(inter)
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= scaled.min() and scaled.max() <= info.max:
                return scaled.astype(dtype)
        return scaled
    return raw.astype(np.float32) * np.float32(slope) + np.float32(inter)


def read_nifti(path) -> SourceImage:
    """Read a ``.nii``/``.nii.gz``.  Raises :class:`VolumeReadError` with a plain reason."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
    except OSError as exc:
        if exc.strerror and not isinstance(exc, EOFError):  # permission, I/O or a folder: not "corrupt"
            raise VolumeReadError(f"cannot open {path}: {exc.strerror}") from exc
        raise VolumeReadError(f"could not read {path} as NIfTI: {exc}. The file is corrupt or truncated.") from exc
    except Exception as exc:  # nibabel raises many types for bad files
        raise VolumeReadError(
            f"could not read {path} as NIfTI: {type(exc).__name__}: {exc}. "
            "The file is corrupt, truncated or not a NIfTI file."
        ) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeReadError(f"{path} is a {type(img).__name__}, not a NIfTI-1/2 image")
    shape = check_shape(img.shape, path)
    hdr = img.header
    dtype = np.dtype(hdr.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise VolumeReadError(f"{path.name} stores {dtype} voxels (RGB/complex); napari-medseg reads scalar volumes")
    check_voxel_bytes(path, img.shape, hdr.get_data_dtype(), int(hdr.get_data_offset()))
    try:
        array = _scaled_voxels(img)
    except Exception as exc:
        raise VolumeReadError(
            f"could not read the voxels of {path}: {type(exc).__name__}: {exc}. "
            "The file is truncated or corrupt; re-export or re-download it."
        ) from exc
    array = array.reshape(shape)

    sform, sform_code = hdr.get_sform(coded=True)
    qform, qform_code = hdr.get_qform(coded=True)
    sform_code, qform_code = int(sform_code), int(qform_code)
    warn_bad_pixdim(path, stored_pixdim(path, type(hdr)), len(shape), qform_code, sform_code)
    if sform_code == 0 and qform_code == 0:
        warnings.warn(
            f"{path.name} stores no orientation (qform and sform codes are 0); using the voxel sizes "
            "with nibabel's default axes, so left/right may be wrong",
            VolumeWarning,
            stacklevel=3,
        )
    elif sform_code > 0 and qform_code > 0 and not np.allclose(sform, qform, atol=1e-3):
        warnings.warn(
            f"{path.name}: sform and qform disagree; using the sform (as nibabel and ITK-SNAP do)",
            VolumeWarning,
            stacklevel=3,
        )
    header = {
        "sform_code": sform_code,
        "qform_code": qform_code,
        "sform": None if sform is None else np.asarray(sform, float).tolist(),
        "qform": None if qform is None else np.asarray(qform, float).tolist(),
    }
    table = read_label_table(hdr, path.name)
    if table:  # JSON-safe: [[value, name, [r, g, b, a]], ...]
        header["label_table"] = [[value, organ, list(rgba)] for value, (organ, rgba) in sorted(table.items())]
    time_spacing = None
    if len(shape) == 4:
        zooms = hdr.get_zooms()
        time_spacing = float(zooms[3]) if len(zooms) > 3 else None
    return SourceImage(array=array, affine_ras=np.asarray(img.affine, float), header=header, time_spacing=time_spacing)


# ------------------------------------------------------------- label table
# The label table travels inside the NIfTI as a CaretExtension XML header
# extension, the layout TotalSegmentator writes and reads (ecode 0 as it uses;
# code 30, "caret", is also accepted on reading).
LABEL_TABLE_ECODES = (0, 30)


def label_table_extension(label_set) -> "object":
    """A nibabel ``Nifti1Extension`` holding ``label_set`` (value, name, RGBA floats) as CaretExtension XML."""
    import xml.etree.ElementTree as ET

    import nibabel as nib

    root = ET.Element("CaretExtension")
    info = ET.SubElement(root, "VolumeInformation", Index="0")
    table = ET.SubElement(info, "LabelTable")
    for value in sorted(label_set.organs):
        r, g, b, a = (float(c) for c in label_set.colors.get(value, (0.5, 0.5, 0.5, 1.0)))
        entry = ET.SubElement(table, "Label", Key=str(value), Red=f"{r:.6g}", Green=f"{g:.6g}", Blue=f"{b:.6g}", Alpha=f"{a:.6g}")
        entry.text = label_set.names[value]
    ET.SubElement(info, "VolumeType").text = "Label"
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")
    return nib.nifti1.Nifti1Extension(0, xml)


def read_label_table(header, name: str = "") -> dict[int, tuple[str, tuple[float, float, float, float]]] | None:
    """``{value: (name, rgba)}`` from a CaretExtension label table in a nibabel header, or None.

    A malformed table is ignored with a :class:`VolumeWarning` naming the file.
    """
    import xml.etree.ElementTree as ET

    for ext in getattr(header, "extensions", []):
        if ext.get_code() not in LABEL_TABLE_ECODES:
            continue
        content = ext.get_content()
        raw = content if isinstance(content, bytes) else str(content).encode()
        if b"CaretExtension" not in raw:
            continue
        try:
            root = ET.fromstring(raw.rstrip(b"\x00 \n"))
            table = {}
            for entry in root.iter("Label"):
                rgba = tuple(float(entry.get(c, default)) for c, default in
                             (("Red", 0.5), ("Green", 0.5), ("Blue", 0.5), ("Alpha", 1.0)))
                table[int(entry.get("Key"))] = ((entry.text or "").strip(), rgba)
        except (ET.ParseError, TypeError, ValueError) as exc:
            warnings.warn(f"{name}: ignoring an unreadable label table in the NIfTI header ({exc})", VolumeWarning, stacklevel=3)
            continue
        return table or None
    return None
