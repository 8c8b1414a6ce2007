"""PNG overlays of labels on CT/MR slices (for the demo and reports; no plotting library)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from napari_medseg.labels import LabelSet


def grey(slice_: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``(H, W)`` raw values -> ``(H, W, 3)`` float RGB in [0, 1] through a window."""
    lo, hi = window
    g = np.clip((slice_.astype(np.float32) - lo) / (hi - lo), 0, 1)
    return np.repeat(g[..., None], 3, axis=2)


def blend(rgb: np.ndarray, labels: np.ndarray, label_set: LabelSet, alpha: float = 0.45) -> np.ndarray:
    """Colour each labelled pixel with its organ colour at ``alpha`` opacity."""
    out = rgb.copy()
    for value, color in label_set.colors.items():
        if value == 0:
            continue
        mask = labels == value
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color[:3])
    return out


def overlay_grid(
    image: np.ndarray,
    columns: Sequence[np.ndarray],
    slices: Sequence[int],
    label_set: LabelSet,
    window: tuple[float, float] = (-160.0, 240.0),
    zoom: int = 2,
) -> np.ndarray:
    """uint8 RGB grid: one row per slice; image alone, then one overlay per labels volume in ``columns``.

    Args:
        image: raw ``(z, y, x)`` volume; slices are shown as stored (radiological for canonical arrays).
        columns: labels volumes ``(z, y, x)`` to overlay (e.g. reference, prediction).
        slices: axial indices, one row each.
    """
    rows = []
    for z in slices:
        base = grey(image[z], window)
        tiles = [base] + [blend(base, lab[z], label_set) for lab in columns]
        gap = np.ones((base.shape[0], 2, 3))
        rows.append(np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1))
    grid = np.concatenate([r for row in rows for r in (row, np.ones((2, row.shape[1], 3)))][:-1], axis=0)
    grid = np.kron(grid, np.ones((zoom, zoom, 1))) if zoom > 1 else grid
    return (grid * 255).round().astype(np.uint8)


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 RGB array as PNG (through imageio, which scikit-image installs)."""
    import imageio.v3 as iio

    path = Path(path)
    iio.imwrite(path, rgb)
    return path
