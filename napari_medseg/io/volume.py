"""``Volume``: a canonical array plus its geometry and what it shows."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..labels import LabelSet
from .geometry import Geometry


class VolumeReadError(ValueError):
    """A file could not be read as a volume; the message says why and what to do."""


class VolumeWarning(UserWarning):
    """Something about a volume's geometry or values the user should know."""


@dataclass(frozen=True)
class Volume:
    """A volume in canonical orientation.

    Attributes:
        array: ``(z, y, x)`` or ``(t, z, y, x)`` (4D cine), canonical order
            (see ``docs/architecture.md``).  Raw values (HU for CT).
        geometry: spatial geometry (3D part only).
        modality: ``"ct"``, ``"mr"`` or None (unknown / labels).
        is_labels: True for integer segmentations.
        name: display name (file stem).
        label_set: names and colours when ``is_labels``.
        time_spacing: seconds (or the file's unit) between frames, 4D only.
    """

    array: np.ndarray
    geometry: Geometry
    modality: str | None = None
    is_labels: bool = False
    name: str = "volume"
    label_set: LabelSet | None = None
    time_spacing: float | None = field(default=None, compare=False)

    @property
    def is_4d(self) -> bool:
        return self.array.ndim == 4

    @property
    def num_frames(self) -> int:
        return self.array.shape[0] if self.is_4d else 1

    @property
    def source_path(self) -> str | None:
        return self.geometry.source_path

    def frame(self, t: int) -> "Volume":
        """The 3D volume of frame ``t`` (4D volumes only; negative ``t`` counts from the end)."""
        if not self.is_4d:
            raise ValueError(f"{self.name!r} is 3D (shape {self.array.shape}); it has no frames")
        n = self.array.shape[0]
        if not -n <= t < n:
            raise IndexError(f"frame {t} out of range: {self.name!r} has {n} frames (0..{n - 1})")
        t = t % n
        return replace(self, array=self.array[t], name=f"{self.name} [t={t}]", time_spacing=None)
