"""The recovery folder of autosave: layout, the "saved by the user" marker, and pruning (no napari, no Qt).

Layout (``<data dir>/recovery``)::

    recovery/<voxel hash of the image>/          one folder per image (3D, or the whole 4D cine)
        <layer slug>/                             one case folder per labels layer (and frame, for 4D)
            case.json, state-NNNNNN.npz          a napari_medseg.casestate case
            saved.json                            written by the napari writer when the user saves
                                                  these labels: {"saved_at": ISO UTC, "path": ...}

``<layer slug>`` is the layer name with every character other than letters,
digits, ``.``, ``_`` and ``-`` replaced by ``_`` (at most 60 characters),
``-`` and 8 hex digits of the name's sha256 (two names never share a folder),
and ``-t<frame>`` for the labels of one frame of a 4D image.

An autosave is offered back only when it is newer than the user's last
explicit save of those labels (:func:`autosave_is_newer`).  :func:`prune`
removes image folders that are both older than :data:`KEEP_DAYS` and not
among the :data:`KEEP_NEWEST` most recent, never one in use.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from .atomic import atomic_write
from .casestate import CASE_JSON

#: Image folders kept whatever their age: the most recently written ones.
KEEP_NEWEST = 20
#: Image folders younger than this many days are kept whatever their number.
KEEP_DAYS = 30
#: Marker the napari writer leaves in a case folder when the user saves its labels.
SAVED_JSON = "saved.json"
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")  # voxel_hash names: the only folders prune touches
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")


class RecoveryWarning(UserWarning):
    """A recovery-folder chore (marker, pruning) failed; the user's own files are unaffected."""


def recovery_dir() -> Path:
    """``<data dir>/recovery``: one folder per image voxel hash."""
    from .userdirs import data_dir

    return data_dir() / "recovery"


def layer_slug(layer_name: str, frame: int | None = None) -> str:
    """Folder name for a labels layer's autosave (see the module docstring); ``frame``: 4D time index."""
    safe = _UNSAFE_RE.sub("_", layer_name).strip("._")[:60] or "labels"
    digest = hashlib.sha256(layer_name.encode("utf-8")).hexdigest()[:8]
    return f"{safe}-{digest}" + ("" if frame is None else f"-t{int(frame)}")


def case_folder(image_hash: str, layer_name: str, frame: int | None = None, root: Path | None = None) -> Path:
    """``recovery/<image hash>/<layer slug>``: where a labels layer of that image is autosaved."""
    return (root or recovery_dir()) / image_hash / layer_slug(layer_name, frame)


def autosave_folders(image_hash: str, root: Path | None = None) -> list[Path]:
    """Case folders holding an autosave for the image (sorted); the image folder itself for the old one-per-image layout."""
    base = (root or recovery_dir()) / image_hash
    if not base.is_dir():
        return []
    found = [base] if (base / CASE_JSON).is_file() else []
    return found + sorted(p for p in base.iterdir() if p.is_dir() and (p / CASE_JSON).is_file())


def mark_saved(folder, saved_path, saved_at: datetime | None = None) -> Path | None:
    """Record in ``folder`` (a case folder under :func:`recovery_dir`) that the user saved its labels to ``saved_path``.

    Returns the marker, or None when ``folder`` is not inside the recovery
    folder (layer metadata is not trusted to point anywhere else).
    """
    folder, root = Path(folder).resolve(), recovery_dir().resolve()
    if root not in folder.parents:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    when = (saved_at or datetime.now(timezone.utc)).isoformat()
    text = json.dumps({"saved_at": when, "path": str(saved_path)}, indent=1)
    return atomic_write(folder / SAVED_JSON, lambda tmp: Path(tmp).write_text(text), suffix=".json")


def last_saved(folder) -> dict | None:
    """The marker of :func:`mark_saved` (``saved_at``, ``path``), or None when the user never saved (or it is damaged)."""
    try:
        marker = json.loads((Path(folder) / SAVED_JSON).read_text())
        parse_time(marker["saved_at"])
        return marker
    except (OSError, ValueError, KeyError, TypeError):
        return None


def autosave_time(info: dict) -> str:
    """When the autosaved labels were taken (``snapshot_at``; ``saved_at`` for older autosaves), ISO UTC."""
    return str(info.get("snapshot_at") or info["saved_at"])


def autosave_is_newer(info: dict, marker: dict | None) -> bool:
    """True when the autosave (``case.json`` as a dict) is newer than the user's last save (``marker``, or None)."""
    return marker is None or parse_time(autosave_time(info)) > parse_time(marker["saved_at"])


def prune(in_use=(), keep_newest: int | None = None, keep_days: float | None = None, root: Path | None = None,
          now: float | None = None, errors: list | None = None) -> list[Path]:
    """Remove image folders older than ``keep_days`` and beyond the ``keep_newest`` newest; returns those removed.

    Defaults: :data:`KEEP_NEWEST`, :data:`KEEP_DAYS`.
    Age is the newest modification time of anything in the folder's case
    folders.  Folders named in ``in_use`` (image hashes) and folders whose
    name is not a voxel hash are never touched.  A folder that cannot be
    removed is left and named in a :class:`RecoveryWarning`, or appended to
    ``errors`` (one line each) when a list is given (e.g. from a thread).
    """
    keep_newest = KEEP_NEWEST if keep_newest is None else keep_newest
    keep_days = KEEP_DAYS if keep_days is None else keep_days
    if keep_newest < 0 or not keep_days >= 0:
        raise ValueError(f"prune needs keep_newest >= 0 and keep_days >= 0; got {keep_newest}, {keep_days}")
    root = root or recovery_dir()
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    folders = sorted((p for p in root.iterdir() if p.is_dir() and _HASH_RE.match(p.name)), key=_mtime, reverse=True)
    removed, in_use = [], set(in_use)
    for folder in folders[keep_newest:]:
        if folder.name in in_use or now - _mtime(folder) < keep_days * 86400:
            continue
        try:
            shutil.rmtree(folder)
            removed.append(folder)
        except OSError as err:
            message = f"could not remove the old recovery folder {folder}: {err}"
            if errors is None:
                warnings.warn(message, RecoveryWarning, stacklevel=2)
            else:
                errors.append(message)
    return removed


def _mtime(folder: Path) -> float:
    """Newest modification time of the folder, its entries and their entries (two levels: image / case)."""
    times = [_stat_mtime(folder)]
    for entry in _entries(folder):
        times.append(_stat_mtime(entry))
        times.extend(_stat_mtime(p) for p in _entries(entry))
    return max(times)


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir()) if folder.is_dir() else []
    except OSError:  # removed meanwhile (a save replaces its npz) or unreadable
        return []


def _stat_mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def parse_time(stamp: str) -> datetime:
    """An ISO-8601 time stamp as an aware datetime (naive stamps are UTC)."""
    when = datetime.fromisoformat(str(stamp))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
