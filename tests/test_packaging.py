"""The distribution installs as a napari plugin with one manifest and a working `medseg` script."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*cmd: str) -> subprocess.CompletedProcess:
    # explicit UTF-8: GDCM (SimpleITK's DICOM writer, used by other tests) switches the C locale to ASCII
    return subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=120)


def test_medseg_version_and_help():
    from napari_medseg import __version__

    out = run(sys.executable, "-m", "napari_medseg.cli", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"napari-medseg {__version__}"
    out = run(sys.executable, "-m", "napari_medseg.cli", "--help")
    assert out.returncode == 0
    assert "COMMAND" in out.stdout and "view" in out.stdout


def test_unknown_subcommand_fails():
    out = run(sys.executable, "-m", "napari_medseg.cli", "no-such-command")
    assert out.returncode != 0
    assert "invalid choice" in out.stderr


def test_installed_manifest_is_the_top_level_file():
    """The package carries napari.yaml itself (no second copy that can drift)."""
    installed = resources.files("napari_medseg").joinpath("napari.yaml").read_text()
    top_level = REPO / "napari.yaml"
    if not top_level.exists():
        pytest.skip("not running from a source checkout")
    assert installed == top_level.read_text()


def test_npe2_discovers_and_validates_plugin():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-medseg")
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} >= {"Segment", "Correct and retrain", "Organ legend"}
    assert contributions.readers and contributions.writers and contributions.sample_data
    out = run(str(Path(sys.executable).with_name("npe2")), "validate", "napari-medseg")
    assert out.returncode == 0, out.stdout + out.stderr


def test_core_modules_import_without_torch_or_qt():
    """napari start-up must not pay for torch: readers, labels and io import neither torch nor Qt."""
    code = (
        "import sys, napari_medseg, napari_medseg.labels, napari_medseg.preprocess, napari_medseg.device, napari_medseg.cli\n"
        "import importlib.util\n"
        "for m in ('napari_medseg.io', 'napari_medseg._reader', 'napari_medseg._writer'):\n"
        "    if importlib.util.find_spec(m): __import__(m)\n"
        "bad = [m for m in ('torch', 'timm', 'qtpy', 'PyQt5', 'PyQt6') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    assert_python_runs(code)


def test_family_specs_and_option_lists_import_no_torch():
    """The Retrain dock's option lists read the family specs when it opens: that must not load torch
    (it stalled napari's event loop for ~3 s)."""
    code = (
        "import sys\n"
        "from napari_medseg.models.registry import family_spec, fine_tuning_scopes, model_names\n"
        "specs = [family_spec(n) for n in model_names()]\n"
        "assert [s.display for s in specs] == ['DCAU-Net', 'U-DFA'], specs\n"
        "assert fine_tuning_scopes() and all(s.size_multiple in (14, 32) for s in specs)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from napari_medseg.models.dcaunet import DCAUNet, SPEC\n"
        "assert SPEC is family_spec('dcaunet') and DCAUNet.size_multiple == SPEC.size_multiple\n"
    )
    assert_python_runs(code)


def assert_python_runs(code: str) -> None:
    """Run ``code`` in a fresh interpreter (nothing imported yet); it must exit 0."""
    out = run(sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr
