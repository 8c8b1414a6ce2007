"""The plugin's torch work in napari runs on one long-lived thread.

PyTorch's OpenMP runtime (libgomp on Linux) gives every OS thread that runs a
parallel operation its own team of worker threads.  Once a second thread has
such a team, parallel work in the other runs markedly slower on a small
machine (``bench/omp_threads.py``, 2 cores, Intel Xeon VM, 2026-11-23; steps of
20 s of DCAU-Net fine-tuning): 196 on a fresh thread, 176 on the thread that had
just run torch, but 94 after one parallel operation on the main thread and 86
after one on another thread (the training thread and its OpenMP worker then sleep
between parallel regions instead of spinning: 113 % of the 200 % CPU).
napari's workers run on a pool of changing threads, so *Segment*,
then *Fine-tune* hit exactly that.  The docks therefore hand every torch
computation to this one thread: :func:`on_compute_thread` wraps a worker's
generator function (each step runs here, the worker thread only relays
progress), :func:`call` runs one function here.

Qt-free.  Jobs share the thread step by step (a segmentation started while a
fine-tune runs interleaves with it, batch by training step).
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

_THREAD_IDS: set[int] = set()


def _mark() -> None:
    _THREAD_IDS.add(threading.get_ident())


_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medseg-compute", initializer=_mark)


def on_compute_thread_now() -> bool:
    """True when the caller is the compute thread."""
    return threading.get_ident() in _THREAD_IDS


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the compute thread (directly when already there); its result or exception."""
    if on_compute_thread_now():
        return fn(*args, **kwargs)
    return _EXECUTOR.submit(fn, *args, **kwargs).result()


def iterate(gen):
    """Drive generator ``gen`` on the compute thread and yield its items here; returns its return value.

    Closing this generator (or its garbage collection) closes ``gen`` on the compute thread.
    """
    try:
        while True:
            try:
                item = call(next, gen)
            except StopIteration as stop:
                return stop.value
            yield item
    finally:
        call(gen.close)


def on_compute_thread(genfunc):
    """A generator function whose body runs on the compute thread (for napari's ``create_worker``)."""

    @functools.wraps(genfunc)
    def relay(*args, **kwargs):
        return (yield from iterate(genfunc(*args, **kwargs)))

    return relay
