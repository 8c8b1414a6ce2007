"""Heavy imports off the GUI thread, started when a dock opens.

Listing devices imports torch, and the first fine-tune imports ``torch._dynamo``
(through :func:`~napari_medseg._torch_compat.hide_triton`, for the optimizer) and
the fine-tuning core: 5-15 s on a busy 2-core machine.  On the GUI thread, that
froze napari when the Segment dock opened and again at the first *Fine-tune*
click.  :func:`warm_up` does it in a thread while the user looks at the
image and paints; the device combo box shows ``auto`` until the list arrives.
(The Retrain dock still imports torch as it opens: the family specs that name its
scratch models live in the model modules, which import torch.)
"""

from __future__ import annotations

import importlib
import threading
from concurrent.futures import Future

#: What the first fine-tune imports besides torch (``torch._dynamo`` comes through ``hide_triton``).
FINE_TUNE_MODULES = ("napari_medseg.retrain.loop", "napari_medseg.retrain.finetune", "napari_medseg.retrain.members",
                     "napari_medseg.checkpoint", "napari_medseg.inference")
#: How often the GUI thread looks for the device list (ms).
POLL_MS = 100


def warm_up(device_combo, fine_tune: bool = False, on_ready=None) -> threading.Thread:
    """Start a thread that lists the devices and, with ``fine_tune``, imports what a fine-tune needs.

    The devices are added to ``device_combo`` (after its ``auto``) by a timer owned by the combo box,
    so nothing reaches a dock that was closed meanwhile; the same timer calls ``on_ready()`` on the
    GUI thread once the thread has finished (everything imported).
    Not a daemon: Python waits for it at exit
    (a daemon thread importing torch while the interpreter shuts down raises from torch's teardown).
    Returns the thread.
    """
    from qtpy.QtCore import QTimer

    devices: Future = Future()
    thread = threading.Thread(target=_imports, args=(devices, fine_tune), name="medseg-warm-up")
    thread.start()
    timer = QTimer(device_combo)
    timer.setInterval(POLL_MS)
    added = []  # the devices went into the combo

    def tick():
        if devices.done() and not added:
            added.append(True)
            _add_devices(device_combo, devices)
        if not thread.is_alive():
            timer.stop()
            if on_ready is not None:
                on_ready()

    timer.timeout.connect(tick)
    timer.start()
    return thread


def _add_devices(combo, devices: Future) -> None:
    try:
        combo.addItems(devices.result())
    except Exception as err:  # torch failed to import: say so now; a fine-tune would fail with the same error
        from napari.utils.notifications import show_warning

        show_warning(f"napari-medseg could not list devices ({err}); only \u201cauto\u201d is offered")


def _imports(devices: Future, fine_tune: bool) -> None:
    """Thread body: the device names into ``devices``, then the fine-tuning modules."""
    from napari_medseg.device import available_devices

    try:
        devices.set_result(available_devices())
    except BaseException as err:
        devices.set_exception(err)
        return
    if fine_tune:
        from napari_medseg._torch_compat import hide_triton

        hide_triton()
        for name in FINE_TUNE_MODULES:
            importlib.import_module(name)
