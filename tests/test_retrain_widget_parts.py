"""The Retrain dock's Qt-free parts: training labels from scribbles, throttled progress."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.retrain.loop import RetrainProgress
from napari_medseg.scribbles import ScribbleWarning
from napari_medseg.widgets._preview import LivePreview, throttled
from napari_medseg.widgets._scribble_mode import training_labels

K = 3  # organs; background strokes are painted with K + 1 = 4


def test_training_labels_mark_unpainted_pixels_255():
    labels = np.full((4, 6, 6), 2, np.uint8)
    scribbles = np.zeros_like(labels)
    scribbles[1, 0, :3] = 1  # organ stroke on an unlocked slice
    scribbles[1, 5, :] = K + 1  # background stroke
    scribbles[2, 2, 2] = 3  # scribbled but also reviewed: the full slice wins
    array, slices, scribbled = training_labels(labels, [2, 3], scribbles, K)
    assert slices == [1, 2, 3] and scribbled == [1]
    np.testing.assert_array_equal(array[[0, 2, 3]], labels[[0, 2, 3]])
    assert (array[1, 0, :3] == 1).all() and (array[1, 5] == 0).all()
    assert (array[1, 1:5] == 255).all() and int((array[1] != 255).sum()) == 3 + 6
    assert labels[1, 1, 1] == 2  # the layer's data is not modified


def test_training_labels_bad_input():
    labels = np.zeros((2, 5, 5), np.uint8)
    scribbles = np.zeros_like(labels)
    scribbles[0, 1, 1] = 2
    with pytest.warns(ScribbleWarning, match="no background stroke"):
        training_labels(labels, [], scribbles, K)
    with pytest.raises(ValueError, match="not aligned|shape"):
        training_labels(labels, [], np.zeros((2, 5, 4), np.uint8), K)
    scribbles[0, 0, 0] = K + 2
    with pytest.raises(ValueError, match="outside 0..4"):
        training_labels(labels, [], scribbles, K)
    assert training_labels(labels, [1], None, K)[1:] == ([1], [])


def _progress(n_steps, t_step):
    """A fake retrain generator: n fine-tune steps, t_step apart on a fake clock, then one segment report."""
    clock = {"t": 0.0}

    def gen():
        for step in range(1, n_steps + 1):
            clock["t"] += t_step
            yield RetrainProgress("fine-tune", step / n_steps, f"step {step}", loss=1.0 / step, step=step)
        yield RetrainProgress("segment", 1.0, "segmenting")
        return "result"

    return gen(), lambda: clock["t"]


def test_throttled_batches_losses_and_keeps_phase_changes():
    gen, clock = _progress(100, 0.02)  # 50 steps/s for 2 s
    out = throttled(gen, interval_s=0.25, clock=clock)
    updates = []
    try:
        while True:
            updates.append(next(out))
    except StopIteration as stop:
        assert stop.value == "result"
    assert len(updates) <= 2 / 0.25 + 2  # ~4 Hz, not 50 Hz
    steps = [s for u in updates for s, _ in u.losses]
    assert steps == list(range(1, 101))  # every loss reaches the plot, once
    assert updates[-1].progress.phase == "segment"


def test_live_preview_skips_locked_and_waits_its_interval():
    preview = LivePreview(np.zeros((3, 4, 4), np.float32), locked=[1], every_s=1.0)
    preview.predict = lambda z: np.full((4, 4), z, np.uint8)
    preview.model = object()
    preview.z = 1
    assert preview.maybe_predict(0.0) is None and preview.maybe_predict(5.0) is None  # locked slice
    preview.z = 2
    assert preview.maybe_predict(5.5) is None  # starts its clock
    assert preview.maybe_predict(6.0) is None  # too soon
    z, labels = preview.maybe_predict(6.6)
    assert z == 2 and (labels == 2).all()


def test_preview_and_guided_fill_predict_with_a_spacing_model():
    """New models use the 'spacing' policy: the preview and the fill's probabilities must pass the spacing."""
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.models import TINY_CONFIGS, build_model
    from napari_medseg.preprocess import Preprocessing
    from napari_medseg.widgets._scribble_mode import slice_probabilities

    model = build_model("dcaunet", SYNAPSE.num_classes, **TINY_CONFIGS["dcaunet"]).eval()
    prep = Preprocessing(resize_policy="spacing", target_spacing=3.0)
    image = np.random.default_rng(0).normal(0, 100, (3, 40, 50)).astype(np.float32)
    preview = LivePreview(image, locked=[], spacing=(2.0, 1.5, 1.5))
    preview.on_model(model, SYNAPSE, prep)
    assert preview.predict(1).shape == (40, 50)
    info = preview._info
    probs = slice_probabilities(model, info, image[1], spacing=(1.5, 1.5))
    assert probs.shape == (SYNAPSE.num_classes, 40, 50) and np.allclose(probs.sum(0), 1, atol=1e-4)
    with pytest.raises(ValueError, match="spacing"):
        slice_probabilities(model, info, image[1])  # no spacing: the one-line refusal, not a wrong guess


def test_warm_up_imports_hide_triton_before_dynamo():
    """The dock's warm-up thread body, in a fresh process: devices first, then torch._dynamo with triton hidden."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from concurrent.futures import Future\n"
            "from napari_medseg.widgets._warm_up import FINE_TUNE_MODULES, _imports\n"
            "assert 'torch._dynamo' not in sys.modules\n"
            "devices = Future()\n"
            "_imports(devices, fine_tune=True)\n"
            "assert devices.result()[-1] == 'cpu', devices.result()\n"
            "assert 'torch._dynamo' in sys.modules and sys.modules['triton'] is None\n"
            "assert all(m in sys.modules for m in FINE_TUNE_MODULES)\n"
            "assert not any(m.startswith(('qtpy', 'PyQt', 'napari.')) for m in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]



def test_status_area_grows_with_its_text_then_scrolls(qtbot):
    """A dock's status: as tall as a short text, never taller than STATUS_LINES lines (then it scrolls)."""
    from qtpy.QtWidgets import QPushButton, QVBoxLayout, QWidget

    from napari_medseg.widgets._layout import STATUS_LINES, StatusArea, StatusLabel

    dock = QWidget()
    label = StatusLabel("Reverted to base.v2.safetensors.")
    area = StatusArea(label)
    layout = QVBoxLayout(dock)
    layout.addWidget(QPushButton("Fine-tune"))
    layout.addWidget(area)
    layout.addStretch()
    qtbot.addWidget(dock)
    dock.resize(300, 700)
    dock.show()
    qtbot.waitExposed(dock)
    line = label.fontMetrics().lineSpacing()
    qtbot.waitUntil(lambda: area.height() >= label.heightForWidth(area.viewport().width()))
    assert area.height() < 3 * line and not area.verticalScrollBar().maximum()  # one line, no scroll bar
    label.setText("Saved a checkpoint after a long fine-tune; the Dice went up. " * 12)  # far more than 6 lines
    qtbot.waitUntil(lambda: area.height() >= STATUS_LINES * line)
    assert area.height() < (STATUS_LINES + 2) * line  # capped, whatever the text's length
    assert area.verticalScrollBar().maximum() > 0  # the rest scrolls
    assert label.text().startswith("Saved")
