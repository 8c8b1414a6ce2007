"""Fixtures and helpers shared by the Retrain dock's tests (import them; test modules never import each other).

``retrain_dock``: the dock on the packaged sample CT with a tiny DCAU-Net checkpoint's
prediction as its labels layer; ``scratch_dock``: the dock with a new, empty labels
layer and no checkpoint.  ``paint_slice`` paints with napari's brush (so the paint
event fires); ``run_and_wait`` fine-tunes and waits for the worker to finish.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

#: Set to a folder to keep screenshots of the docks as the tests leave them.
SCREENSHOT_DIR = os.environ.get("MEDSEG_SCREENSHOT_DIR")


@pytest.fixture
def retrain_dock(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    """``(viewer, widget, labels, info)``: the dock, its labels layer (a tiny model's prediction) and that
    checkpoint's ``CheckpointInfo``; checkpoints and the store go to ``tmp_path / "data"``."""
    import torch

    from napari_medseg.checkpoint import save_checkpoint
    from napari_medseg.inference import run_segmentation, segment_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.models import TINY_CONFIGS, build_model
    from napari_medseg.preprocess import Preprocessing

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    torch.manual_seed(0)
    model = build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"])
    info = save_checkpoint(tmp_path / "base.safetensors", model, label_set=SYNAPSE,
                           preprocessing=Preprocessing(modality="ct", resize_policy="native"))
    viewer = make_napari_viewer(show=True)
    image, _ = viewer.open_sample("napari-medseg", "abdominal_ct")
    viewer.layers.remove("organs")
    prediction = run_segmentation(segment_volume(image.data, [(model.eval(), info)], device="cpu")).labels
    labels = viewer.add_labels(prediction, name="abdominal CT labels", scale=image.scale, translate=image.translate,
                               metadata={"medseg": {**image.metadata["medseg"], "checkpoints": [str(info.path)],
                                                    "label_set": SYNAPSE.to_dict()}})
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    widget.image_combo.setCurrentText(image.name)
    widget.labels_combo.setCurrentText(labels.name)
    return viewer, widget, labels, info


@pytest.fixture
def scratch_dock(make_napari_viewer, tmp_path, monkeypatch):
    """``(image, widget, labels)``: the dock on the sample CT (no checkpoint) with a new, empty labels layer."""
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    viewer = make_napari_viewer()
    image, _ = viewer.open_sample("napari-medseg", "abdominal_ct")
    viewer.layers.remove("organs")
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    widget.image_combo.setCurrentText(image.name)
    widget.new_labels_btn.click()
    return image, widget, viewer.layers[f"{image.name} labels"]


def paint_slice(labels, z, value=5):
    """Two brush dabs of ``value`` on slice ``z`` (napari's paint event fires); asserts the slice changed."""
    before = np.array(labels.data[z])
    labels.paint((z, 50, 40), value)
    labels.paint((z, 52, 44), value)
    assert not np.array_equal(before, labels.data[z])


def run_and_wait(widget, qtbot, timeout=120_000):
    """Press Fine-tune and wait until its worker has finished."""
    widget.fine_tune()
    assert widget.worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)
