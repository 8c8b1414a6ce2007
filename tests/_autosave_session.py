"""A real napari session for tests/test_autosave_crash.py, run as a subprocess (under xvfb).

``work OUT``: open the sample CT, create the labels layer as the dock does,
paint, fine-tune a tiny checkpoint for 3 steps through the dock (autosave after
the model update), paint again and mark a slice reviewed, let the autosave
*timer* save, write what must survive to ``OUT/expected.npz``, print READY and
keep running until killed.  ``restore OUT``: open the same CT with no dock open,
wait for the restore offer, screenshot it, click *Restore*, write
``OUT/restored.npz``, then open the dock and check it shows the restored ledger.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def spin(app, until, timeout=300.0):
    end = time.monotonic() + timeout
    while not until():
        if time.monotonic() > end:
            raise TimeoutError("timed out waiting in the napari session")
        app.processEvents()
        time.sleep(0.02)


def open_ct(viewer):
    from napari_medseg._sample_data import SAMPLE_CT

    (image,) = viewer.open(str(SAMPLE_CT), plugin="napari-medseg")
    _, dock = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    dock.image_combo.setCurrentText(image.name)
    return image, dock


def ledger_arrays(layer, prefix):
    ledger = layer.metadata["medseg_ledger"]
    return {f"{prefix}labels": np.asarray(layer.data), f"{prefix}edited_slices": np.asarray(ledger.edited),
            f"{prefix}reviewed_slices": np.asarray(ledger.reviewed),
            **{f"{prefix}{k}": v for k, v in ledger.to_state().items()}}


def work(out: Path):
    import napari
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, str(Path(__file__).parent))
    from _segment_helpers import save_tiny

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    image, dock = open_ct(viewer)
    dock.autosave.timer.setInterval(500)  # the 30 s timer, shortened for the test
    dock.new_labels_layer()
    layer = viewer.layers[dock.labels_combo.currentText()]
    layer.brush_size = 8
    for z, value in ((8, 6), (14, 2), (20, 5)):
        layer.paint((z, 50, 45), value)
    ckpt = save_tiny(out / "tiny.safetensors", "dcaunet")
    dock.start_combo.insertItem(0, str(ckpt))
    dock.start_combo.setCurrentIndex(0)
    dock.budget_unit.setCurrentText("steps")
    dock.budget.setValue(3)
    dock.fine_tune()
    assert dock.worker is not None, dock.status.text()
    spin(app, lambda: dock.worker is None)
    assert "Saved" in dock.status.text(), dock.status.text()
    print("fine-tuned:", dock.status.text(), flush=True)
    layer.paint((11, 40, 60), 3)  # an edit after the model update: saved by the timer
    dock.go_to_slice(17)
    dock.toggle_reviewed()
    folder = dock.autosave.managed()[0]
    from napari_medseg.casestate import read_case_info

    case = Path(layer.metadata["medseg_recovery"]["folder"])
    spin(app, lambda: 11 in read_case_info(case)["edited"] and 17 in read_case_info(case)["reviewed"], 60)
    np.savez(out / "expected.npz", **ledger_arrays(layer, ""))
    print("READY", folder[0].name, flush=True)
    while True:  # the parent SIGKILLs this process
        app.processEvents()
        time.sleep(0.05)


def restore(out: Path):
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medseg._sample_data import SAMPLE_CT
    from napari_medseg.widgets._autosave import attached

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.open(str(SAMPLE_CT), plugin="napari-medseg")  # no dock open: the reader brings the offer
    spin(app, lambda: attached(viewer) is not None and attached(viewer).dialog is not None, 30)
    saver = attached(viewer)
    assert len(saver.offers) == 1, saver.offers
    t0 = time.monotonic()
    spin(app, lambda: time.monotonic() - t0 > 1.0)
    viewer.screenshot(str(out / "restore_offer.png"), canvas_only=False)
    dialog = saver.dialog
    assert dialog.isVisible()
    dialog.grab().save(str(out / "restore_dialog.png"))
    before = {layer.name for layer in viewer.layers}
    next(b for b in dialog.buttons() if b.text() == "Restore").click()  # as the user does
    spin(app, lambda: saver.dialog is None, 30)
    (name,) = {layer.name for layer in viewer.layers} - before
    layer = viewer.layers[name]
    np.savez(out / "restored.npz", **ledger_arrays(layer, ""))
    _, dock = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    assert dock.autosave is saver
    dock.labels_combo.setCurrentText(layer.name)
    assert "edited 4 \u00b7 reviewed 1" in dock.counts.text(), dock.counts.text()  # the dock shows the restored ledger
    assert layer.metadata["medseg"]["checkpoints"] and "tiny.v" in layer.metadata["medseg"]["checkpoints"][0]
    viewer.screenshot(str(out / "restored.png"), canvas_only=False)
    print("RESTORED", layer.name, flush=True)
    viewer.close()


if __name__ == "__main__":
    {"work": work, "restore": restore}[sys.argv[1]](Path(sys.argv[2]))
