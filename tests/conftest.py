"""Shared fixtures: paths to the real sample data, and skip rules for GPU tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# precision="auto" on CPU would time fp32 vs bf16 in a child process and cache it in the user's
# config dir; tests keep the old fp32 (tests/test_device_precision.py unsets this)
os.environ.setdefault("MEDSEG_CPU_PRECISION", "fp32")


def _find_shared_data() -> Path | None:
    candidates = [os.environ.get("MEDSEG_SHARED_DATA"), REPO.parent / "shared" / "data", REPO / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "ct_abdomen.nii.gz").exists():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real CT, its labels and a DICOM series)."""
    path = _find_shared_data()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path


@pytest.fixture(scope="session")
def sample_ct(shared_data) -> Path:
    return shared_data / "ct_abdomen.nii.gz"


@pytest.fixture(scope="session")
def sample_labels(shared_data) -> Path:
    # The packaged copy: the same voxels as shared_data's, but its header's label table names the
    # Synapse order; the shared copy still carries TotalSegmentator's original (now stale) table.
    return REPO / "napari_medseg" / "data" / "ct_abdomen_labels.nii.gz"


@pytest.fixture(scope="session")
def dicom_dir(shared_data) -> Path:
    return shared_data / "ct_dicom"


def pytest_configure(config):
    # GUI tests train tiny models after napari has created its (Mesa) GL context;
    # the plugin hides triton from torch for the same reason (napari_medseg._torch_compat).
    from napari_medseg._torch_compat import hide_triton

    hide_triton()


def pytest_collection_modifyitems(config, items):
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
