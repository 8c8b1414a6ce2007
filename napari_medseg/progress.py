"""Driving the progress generators (inference, fine-tuning, retrain) outside a GUI worker.

Long work in napari-medseg is a generator that yields progress reports and
*returns* its result (``StopIteration.value``).  napari's ``thread_worker``
drives it in the GUI; :func:`drive` drives it everywhere else.
"""

from __future__ import annotations

from typing import Callable, Generator, TypeVar

R = TypeVar("R")


def drive(gen: Generator[object, None, R], callback: Callable[[object], None] | None = None) -> R:
    """Run ``gen`` to the end, calling ``callback(progress)`` on each yield; return its value."""
    while True:
        try:
            progress = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(progress)
