"""Write DICOM CT series for the tests: synthetic stacks, and the packaged sample CT as a real-geometry series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

STUDY_UID = "1.2.826.0.1.9"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_dicom_series(folder, arr, uid, step=(0.0, 0.0, 2.5), origin=(-10.0, -20.0, -30.0), description="syn",
                       pixel_spacing=(0.8, 0.9), orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                       instance_numbers=None) -> Path:
    """Write ``arr`` (k, rows, cols) as CT slices, one file each; slice k sits at origin + k * step (LPS mm).

    ``pixel_spacing`` is DICOM's (row spacing, column spacing) in mm; ``orientation`` is
    ImageOrientationPatient (row direction, column direction, LPS); ``instance_numbers``
    defaults to 1..k in slice order.  Returns ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    direction = np.stack([row_dir, col_dir, np.cross(row_dir, col_dir)], axis=1)
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, arr.shape[0] + 1))
    for k in range(arr.shape[0]):
        pos = np.asarray(origin, float) + k * np.asarray(step, float)
        sl = sitk.GetImageFromArray(arr[k : k + 1].astype(np.int16))
        sl.SetSpacing((float(pixel_spacing[1]), float(pixel_spacing[0]), 1.0))
        sl.SetDirection(tuple(direction.ravel()))
        sl.SetOrigin(tuple(pos))
        tags = {
            "0008|0060": "CT",
            "0008|0016": CT_IMAGE_STORAGE,
            "0008|0018": f"{uid}.{numbers[k]}",
            "0020|000d": STUDY_UID,
            "0020|000e": uid,
            "0020|0052": f"{uid}.0",
            "0008|103e": description,
            "0018|5100": "HFS",
            "0018|0050": f"{float(np.linalg.norm(step)):.6f}",
            "0020|0013": str(numbers[k]),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": "\\".join(f"{v:.6f}" for v in orientation),
            "0028|0030": f"{pixel_spacing[0]:.6f}\\{pixel_spacing[1]:.6f}",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{uid}_{numbers[k]:03d}.dcm"))
        writer.Execute(sl)
    return folder


def write_volume_as_dicom(path, folder, uid, *, superior_first=True, description="sample CT") -> Path:
    """Write the volume at ``path`` (NIfTI, int16 HU) as an axial DICOM series in its true geometry.

    The volume is put in DICOM's usual LPS order (rows anterior to posterior, columns right
    to left) and keeps its spacing and physical position.  ``superior_first`` numbers the
    instances from the head down (as most CT scanners do); otherwise from the feet up.
    """
    image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    arr = sitk.GetArrayFromImage(image)  # (k, rows, cols), k from inferior to superior
    sx, sy, sz = image.GetSpacing()
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    n = arr.shape[0]
    numbers = range(n, 0, -1) if superior_first else range(1, n + 1)
    return write_dicom_series(folder, arr, uid, step=tuple(direction[:, 2] * sz), origin=image.GetOrigin(),
                              description=description, pixel_spacing=(sy, sx),
                              orientation=tuple(direction[:, 0]) + tuple(direction[:, 1]),
                              instance_numbers=numbers)
