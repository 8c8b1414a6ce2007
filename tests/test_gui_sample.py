"""GUI tests through the napari manifest (run under ``xvfb-run -a``).

The screenshot test renders the sample's axial slice and checks where the
liver and spleen colours land on screen: radiological convention puts the
liver (patient right) on the left half and the spleen on the right half.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_medseg.labels import SYNAPSE

pytestmark = pytest.mark.gui

LIVER, SPLEEN = 5, 7
SCREENSHOT_DIR = os.environ.get("MEDSEG_SCREENSHOT_DIR")  # set to keep the PNGs


def _rgb255(value):
    return np.round(np.asarray(SYNAPSE.colors[value][:3]) * 255)


def _colour_mask(shot, value, tol=6):
    return np.all(np.abs(shot[..., :3].astype(float) - _rgb255(value)) <= tol, axis=-1)


def _axial_slice_with(labels_layer, values):
    """Canonical z index holding the most voxels of every value in ``values``."""
    data = np.asarray(labels_layer.data)
    counts = np.min([(data == v).sum(axis=(1, 2)) for v in values], axis=0)
    return int(np.argmax(counts))


@pytest.fixture
def sample_viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)  # a hidden viewer's canvas renders nothing
    layers = viewer.open_sample("napari-medseg", "abdominal_ct")
    assert [layer.name for layer in layers] == ["abdominal CT", "organs"]
    return viewer


def test_sample_layers_are_aligned_in_world(sample_viewer):
    image, labels = sample_viewer.layers["abdominal CT"], sample_viewer.layers["organs"]
    assert type(image).__name__ == "Image" and type(labels).__name__ == "Labels"
    np.testing.assert_allclose(image.extent.world, labels.extent.world)
    for idx in [(0, 0, 0), (29, 100, 121), (15, 40, 60)]:
        np.testing.assert_allclose(image.data_to_world(idx), labels.data_to_world(idx))
    # world is LPS mm in (S, P, L): voxel 0 world equals the NIfTI RAS corner converted
    ras = nib.load(str(Path(labels.metadata["medseg"]["source_path"]))).affine
    assert image.contrast_limits == [-160.0, 240.0]
    assert labels.metadata["medseg"]["label_set"]["name"] == "synapse"
    assert np.isclose(image.translate[0], ras[2, 3])  # S of slice 0 = RAS z of k=0


def test_screenshot_liver_left_spleen_right(sample_viewer, tmp_path):
    viewer = sample_viewer
    image, labels = viewer.layers["abdominal CT"], viewer.layers["organs"]
    z = _axial_slice_with(labels, [LIVER, SPLEEN])
    viewer.dims.set_point(0, labels.data_to_world((z, 0, 0))[0])
    viewer.reset_view()
    # pure label colours for the measurement: no CT underneath, fully opaque
    image.visible = False
    labels.opacity = 1.0
    shot = viewer.screenshot(canvas_only=True, flash=False)
    width = shot.shape[1]
    cols = np.arange(width)[None, :]
    liver, spleen = _colour_mask(shot, LIVER), _colour_mask(shot, SPLEEN)
    assert liver.sum() > 500 and spleen.sum() > 100, (liver.sum(), spleen.sum())
    liver_left = (liver & (cols < width / 2)).sum() / liver.sum()
    spleen_right = (spleen & (cols >= width / 2)).sum() / spleen.sum()
    # the liver's left lobe crosses the midline (~15% of its area on this slice)
    assert liver_left > 0.75, liver_left
    assert spleen_right > 0.9, spleen_right
    assert (cols * liver).sum() / liver.sum() < width / 2 < (cols * spleen).sum() / spleen.sum()
    image.visible, labels.opacity = True, 0.6
    if SCREENSHOT_DIR:
        viewer.screenshot(str(Path(SCREENSHOT_DIR) / "axial_canvas.png"), canvas_only=True, flash=False)


def test_screenshot_anterior_at_top(sample_viewer):
    viewer = sample_viewer
    image, labels = viewer.layers["abdominal CT"], viewer.layers["organs"]
    z = _axial_slice_with(labels, [8, 3])  # stomach and left kidney
    viewer.dims.set_point(0, labels.data_to_world((z, 0, 0))[0])
    viewer.reset_view()
    image.visible, labels.opacity = False, 1.0
    shot = viewer.screenshot(canvas_only=True, flash=False)
    rows = np.arange(shot.shape[0])
    stomach_row = rows[_colour_mask(shot, 8).any(axis=1)].mean()
    kidney_row = rows[_colour_mask(shot, 3).any(axis=1)].mean()
    assert stomach_row < kidney_row


def test_hover_status_names_the_organ(sample_viewer):
    labels = sample_viewer.layers["organs"]
    idx = tuple(int(v) for v in np.argwhere(np.asarray(labels.data) == LIVER)[0])
    sample_viewer.dims.set_point(0, labels.data_to_world(idx)[0])  # status reads the shown slice
    status = labels.get_status(labels.data_to_world(idx), world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    assert "liver" in text, text


def test_legend_lists_the_eight_organs(sample_viewer, make_napari_viewer):
    viewer = sample_viewer
    _, legend = viewer.window.add_plugin_dock_widget("napari-medseg", "Organ legend")
    expected = [SYNAPSE.names[v] for v in range(1, 9)]
    assert legend.organ_names() == expected
    assert [legend.list.item(i).text().split("  ")[0] for i in range(legend.list.count())] == expected
    # follows the selection: a Labels layer with another label set
    from napari_medseg.labels import ACDC

    other = viewer.add_labels(
        np.zeros((2, 3, 3), np.uint8), name="heart", metadata={"medseg": {"label_set": ACDC.to_dict()}}
    )
    viewer.layers.selection.active = other
    assert legend.organ_names() == ["right ventricle", "myocardium", "left ventricle"]
    viewer.layers.selection.active = viewer.layers["organs"]
    assert legend.organ_names() == expected
    # clicking a row picks that label for painting
    legend._on_item_clicked(legend.list.item(4))
    assert viewer.layers["organs"].selected_label == 5


def test_window_screenshot_shows_legend_dock(sample_viewer, qtbot):
    """The README picture: axial CT, organ overlay and the legend dock, all visible."""
    viewer = sample_viewer
    dock, legend = viewer.window.add_plugin_dock_widget("napari-medseg", "Organ legend")
    viewer.window._qt_window.resize(1400, 860)
    labels = viewer.layers["organs"]
    labels.opacity = 0.55
    z = _axial_slice_with(labels, range(1, 9))  # all eight organs on one slice
    viewer.dims.set_point(0, labels.data_to_world((z, 0, 0))[0])
    qtbot.waitUntil(lambda: legend.isVisible() and legend.width() > 100, timeout=3000)
    qtbot.wait(50)  # let the canvas take its final size before fitting the view
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    # the legend's liver swatch is drawn in the dock, outside the canvas
    canvas = viewer.window._qt_viewer.canvas.native
    right_of_canvas = canvas.mapTo(viewer.window._qt_window, canvas.rect().topRight()).x()
    assert _colour_mask(shot[:, right_of_canvas + 5 :], LIVER, tol=3).sum() > 20
    if SCREENSHOT_DIR:
        viewer.screenshot(str(Path(SCREENSHOT_DIR) / "window.png"), canvas_only=False, flash=False)


def test_open_with_plugin_nifti_and_dicom(make_napari_viewer, sample_ct, sample_labels, dicom_dir):
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(sample_ct), plugin="napari-medseg")
    (seg,) = viewer.open(str(sample_labels), plugin="napari-medseg")
    assert type(seg).__name__ == "Labels" and seg.colormap.color_dict[LIVER] is not None
    np.testing.assert_allclose(ct.extent.world, seg.extent.world)
    (dcm,) = viewer.open(str(dicom_dir), plugin="napari-medseg")  # the same CT written as a DICOM series
    assert dcm.data.shape == ct.data.shape == (30, 101, 122)
    np.testing.assert_allclose(dcm.scale, ct.scale, atol=1e-5)
    np.testing.assert_allclose(dcm.extent.world, ct.extent.world, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(dcm.data), np.asarray(ct.data))


def test_layer_save_writes_source_geometry(make_napari_viewer, sample_labels, tmp_path):
    viewer = make_napari_viewer()
    (seg,) = viewer.open(str(sample_labels), plugin="napari-medseg")
    seg.data[0, 0, 0] = 2  # an edit
    out = tmp_path / "edited.nii.gz"
    seg.save(str(out), plugin="napari-medseg")
    src, dst = nib.load(str(sample_labels)), nib.load(str(out))
    np.testing.assert_array_equal(dst.affine, src.affine)
    expected = np.asanyarray(src.dataobj).copy()
    # canonical (0, 0, 0) is the source voxel at the R, A, I corner: i = max, j = max, k = 0
    expected[-1, -1, 0] = 2
    np.testing.assert_array_equal(np.asanyarray(dst.dataobj), expected)
    assert (tmp_path / "edited.json").exists()
    # without naming the plugin, napari picks it from the .nii.gz extension
    seg.save(str(tmp_path / "again.nii.gz"))
    np.testing.assert_array_equal(nib.load(str(tmp_path / "again.nii.gz")).affine, src.affine)


def test_viewer_runs_on_the_requested_qt_binding(make_napari_viewer):
    """napari's main window is built from the one binding qtpy picked, and that is the one asked
    for with $QT_API (conftest passes it on as $PYTEST_QT_API; CI runs the GUI tests with QT_API=pyqt6)."""
    import qtpy

    viewer = make_napari_viewer()
    bindings = {cls.__module__.split(".")[0] for cls in type(viewer.window._qt_window).__mro__}
    assert qtpy.API_NAME in bindings, (qtpy.API_NAME, bindings)
    assert not ({"PyQt5", "PyQt6", "PySide2", "PySide6"} - {qtpy.API_NAME}) & bindings, bindings
    requested = os.environ.get("PYTEST_QT_API")
    if requested:
        assert qtpy.API_NAME.lower() == requested.lower(), f"asked for {requested}, napari runs on {qtpy.API_NAME}"
