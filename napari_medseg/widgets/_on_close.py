"""Run a callback before napari's window closes, so the last edits are saved, not lost.

napari does not remove layers or tell plugins when its window closes; the only
hooks are Qt's.  An event filter on the main window sees the ``Close`` event
first (``viewer.close()``, the close button, Ctrl+W, Ctrl+Q), and
``QApplication.aboutToQuit`` covers an application quit without a window close.
A callback may run more than once for one close (both hooks, or a cancelled close),
so it must save only what changed; its exceptions are printed, never raised into
Qt's event loop.
"""

from __future__ import annotations

import sys
import traceback
import weakref
from typing import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QApplication


class _CloseWatcher(QObject):
    def __init__(self, window, callback: Callable[[], None]):
        super().__init__(window)  # lives as long as the window
        self.callback = callback

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Close:
            run_safely(self.callback)
        return False  # napari handles the close as usual (it may still ask to confirm)


def run_safely(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # noqa: BLE001 - never break napari's close; say what failed
        print("napari-medseg: saving at close failed:", file=sys.stderr)
        traceback.print_exc()


def call_before_close(viewer, callback: Callable[[], None]) -> bool:
    """Call ``callback()`` when ``viewer``'s main window gets a close event, and when the app quits.

    Returns False when the viewer has no Qt window (headless viewers): then only the quit hook is set.
    """
    app = QApplication.instance()
    if app is not None:
        # weakly: the application outlives every viewer, and must not keep closed ones alive
        ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else (lambda: callback)

        def on_quit():
            alive = ref()
            if alive is not None:
                run_safely(alive)

        app.aboutToQuit.connect(on_quit)
    viewer = getattr(viewer, "__wrapped__", viewer)  # docks get napari's PublicOnlyProxy of the viewer
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)  # napari's QMainWindow (no public API)
    if window is None:
        return False
    window.installEventFilter(_CloseWatcher(window, callback))
    return True
