"""Atomic file writes: a file appears whole, or not at all, and nothing half-written is left behind.

Temp files are named ``.<name>.partial-XXXX<suffix>`` beside the target
(:func:`is_temp_name` recognises them, so readers and batches never take one
for an input).  A SIGTERM or SIGHUP during a write removes the temp file
before the process ends (the handler then hands the signal on).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable

TEMP_MARK = ".partial-"
_live: set[str] = set()  # temp files being written now, removed by the signal handler
_previous: dict[int, object] = {}


def is_temp_name(path: str | os.PathLike) -> bool:
    """True for a temp file of :func:`atomic_write` (e.g. left by a SIGKILL)."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


def _remove_live_temps(signum, frame) -> None:
    for tmp in list(_live):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        _live.discard(tmp)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:  # default action: die of the same signal
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    """Chain a temp-file cleaner in front of SIGTERM/SIGHUP (main thread only; once)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None or signum in _previous:
            continue
        current = signal.getsignal(signum)
        if current is _remove_live_temps:
            continue
        try:
            signal.signal(signum, _remove_live_temps)
        except (ValueError, OSError):  # not allowed here (embedded interpreter)
            continue
        _previous[signum] = current


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``.

    ``suffix`` keeps the extension libraries look at (e.g. ``".nii.gz"``).  If
    ``write`` raises, or SIGTERM/SIGHUP arrives, the temp file is removed and
    ``path`` is left as it was.
    """
    _install_signal_handlers()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}", suffix=suffix)
    os.close(fd)
    _live.add(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        _live.discard(tmp)
    return path
