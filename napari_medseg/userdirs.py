"""Where napari-medseg keeps user files: settings (config) and data (corrections, checkpoints).

``$MEDSEG_CONFIG_DIR`` / ``$MEDSEG_DATA_DIR`` override the platform's user
directories (``~/.config/napari-medseg`` and ``~/.local/share/napari-medseg``
on Linux); tests set them so nothing touches the home directory.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "napari-medseg"


def _user_dir(env_var: str, kind: str, xdg_var: str, xdg_default: Path) -> Path:
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs  # comes with napari

        return Path(getattr(platformdirs, f"user_{kind}_dir")(APP, appauthor=False))
    except ImportError:  # a plain fallback for a CLI-only install
        return Path(os.environ.get(xdg_var, xdg_default)) / APP


def config_dir() -> Path:
    """User settings (recent checkpoints)."""
    return _user_dir("MEDSEG_CONFIG_DIR", "config", "XDG_CONFIG_HOME", Path.home() / ".config")


def data_dir() -> Path:
    """User data: the corrections datastore and fine-tuned checkpoints."""
    return _user_dir("MEDSEG_DATA_DIR", "data", "XDG_DATA_HOME", Path.home() / ".local" / "share")
