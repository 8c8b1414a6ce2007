"""Crash recovery for real: a napari process paints, fine-tunes, autosaves, is SIGKILLed; a new one restores.

Runs ``tests/_autosave_session.py`` twice as subprocesses on the display the
tests use (run the suite under ``xvfb-run``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui
SESSION = Path(__file__).with_name("_autosave_session.py")
SCREENSHOT_DIR = os.environ.get("MEDSEG_SCREENSHOT_DIR")


def test_sigkill_after_paint_and_fine_tune_then_restore(tmp_path):
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        pytest.skip("needs a display: run under xvfb-run")
    env = {**os.environ, "MEDSEG_DATA_DIR": str(tmp_path / "data"), "MEDSEG_CONFIG_DIR": str(tmp_path / "config"),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    work = subprocess.Popen([sys.executable, str(SESSION), "work", str(tmp_path)], env=env, text=True, encoding="utf-8",
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    try:
        for line in work.stdout:
            lines.append(line)
            if line.startswith("READY"):
                break
        assert lines and lines[-1].startswith("READY"), "".join(lines[-40:])
    finally:
        work.send_signal(signal.SIGKILL)
        work.wait(timeout=30)
    assert work.returncode == -signal.SIGKILL

    restore = subprocess.run([sys.executable, str(SESSION), "restore", str(tmp_path)], env=env, text=True, encoding="utf-8",
                             capture_output=True, timeout=300)
    assert restore.returncode == 0 and "RESTORED" in restore.stdout, restore.stdout[-3000:] + restore.stderr[-3000:]
    expected, restored = np.load(tmp_path / "expected.npz"), np.load(tmp_path / "restored.npz")
    assert set(expected.files) == set(restored.files)
    for key in expected.files:  # labels, model output, edited / reviewed / predicted slices
        np.testing.assert_array_equal(restored[key], expected[key], err_msg=key)
    assert {8, 11, 14, 20} <= set(expected["edited_slices"].tolist()) and expected["reviewed_slices"].tolist() == [17]
    assert expected["has_prediction"].sum() > 0  # the fine-tune's model output was saved and restored
    if SCREENSHOT_DIR:
        import shutil

        for name in ("restore_offer.png", "restore_dialog.png", "restored.png"):
            shutil.copy(tmp_path / name, Path(SCREENSHOT_DIR) / f"autosave_{name}")
