"""Save and load one case's work (labels + slice ledger + status) in a folder, atomically.

Layout of a case folder (a script needs only numpy and json)::

    <case>/
      case.json            small metadata, written last (see below)
      state-000007.npz     labels        uint8 (z, y, x)   the labels as the user left them
                           model_output  uint8 (z, y, x)   the model's last output (ledger)
                           has_prediction bool (z,)        slices the model has segmented
                           reviewed      bool (z,)         slices marked "correct as it is"
                           scribbles     uint8 (z, y, x)   only when the case has scribbles: 0 = nothing
                                                           painted, 1..K organ strokes, K + 1 background
                                                           strokes (napari_medseg.scribbles)
                           slice_uncertainty float32 (z,) only when known: the mean uncertainty per slice
                                                           of the model output above (what *Suggest next
                                                           slice* ranks)

``case.json`` also records the user's effort on the case so far: ``changed_voxels`` (labels that
differ from the model output they were checked against: corrections, and everything painted on
slices no model segmented) and ``stroke_voxels`` (scribbled voxels, when there are scribbles).

``case.json`` holds ``format`` ("napari-medseg case"), ``version`` (1),
``revision`` (counts saves), ``state_file`` (the npz it belongs to),
``image_hash`` (:func:`napari_medseg.hashing.voxel_hash` of the image voxels),
``source_path``, ``label_set`` (``LabelSet.to_dict()``), ``status`` (one of
:data:`STATUSES`), ``saved_at`` (ISO-8601 UTC), ``shape`` and, for reading
without numpy, the ``edited``/``reviewed``/``locked`` slice lists (and ``scribbled``, the
slices holding strokes, when there are scribbles).  Slices are
axial indices along axis 0, inferior to superior.  ``edited`` is derived: a
slice whose labels differ from ``model_output``.

Atomic: each save writes a *new* npz (temp file + rename), then renames a new
``case.json`` that points to it over the old one, then removes older npz
files.  A kill at any moment leaves ``case.json`` pointing to a complete npz:
the previous state or the new one, never a mix.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .atomic import atomic_write, is_temp_name
from .retrain.ledger import SliceLedger

FORMAT = "napari-medseg case"
VERSION = 1
CASE_JSON = "case.json"
STATUSES = ("new", "in progress", "reviewed", "done")
_STATE_RE = re.compile(r"^state-(\d+)\.npz$")


class CaseStateError(ValueError):
    """A case folder that cannot be read (names the folder and what is wrong)."""


@dataclass
class CaseState:
    """One case as loaded from its folder.  ``labels`` uint8 (z, y, x)."""

    folder: Path
    labels: np.ndarray
    ledger: SliceLedger
    image_hash: str
    source_path: str | None
    label_set: dict | None
    status: str
    saved_at: str
    revision: int
    extra: dict = field(default_factory=dict)
    scribbles: np.ndarray | None = None  # uint8 (z, y, x) scribble layer data, when saved with the case
    slice_uncertainty: np.ndarray | None = None  # float32 (z,): mean uncertainty per slice of the model output


def save_case(folder, labels, ledger: SliceLedger, *, image_hash: str, source_path=None, label_set: dict | None = None,
              status: str = "in progress", extra: dict | None = None, scribbles=None, slice_uncertainty=None) -> Path:
    """Write ``labels`` (integer, z, y, x, values 0..255) and ``ledger`` into ``folder``; returns ``case.json``.

    ``extra``: small JSON-safe fields kept in ``case.json`` (e.g. Dice history).
    ``scribbles``: the case's scribble layer data (integer, same shape, 0 = nothing painted), or None.
    ``slice_uncertainty``: ``(z,)`` mean uncertainty per slice of the model output, or None.
    """
    if status not in STATUSES:
        raise ValueError(f"case status must be one of {', '.join(STATUSES)}; got {status!r}")
    labels = np.asarray(labels)
    if labels.ndim != 3 or tuple(labels.shape) != ledger.shape:
        raise ValueError(f"labels shape {labels.shape} does not match the ledger's {ledger.shape}")
    _check_uint8_range("labels", labels)
    arrays = {"labels": labels.astype(np.uint8, copy=False), **ledger.to_state()}
    scribbled = None
    if scribbles is not None:
        scribbles = np.asarray(scribbles)
        if scribbles.shape != labels.shape:
            raise ValueError(f"scribbles shape {scribbles.shape} differs from the labels' {labels.shape}")
        _check_uint8_range("scribbles", scribbles)
        arrays["scribbles"] = scribbles.astype(np.uint8, copy=False)
        scribbled = slices_with_strokes(scribbles)
    if slice_uncertainty is not None:
        slice_uncertainty = np.asarray(slice_uncertainty, np.float32)
        if slice_uncertainty.shape != labels.shape[:1]:
            raise ValueError(f"slice_uncertainty shape {slice_uncertainty.shape} is not ({labels.shape[0]},)")
        arrays["slice_uncertainty"] = slice_uncertainty
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    previous = _read_json(folder) if (folder / CASE_JSON).exists() else None
    revision = max([int(previous.get("revision", 0)) if previous else 0] + _state_revisions(folder)) + 1
    state_name = f"state-{revision:06d}.npz"
    atomic_write(folder / state_name, lambda tmp: _write_npz(tmp, arrays), suffix=".npz")
    meta = {
        "format": FORMAT, "version": VERSION, "revision": revision, "state_file": state_name,
        "image_hash": str(image_hash), "source_path": None if source_path is None else str(source_path),
        "label_set": label_set, "status": status, "saved_at": datetime.now(timezone.utc).isoformat(),
        "shape": list(ledger.shape), "edited": ledger.edited, "reviewed": ledger.reviewed, "locked": ledger.locked,
        "changed_voxels": changed_voxels(arrays["labels"], arrays["model_output"]),
        **({} if scribbled is None else {"scribbled": scribbled,
                                         "stroke_voxels": int(np.count_nonzero(arrays["scribbles"]))}),
        **(extra or {}),
    }
    text = json.dumps(meta, indent=1)
    target = atomic_write(folder / CASE_JSON, lambda tmp: Path(tmp).write_text(text), suffix=".json")
    for old in folder.iterdir():  # the new state is in place: older ones (and stray temps) can go
        match = _STATE_RE.match(old.name)
        if (match and old.name != state_name) or (is_temp_name(old) and old.name.startswith(".state-")):
            old.unlink(missing_ok=True)
    return target


def save_case_snapshot(folder, labels, ledger_state: dict, **kwargs) -> Path:
    """:func:`save_case` from a ledger's :meth:`~SliceLedger.to_state` copy (``kwargs``: its keywords).

    For background writers: the GUI thread only copies ``labels`` and the state; rebuilding
    the ledger (a full compare of labels and model output) happens here.
    """
    return save_case(folder, labels, SliceLedger.from_state(ledger_state, labels), **kwargs)


def read_case_info(folder) -> dict:
    """``case.json`` of a case folder (cheap: no arrays); raises :class:`CaseStateError`."""
    return _read_json(Path(folder))


@dataclass
class CaseSummary:
    """One saved case of a project, from its ``case.json`` only (no arrays read).

    ``error`` is set (one line) when the case folder cannot be read; the other fields are then empty.
    Slices are axial indices, inferior to superior.
    """

    case_id: str
    folder: Path
    status: str = ""
    source_path: str | None = None
    shape: list[int] = field(default_factory=list)
    edited: list[int] = field(default_factory=list)
    reviewed: list[int] = field(default_factory=list)
    locked: list[int] = field(default_factory=list)
    scribbled: list[int] = field(default_factory=list)
    dice_before: float | None = None
    dice_after: float | None = None
    active_seconds: float | None = None
    changed_voxels: int | None = None
    stroke_voxels: int | None = None
    opened_at: str | None = None  # when the Cases dock first opened it (ISO-8601 UTC): the order cases were worked
    saved_at: str = ""
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON-safe fields (the export's ``cases.json`` rows)."""
        keys = ("case_id", "status", "source_path", "shape", "edited", "reviewed", "locked", "scribbled",
                "dice_before", "dice_after", "active_seconds", "changed_voxels", "stroke_voxels", "opened_at",
                "saved_at", "error")
        return {k: getattr(self, k) for k in keys}


def case_summary(folder) -> CaseSummary:
    """The :class:`CaseSummary` of the case saved in ``folder`` (``error`` set when its ``case.json`` is damaged)."""
    folder = Path(folder)
    summary = CaseSummary(case_id=folder.name, folder=folder)
    try:
        info = read_case_info(folder)
    except CaseStateError as err:
        summary.error = str(err)
        return summary
    summary.status = str(info["status"])
    summary.source_path = info.get("source_path")
    summary.saved_at = str(info["saved_at"])
    for key in ("shape", "edited", "reviewed", "locked", "scribbled"):
        setattr(summary, key, [int(v) for v in info.get(key, [])])
    for key in ("dice_before", "dice_after", "active_seconds", "changed_voxels", "stroke_voxels", "opened_at"):
        setattr(summary, key, info.get(key))
    return summary


def load_case(folder) -> CaseState:
    """The case saved in ``folder``; raises :class:`CaseStateError` naming what is missing or damaged."""
    folder = Path(folder)
    meta = _read_json(folder)
    state_path = folder / str(meta.get("state_file", ""))
    try:
        with np.load(state_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("labels", "model_output", "has_prediction", "reviewed")}
            scribbles = npz["scribbles"] if "scribbles" in npz.files else None
            scores = npz["slice_uncertainty"] if "slice_uncertainty" in npz.files else None
    except (OSError, ValueError, KeyError) as err:
        raise CaseStateError(f"case state {state_path} is missing or damaged ({err}); "
                             f"the case in {folder} cannot be restored") from None
    labels = arrays.pop("labels")
    if list(labels.shape) != list(meta.get("shape", [])):
        raise CaseStateError(f"{state_path}: labels shape {labels.shape} differs from case.json's {meta.get('shape')}")
    if scribbles is not None and scribbles.shape != labels.shape:
        raise CaseStateError(f"{state_path}: scribbles shape {scribbles.shape} differs from the labels' {labels.shape}")
    if scores is not None and scores.shape != labels.shape[:1]:
        raise CaseStateError(f"{state_path}: slice_uncertainty shape {scores.shape} is not ({labels.shape[0]},)")
    try:
        ledger = SliceLedger.from_state(arrays, labels)
    except ValueError as err:
        raise CaseStateError(f"{state_path}: {err}") from None
    known = {"format", "version", "revision", "state_file", "image_hash", "source_path", "label_set", "status",
             "saved_at", "shape", "edited", "reviewed", "locked", "scribbled", "changed_voxels", "stroke_voxels"}
    return CaseState(folder=folder, labels=labels, ledger=ledger, image_hash=meta["image_hash"],
                     source_path=meta.get("source_path"), label_set=meta.get("label_set"), status=meta["status"],
                     saved_at=meta["saved_at"], revision=int(meta["revision"]),
                     extra={k: v for k, v in meta.items() if k not in known}, scribbles=scribbles,
                     slice_uncertainty=scores)


def changed_voxels(labels: np.ndarray, model_output: np.ndarray, slab: int = 32) -> int:
    """Voxels where ``labels`` differ from ``model_output`` (both (z, y, x)), counted ``slab`` slices at a
    time (no full-size temporary for a 512 x 512 x 600 case)."""
    return int(sum(np.count_nonzero(labels[z:z + slab] != model_output[z:z + slab])
                   for z in range(0, labels.shape[0], slab)))


def slices_with_strokes(scribbles) -> list[int]:
    """The axial slices (axis 0) of a ``(z, y, x)`` scribble array that hold any stroke (non-zero value)."""
    data = np.asarray(scribbles)
    return [int(z) for z in np.flatnonzero(data.reshape(data.shape[0], -1).any(axis=1))]


def _check_uint8_range(what: str, array: np.ndarray) -> None:
    """ValueError unless ``array`` holds integers in 0..255 (it is stored as uint8)."""
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"case {what} must be integers, got {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise ValueError(f"case {what} must lie in 0..255, got {int(array.min())}..{int(array.max())}")


def _write_npz(path, arrays: dict) -> None:
    """``np.savez_compressed`` at deflate level 1: labels compress almost as well, several times faster."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def _state_revisions(folder: Path) -> list[int]:
    return [int(m.group(1)) for p in folder.iterdir() if (m := _STATE_RE.match(p.name))]


def _read_json(folder: Path) -> dict:
    path = folder / CASE_JSON
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CaseStateError(f"no saved case in {folder} ({CASE_JSON} is missing)") from None
    except (OSError, ValueError) as err:
        raise CaseStateError(f"{path} is unreadable or not JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CaseStateError(f"{path} is not a napari-medseg case file")
    if int(meta.get("version", 0)) > VERSION:
        raise CaseStateError(f"{path} was written by a newer napari-medseg (case format {meta.get('version')}); "
                             f"update the plugin to read it")
    missing = [k for k in ("revision", "state_file", "image_hash", "status", "saved_at", "shape") if k not in meta]
    if missing:
        raise CaseStateError(f"{path} lacks {', '.join(missing)}")
    return meta
