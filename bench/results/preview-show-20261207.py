# How long the Retrain dock's _show_preview holds the GUI thread, and the redraw after it (2026-12-07).
# xvfb-run -a -s "-screen 0 1600x1000x24" python bench/results/preview-show-20261207.py LABEL   (needs ../shared/data)
import sys, time, statistics
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1600, 1000)
viewer.open("/work/shared/data/ct_abdomen.nii.gz", plugin="napari-medseg")
labels = viewer.add_labels(np.zeros(viewer.layers[0].data.shape, np.uint8), name="ct_abdomen labels")
_, dock = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
for _ in range(40):
    QApplication.processEvents(); time.sleep(0.05)
dock._job = {"layer": labels}
dock._prepare_preview(labels)
rng = np.random.default_rng(0)
z = int(viewer.dims.current_step[0])
times, draw = [], []
for i in range(30):
    pred = rng.integers(0, 9, labels.data.shape[1:]).astype(np.uint8)
    t = time.perf_counter()
    dock._show_preview(z, pred)
    t1 = time.perf_counter()
    QApplication.processEvents()
    t2 = time.perf_counter()
    times.append(t1 - t); draw.append(t2 - t1)
    time.sleep(0.1)
print(sys.argv[1], "show median ms", round(1e3 * statistics.median(times), 1), "then events", round(1e3 * statistics.median(draw), 1))
viewer.close()
