"""Per-organ statistics: volumes, mean intensity and mean uncertainty (napari_medseg.organ_stats)."""

import math

import numpy as np
import pytest

from napari_medseg.labels import SYNAPSE
from napari_medseg.organ_stats import format_least_certain, format_table, least_certain, organ_stats


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


def test_least_certain_ranks_found_organs_only():
    labels, image, unc = _case()
    rows = organ_stats(labels, (1, 1, 1), SYNAPSE, image, uncertainty=unc)
    assert [r.name for r in least_certain(rows)] == ["liver", "aorta"]  # 0.40, 0.25; empty organs are not ranked
    assert [r.name for r in least_certain(rows, n=1)] == ["liver"]
    assert least_certain(organ_stats(labels, (1, 1, 1), SYNAPSE, image)) == []  # no uncertainty, no ranking
    assert format_least_certain(rows) == "liver 0.40, aorta 0.25"
    assert format_least_certain(organ_stats(labels, (1, 1, 1), SYNAPSE, image)) == ""


def test_uncertainty_on_another_grid_is_refused():
    labels, image, unc = _case()
    with pytest.raises(ValueError, match="uncertainty shape"):
        organ_stats(labels, (1, 1, 1), SYNAPSE, uncertainty=unc[:2])


def test_focus_slice_is_where_the_organ_is_least_certain_else_its_largest_section():
    labels, image, unc = _case()
    with_unc = {r.name: r for r in organ_stats(labels, (1, 1, 1), SYNAPSE, uncertainty=unc)}
    plain = {r.name: r for r in organ_stats(labels, (1, 1, 1), SYNAPSE)}
    assert with_unc["aorta"].focus_slice == plain["aorta"].focus_slice == 2  # its only slice
    unc[0, :2, :2] = 0.99  # liver: 4 x 0.99 on slice 0 against 6 x 0.6 on slice 1
    assert {r.name: r for r in organ_stats(labels, (1, 1, 1), SYNAPSE, uncertainty=unc)}["liver"].focus_slice == 0
    assert plain["liver"].focus_slice == 1  # its largest section (6 voxels against 4)
    assert with_unc["spleen"].focus_slice is None and plain["spleen"].focus_slice is None


def test_stats_are_the_same_slab_by_slab():
    """A volume larger than one slab: the per-slab bincounts add up to the whole volume's."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, size=(70, 256, 256), dtype=np.uint8)  # 64 slices of 256^2 per slab
    image = rng.normal(size=labels.shape).astype(np.float32)
    unc = rng.random(labels.shape, dtype=np.float32)
    rows = organ_stats(labels, (1, 1, 1), SYNAPSE, image, uncertainty=unc)
    for r in rows:
        inside = labels == r.value
        assert r.voxels == inside.sum()
        assert r.mean_intensity == pytest.approx(image[inside].mean(dtype=np.float64), rel=1e-6)
        assert r.mean_uncertainty == pytest.approx(unc[inside].mean(dtype=np.float64), rel=1e-6)
        per_slice = np.where(inside, unc, 0).sum(axis=(1, 2), dtype=np.float64)
        assert r.focus_slice == int(np.argmax(per_slice))


def test_rows_survive_json_with_nan_as_null():
    import json

    from napari_medseg.organ_stats import rows_from_json, rows_to_json

    labels, image, unc = _case()
    rows = organ_stats(labels, (1, 1, 1), SYNAPSE, image, uncertainty=unc)
    text = json.dumps(rows_to_json(rows), allow_nan=False)  # strict JSON: NaN would be refused
    again = rows_from_json(json.loads(text))
    assert [r.name for r in least_certain(again)] == [r.name for r in least_certain(rows)]
    spleen = next(r for r in again if r.name == "spleen")
    assert math.isnan(spleen.mean_uncertainty) and spleen.focus_slice is None
    assert rows_from_json(None) is None and rows_from_json([{"nope": 1}]) is None  # older or edited files
