"""Per-organ volume (mL), mean intensity and mean uncertainty of a label map (Qt-free)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from napari_medseg.labels import LabelSet


@dataclass(frozen=True)
class OrganStat:
    """One row of the organ table.

    ``volume_ml`` = voxel count x prod(spacing mm) / 1000;
    ``mean_intensity`` is in image units (HU for CT), ``nan`` without an image
    or for an empty organ; ``mean_uncertainty`` is the mean of the per-voxel
    uncertainty (normalised entropy, 0 = certain .. 1 = uniform) over the organ's
    voxels, ``nan`` without one or for an empty organ.  ``focus_slice`` is the axial
    slice (index along z) to look at first: the one holding the largest sum of the organ's
    uncertainty when it is known, else the organ's largest section; ``None`` when empty.
    """

    value: int
    name: str
    voxels: int
    volume_ml: float
    mean_intensity: float
    mean_uncertainty: float = float("nan")
    focus_slice: int | None = None


def organ_stats(
    labels: np.ndarray,
    spacing,
    label_set: LabelSet,
    image: np.ndarray | None = None,
    include_empty: bool = True,
    uncertainty: np.ndarray | None = None,
) -> list[OrganStat]:
    """Statistics of every foreground label of ``label_set``.

    Args:
        labels: integer ``(z, y, x)`` label map.
        spacing: ``(sz, sy, sx)`` voxel size in mm.
        label_set: names of the labels (0 = background is skipped).
        image: optional ``(z, y, x)`` image on the same grid for mean intensities.
        include_empty: keep organs with zero voxels (volume 0.0 mL).
        uncertainty: optional ``(z, y, x)`` per-voxel uncertainty on the same grid
            (``SegmentationResult.uncertainty``) for each organ's mean.

    Works slab by slab, so no volume-sized float temporaries are made.
    """
    labels = np.asarray(labels)
    for what, other in (("image", image), ("uncertainty", uncertainty)):
        if other is not None and np.shape(other) != labels.shape:
            raise ValueError(f"{what} shape {np.shape(other)} differs from labels shape {labels.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != labels.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {labels.ndim}D label map")
    n = max(label_set.num_classes, int(labels.max(initial=0)) + 1)
    depth = labels.shape[0]
    counts = np.zeros((depth, n), np.int64)  # per slice, so each organ's focus slice can be found
    sums = np.zeros(n, np.float64)
    unc_sums = np.zeros((depth, n), np.float64)
    step = max(1, (1 << 22) // max(1, int(np.prod(labels.shape[1:]))))
    for start in range(0, depth, step):
        slab = labels[start : start + step]
        # one bincount for the whole slab: label value offset by its slice's row
        index = (slab.astype(np.intp) + n * np.arange(slab.shape[0], dtype=np.intp)[:, None, None]).ravel()
        size = slab.shape[0] * n
        counts[start : start + step] = np.bincount(index, minlength=size).reshape(-1, n)
        if image is not None:
            img = np.asarray(image[start : start + step], dtype=np.float64).ravel()
            sums += np.bincount(index, weights=img, minlength=size).reshape(-1, n).sum(0)
        if uncertainty is not None:
            unc = np.asarray(uncertainty[start : start + step], dtype=np.float64).ravel()
            unc_sums[start : start + step] = np.bincount(index, weights=unc, minlength=size).reshape(-1, n)
    # where to look first: the slice holding most of the organ's uncertainty, else its largest section
    focus = np.argmax(unc_sums if uncertainty is not None else counts, axis=0)
    totals, unc_totals = counts.sum(0), unc_sums.sum(0)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for value, name in label_set.organs.items():
        c = int(totals[value]) if value < n else 0
        if c == 0 and not include_empty:
            continue
        mean = float(sums[value] / c) if (image is not None and c) else float("nan")
        unc = float(unc_totals[value] / c) if (uncertainty is not None and c) else float("nan")
        rows.append(OrganStat(value, name, c, c * voxel_ml, mean, unc, int(focus[value]) if c else None))
    return rows


def rows_to_json(rows: list[OrganStat]) -> list[dict]:
    """JSON-safe dicts of ``rows`` (``nan`` becomes ``None``), e.g. for a case's ``case.json``."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(row).items()}
            for row in rows]


def rows_from_json(data) -> list[OrganStat] | None:
    """:func:`rows_to_json`'s inverse; ``None`` for anything that is not such a list (an older or edited file)."""
    if not isinstance(data, list):
        return None
    try:
        return [OrganStat(**{k: (float("nan") if v is None and k in ("mean_intensity", "mean_uncertainty") else v)
                             for k, v in row.items()}) for row in data]
    except (TypeError, AttributeError):
        return None


def has_uncertainty(rows: list[OrganStat]) -> bool:
    """Whether any row carries a mean uncertainty (the table then shows that column)."""
    return any(not np.isnan(r.mean_uncertainty) for r in rows)


def least_certain(rows: list[OrganStat], n: int = 3) -> list[OrganStat]:
    """The ``n`` found organs (voxels > 0) with the highest mean uncertainty, least certain first: the ones to
    check first.  Empty when the rows carry no uncertainty."""
    found = [r for r in rows if r.voxels > 0 and not np.isnan(r.mean_uncertainty)]
    return sorted(found, key=lambda r: -r.mean_uncertainty)[:n]


def format_least_certain(rows: list[OrganStat], n: int = 3) -> str:
    """``"spleen 0.64, kidney left 0.58, stomach 0.49"`` (:func:`least_certain`); empty without uncertainty."""
    return ", ".join(f"{r.name} {r.mean_uncertainty:.2f}" for r in least_certain(rows, n))


def format_number(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, or "-" for nan."""
    return "-" if np.isnan(value) else f"{value:.{digits}f}"


def format_table(rows: list[OrganStat], unit: str = "HU") -> str:
    """Plain-text table (for the CLI); an ``uncertainty`` column when the rows have one."""
    uncertain = has_uncertainty(rows)
    lines = [f"{'organ':<18}{'volume (mL)':>12}{'mean (' + unit + ')':>12}" + (f"{'uncertainty':>13}" if uncertain else "")]
    for r in rows:
        line = f"{r.name:<18}{r.volume_ml:>12.1f}{format_number(r.mean_intensity, 1):>12}"
        lines.append(line + (f"{format_number(r.mean_uncertainty, 2):>13}" if uncertain else ""))
    return "\n".join(lines)
