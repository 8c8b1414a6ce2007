"""Heavy imports off the GUI thread, started when a dock opens.

Listing devices imports torch, and the first fine-tune imports ``torch._dynamo``
(through :func:`~napari_medseg._torch_compat.hide_triton`, for the optimizer) and
the fine-tuning core: 5-15 s on a busy 2-core machine.  On the GUI thread, that
froze napari when the Segment dock opened and again at the first *Fine-tune*
click.  :func:`warm_up` does it in a thread while the user looks at the
image and paints; the device combo box shows ``auto`` until the list arrives.

The thread starts :data:`START_DELAY_MS` after the dock is made, once napari has laid it out
and painted it.  Importing torch holds Python's GIL for stretches of up to half a second, and
PyQt releases and re-takes the GIL around every Qt call: started at once, the import slowed
napari's own work of adding the dock (a ``findChildren`` over the window, then the first
layout and paint) from 0.08 s to 0.8-2.6 s, the dock appearing only after that freeze
(docs/retrain.md, "Opening the dock").
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
#: Delay between making a dock and starting its warm-up thread (ms): napari adds, lays out and
#: paints a dock in about 0.1 s (measured on 2 cores under Xvfb, docs/retrain.md).
START_DELAY_MS = 300


class WarmUp:
    """The warm-up thread of one dock, started :data:`START_DELAY_MS` after it is made (GUI thread only).

    ``join`` starts it first if it has not started yet, so "wait until warmed up" always works.
    """

    def __init__(self, thread: threading.Thread, on_start):
        self.thread, self._on_start = thread, on_start

    def start(self) -> None:
        if not self.started:
            self.thread.start()
            self._on_start()

    @property
    def started(self) -> bool:
        return self.thread.ident is not None

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.start()
        self.thread.join(timeout)


def warm_up(device_combo, fine_tune: bool = False, on_ready=None) -> WarmUp:
    """In :data:`START_DELAY_MS`, start a thread that lists the devices and, with ``fine_tune``, imports
    what a fine-tune needs.

    The devices are added to ``device_combo`` (after its ``auto``) by a timer owned by the combo box,
    so nothing reaches a dock that was closed meanwhile (nor starts for it); the same timer calls
    ``on_ready()`` on the GUI thread once the thread has finished (everything imported).
    Not a daemon: Python waits for it at exit
    (a daemon thread importing torch while the interpreter shuts down raises from torch's teardown).
    """
    from qtpy.QtCore import QTimer

    devices: Future = Future()
    thread = threading.Thread(target=_imports, args=(devices, fine_tune), name="medseg-warm-up")
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
    warming = WarmUp(thread, timer.start)
    starter = QTimer(device_combo)  # owned by the combo: a dock closed before it fires starts nothing
    starter.setSingleShot(True)
    starter.timeout.connect(warming.start)
    starter.start(START_DELAY_MS)
    return warming


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
