"""Per-organ statistics: volumes, mean intensity and mean uncertainty (napari_medseg.organ_stats)."""

import math

import numpy as np
import pytest

from napari_medseg.labels import SYNAPSE
from napari_medseg.organ_stats import format_table, organ_stats


def _case():
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[0, :2, :2] = 5  # liver: 4 voxels, then 6 more on the next slab
    labels[1, :3, :2] = 5
    labels[2, 4:, 4:] = 1  # aorta: 16 voxels
    image = np.full(labels.shape, -100.0)
    image[labels == 5] = 60.0
    unc = np.zeros(labels.shape, np.float16)
    unc[0, :2, :2] = 0.1
    unc[1, :3, :2] = 0.6
    unc[2, 4:, 4:] = 0.25
    return labels, image, unc


def test_mean_uncertainty_is_the_mean_inside_each_organ():
    labels, image, unc = _case()
    rows = {r.name: r for r in organ_stats(labels, (2.0, 1.0, 1.0), SYNAPSE, image, uncertainty=unc)}
    assert rows["liver"].voxels == 10 and rows["liver"].volume_ml == pytest.approx(10 * 2 / 1000)
    assert rows["liver"].mean_intensity == pytest.approx(60.0)
    # 4 voxels at 0.1 and 6 at 0.6 (float16 values, so compare loosely)
    assert rows["liver"].mean_uncertainty == pytest.approx((4 * 0.1 + 6 * 0.6) / 10, abs=1e-3)
    assert rows["aorta"].mean_uncertainty == pytest.approx(0.25, abs=1e-3)
    assert math.isnan(rows["spleen"].mean_uncertainty)  # empty organ


def test_without_uncertainty_the_table_has_no_such_column():
    labels, image, unc = _case()
    plain = format_table(organ_stats(labels, (1, 1, 1), SYNAPSE, image))
    assert "uncertainty" not in plain
    assert all(math.isnan(r.mean_uncertainty) for r in organ_stats(labels, (1, 1, 1), SYNAPSE, image))
    table = format_table(organ_stats(labels, (1, 1, 1), SYNAPSE, image, uncertainty=unc)).splitlines()
    assert table[0].split()[-1] == "uncertainty"
    liver = next(line for line in table if line.startswith("liver"))
    assert liver.split()[-1] == "0.40"
    spleen = next(line for line in table if line.startswith("spleen"))
    assert spleen.split()[-1] == "-"


def test_uncertainty_on_another_grid_is_refused():
    labels, image, unc = _case()
    with pytest.raises(ValueError, match="uncertainty shape"):
        organ_stats(labels, (1, 1, 1), SYNAPSE, uncertainty=unc[:2])
