"""DICOM series folders via SimpleITK/GDCM: listing, reading, geometry checks."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .itk_formats import sitk_source
from .nifti import SourceImage
from .orientation import RAS_TO_LPS
from .volume import VolumeReadError, VolumeWarning

SPACING_TOLERANCE = 0.01  # relative deviation of a slice gap from the median gap
TILT_TOLERANCE_DEG = 0.01


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder.

    ``spacing`` is ``(row, column, slice)`` mm from the first two slices
    (``None`` where a tag is missing); ``files`` are in GDCM's slice order.
    """

    uid: str
    files: tuple[str, ...]
    description: str = ""
    modality: str = ""
    spacing: tuple[float | None, float | None, float | None] = (None, None, None)

    @property
    def num_files(self) -> int:
        return len(self.files)

    def spacing_text(self) -> str:
        """``"0.98 x 0.98 x 2 mm"`` (``?`` for unknown values)."""
        return " x ".join("?" if v is None else f"{v:.3g}" for v in self.spacing) + " mm"


def is_dicom_file(path) -> bool:
    """True for a file with the ``DICM`` preamble marker (or a ``.dcm`` name)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def folder_has_dicom(folder, max_checked: int = 64) -> bool:
    """Cheap test: does ``folder`` (not recursive) hold at least one DICOM file?"""
    try:
        with os.scandir(folder) as entries:
            checked = 0
            for entry in entries:
                if entry.is_file():
                    if is_dicom_file(entry.path):
                        return True
                    checked += 1
                    if checked >= max_checked:
                        return False
    except OSError:
        return False
    return False


def _tag(reader, tag: str, index: int | None = None) -> str:
    try:
        if index is None:
            return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
        return reader.GetMetaData(index, tag).strip() if reader.HasMetaDataKey(index, tag) else ""
    except Exception:
        return ""


def _numbers(text: str) -> list[float] | None:
    try:
        return [float(v) for v in text.split("\\")] if text else None
    except ValueError:
        return None


def _series_info(files: tuple[str, ...]) -> tuple[str, str, tuple]:
    """``(description, modality, spacing)`` from the first two files' headers (no pixel data)."""
    import SimpleITK as sitk

    headers = []
    for file in files[:2]:
        info = sitk.ImageFileReader()
        info.SetFileName(file)
        try:
            info.ReadImageInformation()
        except Exception:
            break
        headers.append(info)
    if not headers:
        return "", "", (None, None, None)
    pixel = _numbers(_tag(headers[0], "0028|0030")) or [None, None]
    gap = None
    if len(headers) == 2:
        a, b = (_numbers(_tag(h, "0020|0032")) for h in headers)
        if a and b and len(a) == len(b) == 3:
            gap = float(np.linalg.norm(np.subtract(b, a)))
    if gap is None:
        gap = (_numbers(_tag(headers[0], "0018|0050")) or [None])[0]
    spacing = (pixel[0], pixel[1] if len(pixel) > 1 else None, gap)
    return _tag(headers[0], "0008|103e"), _tag(headers[0], "0008|0060"), spacing


def unreadable_dicom_files(folder, series: list[DicomSeries]) -> list[str]:
    """Files of ``folder`` that look like DICOM (``.dcm`` name or ``DICM`` marker) but belong to no series."""
    listed = {os.path.abspath(f) for s in series for f in s.files}
    try:
        entries = sorted(e.path for e in os.scandir(folder) if e.is_file())
    except OSError:
        return []
    return [p for p in entries if os.path.abspath(p) not in listed and is_dicom_file(p)]


def list_dicom_series(folder) -> list[DicomSeries]:
    """All series in ``folder`` (not recursive), largest first.

    Warns (:class:`VolumeWarning`) naming DICOM-looking files that GDCM could not read.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeReadError(f"{folder} is not a folder")
    series = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        description, modality, spacing = _series_info(files)
        series.append(DicomSeries(uid=uid, files=files, description=description, modality=modality, spacing=spacing))
    series.sort(key=lambda s: -s.num_files)
    bad = unreadable_dicom_files(folder, series)
    if bad:
        names = ", ".join(Path(p).name for p in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        warnings.warn(
            f"{folder.name}: skipped {len(bad)} unreadable DICOM file(s): {names} (corrupt, truncated or not an image)",
            VolumeWarning,
            stacklevel=3,
        )
    return series


def _describe(s: DicomSeries, index: int | None = None) -> str:
    text = (f"[{index}] " if index is not None else "") + f"{s.uid or '<no UID>'} ({s.num_files} files"
    if s.modality:
        text += f", {s.modality}"
    if s.description:
        text += f", {s.description!r}"
    if any(v is not None for v in s.spacing):
        text += f", {s.spacing_text()}"
    return text + ")"


def select_series(series: list[DicomSeries], choice: str | int, folder="") -> DicomSeries:
    """The series whose UID is ``choice``, else the one at 0-based index ``choice`` (in listing order)."""
    text = str(choice).strip()
    for s in series:
        if s.uid == text:
            return s
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(series):
        return series[int(text)]
    found = "; ".join(_describe(s, i) for i, s in enumerate(series))
    raise VolumeReadError(f"series {text!r} is not in {folder}: give a series UID or an index 0..{len(series) - 1}; found: {found}")


def pick_series(folder, series_uid: str | int | None = None) -> DicomSeries:
    """The requested series (UID or 0-based index), or the largest one (warning when there are several)."""
    series = list_dicom_series(folder)
    if not series:
        raise VolumeReadError(f"no DICOM series found in {folder} (empty folder or no readable DICOM files)")
    if series_uid is not None:
        return select_series(series, series_uid, folder)
    if len(series) > 1:
        warnings.warn(
            f"{folder} holds {len(series)} DICOM series; opened the largest, {_describe(series[0], 0)}. "
            "Others: " + "; ".join(_describe(s, i) for i, s in enumerate(series) if i) +
            ". Choose one with --series UID|INDEX (or series_uid=).",
            VolumeWarning,
            stacklevel=3,
        )
    return series[0]


def _slice_positions(reader, n: int) -> np.ndarray | None:
    positions = []
    for i in range(n):
        text = _tag(reader, "0020|0032", i)
        try:
            positions.append([float(v) for v in text.split("\\")])
        except ValueError:
            return None
    return np.asarray(positions) if positions and all(len(p) == 3 for p in positions) else None


def check_slices(positions: np.ndarray, normal: np.ndarray, name: str) -> tuple[np.ndarray | None, float]:
    """Warn about missing slices / non-uniform spacing; detect gantry tilt.

    Args:
        positions: ``(n, 3)`` ImagePositionPatient (LPS mm) in file order.
        normal: unit slice normal (LPS).

    Returns:
        ``(step, tilt_degrees)``: the mean slice step vector (LPS mm) when the
        stack is tilted (sheared), else None; and the tilt angle.
    """
    if len(positions) < 2:
        return None, 0.0
    gaps = np.diff(positions @ normal)
    median = float(np.median(gaps))
    if abs(median) < 1e-6:
        warnings.warn(f"{name}: slices share one position (duplicates?); spacing is undefined", VolumeWarning, stacklevel=4)
        return None, 0.0
    deviation = np.abs(gaps - median) / abs(median)
    if np.any(deviation > SPACING_TOLERANCE):
        bad = np.flatnonzero(deviation > SPACING_TOLERANCE)
        missing = int(np.sum(np.round(gaps[bad] / median) - 1).clip(min=0))
        warnings.warn(
            f"{name}: non-uniform slice spacing: gaps range from {gaps.min():.3g} to {gaps.max():.3g} mm "
            f"(usual gap {median:.3g} mm) at {len(bad)} place(s)"
            + (f"; about {missing} slice(s) look missing" if missing else "")
            + ". The volume is shown with a uniform spacing, so distances across those gaps are wrong.",
            VolumeWarning,
            stacklevel=4,
        )
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    along = float(step @ normal)
    in_plane = float(np.linalg.norm(step - along * normal))
    tilt = float(np.degrees(np.arctan2(in_plane, abs(along))))
    return (step if tilt > TILT_TOLERANCE_DEG else None), tilt


def _first_unreadable(files) -> str | None:
    """The first file whose pixels SimpleITK cannot read (only called after a series read failed)."""
    import SimpleITK as sitk

    for file in files:
        try:
            sitk.ReadImage(file)
        except Exception:
            return file
    return None


def read_dicom(folder, series_uid: str | int | None = None) -> SourceImage:
    """Read one series of a DICOM folder (``series_uid``: UID or 0-based index; default the largest) in ITK index order."""
    import SimpleITK as sitk

    folder = Path(folder)
    series = pick_series(folder, series_uid)
    if series.num_files < 2:
        raise VolumeReadError(
            f"DICOM series {_describe(series)} in {folder} has a single slice (a 2D image); "
            "napari-medseg reads 3D series"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except Exception as exc:
        bad = _first_unreadable(series.files)
        where = f": slice file {Path(bad).name} is unreadable (corrupt or truncated)" if bad else f": {exc}"
        raise VolumeReadError(f"could not read DICOM series {_describe(series)} in {folder}{where}") from exc
    header = {
        "series_uid": series.uid,
        "num_files": series.num_files,
        "description": series.description,
        # per slice k (ITK index order): the file and its SOP Instance UID, for DICOM-SEG references
        "files": [str(Path(f).resolve()) for f in series.files],
        "sop_instance_uids": [_tag(reader, "0008|0018", i) for i in range(series.num_files)],
    }
    source = sitk_source(image, folder, header)
    modality = _tag(reader, "0008|0060", 0).upper()
    source.modality = {"CT": "ct", "MR": "mr"}.get(modality)

    positions = _slice_positions(reader, series.num_files)
    if positions is not None:
        affine_lps = RAS_TO_LPS @ source.affine_ras
        normal = affine_lps[:3, 2] / np.linalg.norm(affine_lps[:3, 2])
        step, tilt = check_slices(positions, normal, f"DICOM series in {folder.name}")
        if step is not None:
            # Gantry tilt: the true stack is sheared.  Keep it (it is what gets
            # saved); display is de-obliqued and read_volume warns.
            affine_lps[:3, 2] = step
            affine_lps[:3, 3] = positions[0]
            source.affine_ras = RAS_TO_LPS @ affine_lps
            source.header["gantry_tilt_degrees"] = tilt
    return source
