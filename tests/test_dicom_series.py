"""Choosing a DICOM series: listing, --series, the napari chooser, unreadable slice files named."""

from __future__ import annotations

import warnings
import numpy as np
import pytest

from napari_medseg.io import VolumeReadError, VolumeWarning, list_dicom_series, read_volume
from dicom_fixtures import write_dicom_series

@pytest.fixture
def two_series(tmp_path):
    rng = np.random.default_rng(3)
    write_dicom_series(tmp_path, rng.integers(0, 500, (6, 12, 14)), "1.2.826.0.1.11", description="big")
    write_dicom_series(tmp_path, rng.integers(0, 500, (3, 12, 14)), "1.2.826.0.1.22", step=(0.0, 0.0, 4.0),
                       description="small")
    return tmp_path


def test_listing_gives_uid_description_slices_spacing(two_series):
    big, small = list_dicom_series(two_series)
    assert (big.uid, big.description, big.num_files) == ("1.2.826.0.1.11", "big", 6)
    assert (small.uid, small.description, small.num_files) == ("1.2.826.0.1.22", "small", 3)
    assert big.spacing == pytest.approx((0.8, 0.9, 2.5)) and small.spacing == pytest.approx((0.8, 0.9, 4.0))
    assert small.spacing_text() == "0.8 x 0.9 x 4 mm"


def test_series_by_uid_or_index(two_series):
    assert read_volume(two_series, series_uid="1").array.shape[0] == 3
    assert read_volume(two_series, series_uid="1.2.826.0.1.22").array.shape[0] == 3
    with pytest.raises(VolumeReadError, match=r"series '5' is not in .*index 0\.\.1.*\[1\] 1\.2\.826\.0\.1\.22"):
        read_volume(two_series, series_uid="5")


def test_unreadable_slice_file_is_named(two_series):
    victim = sorted(two_series.glob("1.2.826.0.1.11_*.dcm"))[2]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated mid-header
    (two_series / "notes.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"junk" * 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(two_series, series_uid="1.2.826.0.1.11")
    messages = [str(w.message) for w in caught if issubclass(w.category, VolumeWarning)]
    named = [m for m in messages if "unreadable DICOM file" in m]
    assert named and victim.name in named[0] and "notes.dcm" in named[0]
    assert vol.array.shape[0] == 5


def test_finetune_and_view_take_series():
    import argparse

    from napari_medseg.commands import finetune, view

    parsers = {}
    for module in (finetune, view):
        parsers[module] = argparse.ArgumentParser()
        module.add_arguments(parsers[module])
    assert parsers[view].parse_args(["d", "--series", "1"]).series == "1"
    ft = parsers[finetune].parse_args(["--image", "d", "--labels", "l.nii.gz", "--slices", "1", "--model", "dcaunet",
                                       "-o", "x.safetensors", "--series", "1.2.3"])
    assert ft.series == "1.2.3"


def test_finetune_reads_the_chosen_series(two_series, tmp_path):
    from napari_medseg.commands.finetune import load_pair
    from napari_medseg.io import write_labels

    small = read_volume(two_series, series_uid="1")
    labels = write_labels(np.ones(small.array.shape, np.uint8), tmp_path / "l.nii.gz", small.geometry)
    image, _ = load_pair(str(two_series), str(labels), None, "1")
    assert image.array.shape == small.array.shape
    with pytest.raises(Exception, match="not on the image's grid"):
        load_pair(str(two_series), str(labels), None, None)  # the largest series is another grid


# ------------------------------------------------------------ napari
def test_chooser_dialog_lists_series(two_series, qtbot, tmp_path_factory):
    from napari_medseg.widgets.series_chooser import COLUMNS, SeriesChooser

    series = list_dicom_series(two_series)
    dialog = SeriesChooser(two_series, series)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(dialog.isVisible, timeout=3000)
    cells = [[dialog.table.item(r, c).text() for c in range(len(COLUMNS))] for r in range(dialog.table.rowCount())]
    assert cells == [["0", "big", "CT", "6", "0.8 x 0.9 x 2.5 mm", "1.2.826.0.1.11"],
                     ["1", "small", "CT", "3", "0.8 x 0.9 x 4 mm", "1.2.826.0.1.22"]]
    assert dialog.chosen() is series[0]  # the largest is preselected
    dialog.table.selectRow(1)
    assert dialog.chosen() is series[1]
    assert dialog.grab().save(str(tmp_path_factory.getbasetemp() / "series_chooser.png"))


def test_viewer_open_asks_which_series(two_series, make_napari_viewer, monkeypatch):
    from napari_medseg.widgets import series_chooser

    viewer = make_napari_viewer(show=True)
    asked = []

    def pick_small(folder, series):
        asked.append([s.uid for s in series])
        return series[1]

    monkeypatch.setattr(series_chooser, "choose_series", pick_small)
    layers = viewer.open(str(two_series), plugin="napari-medseg")
    assert asked == [["1.2.826.0.1.11", "1.2.826.0.1.22"]]
    assert layers[0].data.shape[0] == 3  # the chosen (small) series, not the largest

    monkeypatch.setattr(series_chooser, "choose_series", lambda folder, series: None)  # cancel
    before = len(viewer.layers)
    viewer.open(str(two_series), plugin="napari-medseg")
    assert len(viewer.layers) == before


def test_hidden_viewer_never_blocks_on_a_dialog(two_series, make_napari_viewer, monkeypatch):
    from napari_medseg.widgets import series_chooser

    viewer = make_napari_viewer(show=False)
    monkeypatch.setattr(series_chooser, "choose_series", lambda *a: pytest.fail("dialog shown in a hidden viewer"))
    with pytest.warns(VolumeWarning, match="holds 2 DICOM series.*--series"):
        layers = viewer.open(str(two_series), plugin="napari-medseg")
    assert layers[0].data.shape[0] == 6
