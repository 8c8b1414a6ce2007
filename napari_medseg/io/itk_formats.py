"""NRRD and MetaImage (``.mha``/``.mhd``) via SimpleITK, plus the ITK -> source helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .nifti import SourceImage, check_shape, check_voxel_bytes
from .orientation import RAS_TO_LPS
from .volume import VolumeReadError


def itk_affine_lps(image) -> np.ndarray:
    """4x4: ITK index ``(i, j, k, 1)`` -> LPS mm, from origin, spacing and direction."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), float).reshape(dim, dim)[:3, :3]
    m = np.eye(4)
    m[:3, :3] = direction * np.asarray(image.GetSpacing(), float)[:3]
    m[:3, 3] = np.asarray(image.GetOrigin(), float)[:3]
    return m


def sitk_source(image, path, header: dict | None = None) -> SourceImage:
    """A 3D SimpleITK image as a :class:`SourceImage` in ITK index order ``(i, j, k)``."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeReadError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} values per voxel (vector/RGB image); "
            "only scalar volumes are supported"
        )
    check_shape(image.GetSize(), path)
    if image.GetDimension() != 3:
        raise VolumeReadError(
            f"{path} is {image.GetDimension()}D (size {image.GetSize()}); only 3D NRRD/MHA/DICOM is supported "
            "(use NIfTI for 4D cine)"
        )
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (k, j, i) copy -> (i, j, k) view
    affine_ras = RAS_TO_LPS @ itk_affine_lps(image)
    return SourceImage(array=array, affine_ras=affine_ras, header=dict(header or {}))


def check_itk_bytes(reader, path: Path) -> None:
    """Refuse a header whose voxels cannot fit its file (single-file formats) or the free memory."""
    import SimpleITK as sitk

    one = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
    itemsize = one.GetSizeOfPixelComponent() * reader.GetNumberOfComponents()
    detached = path.suffix.lower() in (".nhdr", ".mhd")
    check_voxel_bytes(path, reader.GetSize(), np.dtype(f"V{itemsize}"), layout="detached" if detached else "compressed")


def read_itk(path) -> SourceImage:
    """Read ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` (3D scalar)."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        check_shape(reader.GetSize(), path)
        check_itk_bytes(reader, path)
        image = reader.Execute()
    except VolumeReadError:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()
        reason = next((line for line in message if "Description" in line or "ERROR" in line), message[-1] if message else "")
        raise VolumeReadError(f"could not read {path}: {reason.strip()}. The file is corrupt or truncated.") from exc
    return sitk_source(image, path)
