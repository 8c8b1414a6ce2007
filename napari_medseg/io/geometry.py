"""The one geometry object: where each canonical voxel sits in the patient.

See ``docs/architecture.md``: canonical arrays are ``(z, y, x)`` with z ->
superior, y -> posterior, x -> patient left; world coordinates are LPS
millimetres listed as ``(S, P, L)``.  The source file's voxel order and its
NIfTI (RAS) affine are kept so labels can be written back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import orientation

OBLIQUE_TOLERANCE = 1e-3  # direction-cosine deviation (~0.06 degrees) tolerated as "straight"


def _tuple(values, cast=float) -> tuple:
    return tuple(cast(v) for v in values)


@dataclass(frozen=True)
class Geometry:
    """Geometry of a 3D volume in canonical ``(z, y, x)`` order.

    Build one with :meth:`from_source_affine` (readers) or :meth:`from_layer`
    (a layer without medseg metadata).

    Attributes:
        shape: canonical ``(z, y, x)`` shape.
        spacing: ``(sz, sy, sx)`` voxel size in mm (length of each canonical
            axis step in world space).
        origin: world ``(S, P, L)`` mm of canonical voxel ``(0, 0, 0)``.
        direction: 3x3 tuple, column ``c`` = unit direction of canonical axis
            ``c`` in ``(S, P, L)`` world; identity unless oblique.
        source_shape: spatial shape in the source file's voxel order.
        source_axes: ``source_axes[c]`` = source axis feeding canonical axis ``c``.
        source_flips: whether that source axis is reversed.
        source_affine_ras: 4x4 NIfTI affine (source index -> RAS mm); for
            DICOM/ITK sources the RAS equivalent of their LPS geometry.
        source_format: ``"nifti"``, ``"dicom"``, ``"nrrd"``, ``"mha"`` or ``"layer"``.
        source_path: the file/folder read, or None.
        source_header: JSON-safe extras (NIfTI qform/sform codes, DICOM series UID...).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...]
    source_shape: tuple[int, int, int]
    source_axes: tuple[int, int, int]
    source_flips: tuple[bool, bool, bool]
    source_affine_ras: tuple[tuple[float, ...], ...]
    source_format: str = "nifti"
    source_path: str | None = None
    source_header: dict = field(default_factory=dict, compare=False)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_source_affine(
        cls,
        affine_ras,
        source_shape,
        *,
        source_format: str,
        source_path=None,
        source_header: dict | None = None,
    ) -> "Geometry":
        """Geometry of a source array ``(i, j, k)`` whose NIfTI affine is ``affine_ras``."""
        affine_ras = np.asarray(affine_ras, dtype=float)
        if affine_ras.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {affine_ras.shape}")
        source_shape = _tuple(source_shape[:3], int)
        axes, flips = orientation.canonical_axes(orientation.RAS_TO_LPS @ affine_ras)
        world = orientation.world_affine_spl(affine_ras, source_shape, axes, flips)
        columns = world[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        direction = columns / spacing
        return cls(
            shape=tuple(source_shape[a] for a in axes),
            spacing=_tuple(spacing),
            origin=_tuple(world[:3, 3]),
            direction=tuple(_tuple(row) for row in direction),
            source_shape=source_shape,
            source_axes=_tuple(axes, int),
            source_flips=_tuple(flips, bool),
            source_affine_ras=tuple(_tuple(row) for row in affine_ras),
            source_format=source_format,
            source_path=None if source_path is None else str(source_path),
            source_header=dict(source_header or {}),
        )

    @classmethod
    def from_layer(cls, shape, scale, translate) -> "Geometry":
        """LPS-canonical geometry from a napari layer's ``scale``/``translate``.

        The layer's world is taken to be ``(S, P, L)`` mm as everywhere in this
        plugin; the source voxel order becomes ``(x, y, z)`` (NIfTI habit).
        """
        shape = _tuple(shape, int)
        if len(shape) != 3:
            raise ValueError(f"need a 3D (z, y, x) layer, got shape {shape}")
        sz, sy, sx = _tuple(scale[-3:])
        tz, ty, tx = _tuple(translate[-3:])
        affine_lps = np.array(
            [[sx, 0, 0, tx], [0, sy, 0, ty], [0, 0, sz, tz], [0, 0, 0, 1]], dtype=float
        )
        return cls.from_source_affine(
            orientation.RAS_TO_LPS @ affine_lps, shape[::-1], source_format="layer"
        )

    # ------------------------------------------------------------- properties
    @property
    def oblique(self) -> bool:
        """True when the canonical axes are not parallel to the patient axes."""
        return bool(np.abs(np.asarray(self.direction) - np.eye(3)).max() > OBLIQUE_TOLERANCE)

    @property
    def obliquity_degrees(self) -> float:
        """Largest angle (degrees) between a canonical axis and its patient axis."""
        cosines = np.clip(np.diag(np.asarray(self.direction)), -1.0, 1.0)
        return float(np.degrees(np.arccos(cosines)).max())

    def world_affine(self) -> np.ndarray:
        """4x4: canonical index ``(z, y, x, 1)`` -> world ``(S, P, L, 1)`` mm (true, obliquity included)."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.direction) * np.asarray(self.spacing)
        m[:3, 3] = self.origin
        return m

    def index_to_world(self, index) -> np.ndarray:
        """Canonical ``(..., 3)`` indices -> true world ``(S, P, L)`` mm."""
        index = np.asarray(index, dtype=float)
        m = self.world_affine()
        return index @ m[:3, :3].T + m[:3, 3]

    # ------------------------------------------------------------ conversions
    def from_source(self, array: np.ndarray) -> np.ndarray:
        """Source-ordered ``(i, j, k[, t])`` array -> canonical ``([t,] z, y, x)`` view."""
        if tuple(array.shape[:3]) != self.source_shape:
            raise ValueError(f"array shape {array.shape} does not match source shape {self.source_shape}")
        return orientation.from_source(array, self.source_axes, self.source_flips)

    def to_source(self, array: np.ndarray) -> np.ndarray:
        """Canonical ``(z, y, x)`` array -> source voxel order (a view)."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match canonical shape {self.shape}")
        return orientation.to_source(array, self.source_axes, self.source_flips)

    def to_dict(self) -> dict:
        """JSON-safe form (travels in ``layer.metadata["medseg"]["geometry"]``)."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": [list(r) for r in self.direction],
            "source_shape": list(self.source_shape),
            "source_axes": list(self.source_axes),
            "source_flips": list(self.source_flips),
            "source_affine_ras": [list(r) for r in self.source_affine_ras],
            "source_format": self.source_format,
            "source_path": self.source_path,
            "source_header": dict(self.source_header),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Geometry":
        try:
            return cls(
                shape=_tuple(data["shape"], int),
                spacing=_tuple(data["spacing"]),
                origin=_tuple(data["origin"]),
                direction=tuple(_tuple(r) for r in data["direction"]),
                source_shape=_tuple(data["source_shape"], int),
                source_axes=_tuple(data["source_axes"], int),
                source_flips=_tuple(data["source_flips"], bool),
                source_affine_ras=tuple(_tuple(r) for r in data["source_affine_ras"]),
                source_format=str(data.get("source_format", "nifti")),
                source_path=data.get("source_path"),
                source_header=dict(data.get("source_header") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a medseg geometry dict ({exc!r}); keys: {sorted(data)}") from None
