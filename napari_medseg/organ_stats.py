"""Per-organ volume (mL) and mean intensity of a label map (Qt-free)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_medseg.labels import LabelSet


@dataclass(frozen=True)
class OrganStat:
    """One row of the organ table.

    ``volume_ml`` = voxel count x prod(spacing mm) / 1000;
    ``mean_intensity`` is in image units (HU for CT), ``nan`` without an image
    or for an empty organ.
    """

    value: int
    name: str
    voxels: int
    volume_ml: float
    mean_intensity: float


def organ_stats(
    labels: np.ndarray,
    spacing,
    label_set: LabelSet,
    image: np.ndarray | None = None,
    include_empty: bool = True,
) -> list[OrganStat]:
    """Statistics of every foreground label of ``label_set``.

    Args:
        labels: integer ``(z, y, x)`` label map.
        spacing: ``(sz, sy, sx)`` voxel size in mm.
        label_set: names of the labels (0 = background is skipped).
        image: optional ``(z, y, x)`` image on the same grid for mean intensities.
        include_empty: keep organs with zero voxels (volume 0.0 mL).

    Works slab by slab, so no volume-sized float temporaries are made.
    """
    labels = np.asarray(labels)
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from labels shape {labels.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != labels.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {labels.ndim}D label map")
    n = max(label_set.num_classes, int(labels.max(initial=0)) + 1)
    counts = np.zeros(n, np.int64)
    sums = np.zeros(n, np.float64)
    step = max(1, (1 << 22) // max(1, int(np.prod(labels.shape[1:]))))
    for start in range(0, labels.shape[0], step):
        lab = labels[start : start + step].ravel().astype(np.intp, copy=False)
        counts += np.bincount(lab, minlength=n)
        if image is not None:
            img = np.asarray(image[start : start + step], dtype=np.float64).ravel()
            sums += np.bincount(lab, weights=img, minlength=n)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for value, name in label_set.organs.items():
        c = int(counts[value]) if value < n else 0
        if c == 0 and not include_empty:
            continue
        mean = float(sums[value] / c) if (image is not None and c) else float("nan")
        rows.append(OrganStat(value, name, c, c * voxel_ml, mean))
    return rows


def format_table(rows: list[OrganStat], unit: str = "HU") -> str:
    """Plain-text table (for the CLI)."""
    lines = [f"{'organ':<18}{'volume (mL)':>12}{'mean (' + unit + ')':>12}"]
    for r in rows:
        mean = "-" if np.isnan(r.mean_intensity) else f"{r.mean_intensity:.1f}"
        lines.append(f"{r.name:<18}{r.volume_ml:>12.1f}{mean:>12}")
    return "\n".join(lines)
