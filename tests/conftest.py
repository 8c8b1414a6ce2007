"""Shared fixtures: the packaged sample CT, a DICOM series written from it, the optional
real series in ``../shared/data``, and skip rules for GPU tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# precision="auto" on CPU would time fp32 vs bf16 in a child process and cache it in the user's
# config dir; tests keep the old fp32 (tests/test_device_precision.py unsets this)
os.environ.setdefault("MEDSEG_CPU_PRECISION", "fp32")

# One knob for the Qt binding.  qtpy (hence napari) follows $QT_API, pytest-qt follows
# $PYTEST_QT_API and otherwise prefers PyQt6 over PyQt5: with both installed and only
# QT_API=pyqt5 set, the two would load different Qt libraries into one process.
if os.environ.get("QT_API") and not os.environ.get("PYTEST_QT_API"):
    os.environ["PYTEST_QT_API"] = os.environ["QT_API"].lower()
SAMPLE_SERIES_UID = "1.2.826.0.1.3680043.10.1"


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Every test gets its own data and config dirs (autosaves, the store, recent files, caches):
    the suite never reads, writes or prunes the user's own (subprocesses inherit the variables)."""
    root = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("MEDSEG_CONFIG_DIR", str(root / "config"))


def _find_shared_data() -> Path | None:
    candidates = [os.environ.get("MEDSEG_SHARED_DATA"), REPO.parent / "shared" / "data", REPO / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "ct_dicom").is_dir():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $MEDSEG_SHARED_DATA): adds the real scanner DICOM series; skips when absent."""
    path = _find_shared_data()
    if path is None:
        pytest.skip("../shared/data is not present (set MEDSEG_SHARED_DATA to add the real-series tests)")
    return path


@pytest.fixture(scope="session")
def sample_ct() -> Path:
    """The packaged sample CT (122x101x30 voxels, 3 mm, int16 HU)."""
    from napari_medseg._sample_data import SAMPLE_CT

    return SAMPLE_CT


@pytest.fixture(scope="session")
def sample_labels() -> Path:
    """The packaged sample's 8 organ labels (Synapse order), on the CT's grid."""
    from napari_medseg._sample_data import SAMPLE_LABELS

    return SAMPLE_LABELS


@pytest.fixture(scope="session")
def dicom_dir(tmp_path_factory, sample_ct) -> Path:
    """The packaged sample CT written as a DICOM series (30 files, true spacing, LPS orientation and positions;
    instance 1 is the most superior slice)."""
    from dicom_fixtures import write_volume_as_dicom

    return write_volume_as_dicom(sample_ct, tmp_path_factory.mktemp("sample_dicom"), SAMPLE_SERIES_UID)


@pytest.fixture(scope="session")
def real_dicom_dir(shared_data) -> Path:
    """A real scanner CT series from ``../shared/data`` (20 slices, 512x512); skips when absent."""
    return shared_data / "ct_dicom"


def pytest_configure(config):
    # GUI tests train tiny models after napari has created its (Mesa) GL context;
    # the plugin hides triton from torch for the same reason (napari_medseg._torch_compat).
    from napari_medseg._torch_compat import hide_triton

    hide_triton()


def pytest_report_header(config):
    try:
        import qtpy
    except Exception as exc:  # qtpy without any binding raises on import
        return f"Qt binding: none ({exc})"
    requested = os.environ.get("PYTEST_QT_API", "unset")
    return f"Qt binding: {qtpy.API_NAME} {qtpy.QT_VERSION} (requested: PYTEST_QT_API={requested})"


GUI_FIXTURES = {"make_napari_viewer", "qtbot"}


def pytest_collection_modifyitems(config, items):
    for item in items:  # every test that builds Qt widgets is a GUI test (``-m gui`` selects them)
        if GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: GPU tests cannot run
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
