"""Recently used checkpoints, remembered across sessions.

Stored as JSON in ``$MEDSEG_CONFIG_DIR/recent_checkpoints.json`` when that
variable is set (tests use it), else in the platform's user config directory
(``~/.config/napari-medseg`` on Linux).
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_medseg.atomic import atomic_write
from napari_medseg.userdirs import config_dir

MAX_RECENT = 10
_FILE = "recent_checkpoints.json"


def _path() -> Path:
    return config_dir() / _FILE


def recent_checkpoints(existing_only: bool = True) -> list[Path]:
    """Most recent first; files that no longer exist are skipped by default."""
    try:
        data = json.loads(_path().read_text())
        paths = [Path(p) for p in data.get("checkpoints", []) if isinstance(p, str)]
    except (OSError, ValueError, AttributeError):
        return []  # no file yet, or a damaged one: start afresh
    return [p for p in paths if p.is_file()] if existing_only else paths


def remember_checkpoint(path) -> list[Path]:
    """Put ``path`` at the top of the list (at most ``MAX_RECENT``); returns the new list."""
    path = Path(path).expanduser().resolve()
    paths = [p for p in recent_checkpoints(existing_only=False) if p != path]
    paths = [path] + paths[: MAX_RECENT - 1]
    target = _path()
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"checkpoints": [str(p) for p in paths]}, indent=1)
    atomic_write(target, lambda tmp: Path(tmp).write_text(text), suffix=".json")
    return paths
