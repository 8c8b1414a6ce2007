"""A worklist of cases (Qt-free): the volumes to segment, and each case's saved state in a project folder.

A worklist comes from a folder (every NIfTI, NRRD, MHA/MHD file and every
DICOM folder directly inside it, sorted by name) or from a text file (one path
a line, relative to the text file's folder; blank lines and ``#`` comments are
skipped).  Project folder layout (``docs/cases.md``)::

    <project>/
      project.json         the fine-tuned checkpoint versions made on its cases, oldest first
      cases/<case id>/     one napari_medseg.casestate folder per case (case.json + state-NNNNNN.npz)

``<case id>`` is ``<volume name>-<first 8 hex of sha256(resolved source path)>``,
so two ``ct.nii.gz`` in different folders get different cases.  Nothing is
ever written beside or over a source volume: a project folder inside a source
(a DICOM folder) or equal to one is refused.

The **newest checkpoint version** of a project (:func:`newest_checkpoint`) is
the last entry of ``project.json``'s ``checkpoints`` whose file still exists:
the last model fine-tuned on one of the project's cases.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .casestate import CASE_JSON, STATUSES, CaseStateError, case_summary, load_case
from .io.read import check_readable, detect_format, volume_name
from .io.volume import VolumeReadError

UNREADABLE = "unreadable"
CASES_DIR = "cases"
PROJECT_JSON = "project.json"
PROJECT_FORMAT = "napari-medseg project"


@dataclass
class CaseEntry:
    """One row of the worklist.  ``status``: one of ``casestate.STATUSES`` or ``"unreadable"``."""

    source: Path
    case_id: str
    status: str
    reason: str | None = None  # why it is unreadable (one line)
    corrected: int = 0  # edited + reviewed slices saved for the case
    scribbled: int = 0  # slices holding scribbles saved for the case (strokes, not corrections)
    dice_before: float | None = None
    dice_after: float | None = None
    active_seconds: float | None = None  # the user's active time on the case (Cases dock), when recorded
    changed_voxels: int | None = None  # labels differing from the model output they were checked against
    stroke_voxels: int | None = None  # scribbled voxels


def describe_effort(active_seconds=None, changed_voxels=None, stroke_voxels=None) -> str:
    """``"12.5 min active, 4,210 voxels changed, 320 of strokes"`` (the parts recorded), or ``""``."""
    parts = []
    if active_seconds is not None:
        parts.append(f"{float(active_seconds) / 60:.1f} min active")
    if changed_voxels is not None:
        parts.append(f"{int(changed_voxels):,} voxels changed")
    if stroke_voxels:
        parts.append(f"{int(stroke_voxels):,} of strokes")
    return ", ".join(parts)


def case_id(source) -> str:
    """Stable folder name of a source volume in a project (name + hash of the resolved path)."""
    source = Path(source).expanduser()
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]
    return f"{volume_name(source)}-{digest}"


def case_folder(project, source) -> Path:
    """``<project>/cases/<case id>``: where :mod:`napari_medseg.casestate` keeps the case."""
    return Path(project) / CASES_DIR / case_id(source)


def list_sources(path) -> list[Path]:
    """The volumes a folder or a text file names, in order; raises ValueError when ``path`` is neither."""
    path = Path(path).expanduser()
    if path.is_dir():
        if detect_format(path) == "dicom":  # the folder is itself one DICOM case
            return [path]
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        return [p for p in entries if detect_format(p) is not None]
    if path.is_file():
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read the worklist {path}: {err}") from None
        paths = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        return [(path.parent / Path(p).expanduser()) for p in paths]
    raise ValueError(f"worklist {path} is neither a folder nor a text file listing volumes")


def check_source(source: Path) -> str | None:
    """Why ``source`` cannot be opened (one line), or None when it looks readable.

    Cheap: no voxels are read; NIfTI, NRRD and MHA headers are (a corrupt file is caught here).
    """
    try:
        check_readable(source)
    except VolumeReadError as err:
        return str(err)
    kind = detect_format(source)
    if kind is None:
        kind = "folder without DICOM files" if source.is_dir() else "file that is not NIfTI, NRRD, MHA/MHD or DICOM"
        return f"{source.name} is a {kind}"
    return _header_problem(source, kind)


def _header_problem(source: Path, kind: str) -> str | None:
    """Why the header of a NIfTI / NRRD / MHA file cannot be read (one line), or None."""
    try:
        if kind == "nifti":
            import nibabel as nib

            nib.load(str(source)).header.get_data_shape()
        elif kind in ("nrrd", "mha"):
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(source))
            reader.ReadImageInformation()
    except Exception as err:  # nibabel and SimpleITK raise many types for bad files
        first = (str(err).strip().splitlines() or [type(err).__name__])[-1].strip()
        return f"{source.name}: header unreadable ({first}); the file is corrupt, truncated or not a {kind.upper()} file"
    return None


def read_worklist(path, project) -> list[CaseEntry]:
    """The worklist rows for ``path`` (folder or text file), with each case's saved state in ``project``.

    A case that cannot be opened, or whose saved state is damaged, is marked
    ``"unreadable"`` with the reason; the others stay usable.
    """
    rows = []
    for source in list_sources(path):
        entry = CaseEntry(source=source, case_id=case_id(source), status="new")
        entry.reason = check_source(source)
        if entry.reason is not None:
            entry.status = UNREADABLE
            rows.append(entry)
            continue
        rows.append(read_saved_state(entry, project))
    return rows


def read_saved_state(entry: CaseEntry, project) -> CaseEntry:
    """Fill ``entry``'s status, corrected slices and Dice from its ``case.json`` in ``project`` (cheap: no arrays)."""
    folder = case_folder(project, entry.source)
    if not (folder / CASE_JSON).exists():
        entry.status, entry.corrected, entry.scribbled, entry.dice_before, entry.dice_after = "new", 0, 0, None, None
        entry.active_seconds = entry.changed_voxels = entry.stroke_voxels = None
        return entry
    saved = case_summary(folder)
    if saved.error:
        entry.status, entry.reason = UNREADABLE, f"saved case state is damaged: {saved.error}"
        return entry
    entry.status = saved.status if saved.status in STATUSES else UNREADABLE
    if entry.status == UNREADABLE:
        entry.reason = f"{folder / CASE_JSON} has an unknown status {saved.status!r}"
    entry.corrected = len(saved.locked)
    entry.scribbled = len(set(saved.scribbled) - set(saved.locked))  # a reviewed one counts once
    entry.dice_before, entry.dice_after = saved.dice_before, saved.dice_after
    entry.active_seconds, entry.changed_voxels, entry.stroke_voxels = (saved.active_seconds, saved.changed_voxels,
                                                                       saved.stroke_voxels)
    return entry


def next_case(rows: list[CaseEntry], after: str | None = None) -> CaseEntry | None:
    """The first case after ``after`` (a case id) that is neither done nor unreadable."""
    start = next((i + 1 for i, r in enumerate(rows) if r.case_id == after), 0)
    return next((r for r in rows[start:] if r.status not in ("done", UNREADABLE)), None)


# ----------------------------------------------------------------- project folder
def default_project_dir() -> Path:
    """``<user data dir>/projects/default``: the project folder used until the user picks one."""
    from .userdirs import data_dir

    return data_dir() / "projects" / "default"


def check_project(project, sources) -> Path:
    """``project`` resolved; ValueError (one line) when it is a source or lies inside one."""
    project = Path(project).expanduser().resolve()
    for source in sources:
        source = Path(source).expanduser().resolve()
        if project == source or source in project.parents:
            raise ValueError(f"project folder {project} is inside the source {source}; "
                             f"pick a folder outside your scans (nothing is written beside a source)")
    return project


def read_project(project) -> dict:
    """``project.json`` (``{"format", "version", "checkpoints": [...]}``); an empty one when absent."""
    path = Path(project) / PROJECT_JSON
    if not path.exists():
        return {"format": PROJECT_FORMAT, "version": 1, "checkpoints": []}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is unreadable or not JSON ({err}); move it away to start a fresh checkpoint history") from None
    if not isinstance(meta, dict) or meta.get("format") != PROJECT_FORMAT or not isinstance(meta.get("checkpoints"), list):
        raise ValueError(f"{path} is not a napari-medseg project file")
    return meta


def record_checkpoint(project, checkpoint, case: str, *, dice_before=None, dice_after=None) -> bool:
    """Append a fine-tuned ``checkpoint`` made on ``case`` to ``project.json`` (atomic); False if already there."""
    meta = read_project(project)
    checkpoint = str(Path(checkpoint).expanduser().resolve())
    if any(entry.get("path") == checkpoint for entry in meta["checkpoints"]):
        return False
    meta["checkpoints"].append({"path": checkpoint, "case": case, "dice_before": dice_before, "dice_after": dice_after,
                                "saved_at": datetime.now(timezone.utc).isoformat()})
    Path(project).mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=1)
    atomic_write(Path(project) / PROJECT_JSON, lambda tmp: Path(tmp).write_text(text), suffix=".json")
    return True


def project_checkpoints(project) -> list[Path]:
    """The checkpoint versions recorded in ``project.json`` whose files exist, newest first."""
    paths = [Path(str(entry.get("path", ""))) for entry in reversed(read_project(project)["checkpoints"])]
    return [path for path in paths if path.is_file()]


def newest_checkpoint(project) -> Path | None:
    """The project's newest checkpoint version: the last one recorded whose file exists; None when none."""
    return next(iter(project_checkpoints(project)), None)


def choose_checkpoint(candidates, modality: str | None) -> tuple[Path | None, str | None]:
    """``(checkpoint, note)``: the first of ``candidates`` (preference order) made for ``modality``.

    A CT model segments an MR scan into organ-shaped noise (seen on TotalSegmentator's MR example with a
    model of the sample CT: a "liver" in the anterior wall, a left kidney on the right), which would cost
    the user more to erase than to paint. So a checkpoint of another modality is passed over; ``note``
    says which were and why (None when the first candidate fits, or the scan's modality is unknown).
    """
    from .checkpoint import read_checkpoint_info
    from .preprocess import modality_mismatch

    skipped = []
    for path in candidates:
        try:
            made_for = read_checkpoint_info(path).preprocessing.modality
        except (OSError, ValueError) as err:
            skipped.append(f"{Path(path).name} is unreadable ({' '.join(str(err).split())})")
            continue
        if modality_mismatch(Path(path).name, made_for, modality) is None:
            return Path(path), ("; ".join(skipped) + "; used " + Path(path).name) if skipped else None
        skipped.append(f"{Path(path).name} is a {made_for.upper()} model")
    if not skipped:
        return None, None
    return None, (f"no {modality.upper()} checkpoint yet ({'; '.join(skipped)}): opened with empty labels; "
                  f"paint a few slices and fine-tune from scratch")


def first_per_modality(candidates) -> list[tuple[str, Path]]:
    """``[(modality, checkpoint)]``: the first of ``candidates`` (preference order) made for each modality,
    in the order found; unreadable checkpoints are passed over (:func:`choose_checkpoint` says why)."""
    from .checkpoint import read_checkpoint_info

    found: dict[str, Path] = {}
    for path in candidates:
        try:
            modality = read_checkpoint_info(path).preprocessing.modality
        except (OSError, ValueError):
            continue
        found.setdefault(modality, Path(path))
    return list(found.items())


# ----------------------------------------------------------------- opening a case
@dataclass(frozen=True)
class CaseProgress:
    """``phase``: ``"read"`` or ``"segment"``; ``fraction`` in [0, 1] of that phase."""

    phase: str
    fraction: float
    message: str


@dataclass
class OpenedCase:
    """A case ready to show.  ``labels`` uint8 (z, y, x), or None (no checkpoint and nothing saved: start empty).

    ``ledger`` is the restored one (``restored``) or one holding the fresh model output;
    ``checkpoint`` the checkpoint that segmented it now (None when restored or empty).
    """

    entry: CaseEntry
    volume: object  # napari_medseg.io.Volume, canonical (z, y, x)
    image_hash: str
    labels: np.ndarray | None
    ledger: object | None  # SliceLedger
    label_set: dict | None
    status: str
    checkpoint: str | None = None
    restored: bool = False
    extra: dict = field(default_factory=dict)
    slice_uncertainty: np.ndarray | None = None  # (z,): mean uncertainty per slice of the model output (fresh or saved)
    organs: list | None = None  # organ_stats.OrganStat rows of the model output with mean uncertainty (fresh or saved)
    scribbles: np.ndarray | None = None  # uint8 (z, y, x): the scribble layer saved with the case, if any
    note: str | None = None  # why a candidate checkpoint was passed over (another modality), when one was


def open_case(entry: CaseEntry, project, checkpoint=None, *, device="auto", precision="auto") -> Iterator[CaseProgress]:
    """Read a case; restore its saved state exactly, or segment it with ``checkpoint``; returns :class:`OpenedCase`.

    ``checkpoint``: a path, or a list of candidate paths in preference order, of which the first made for the
    scan's modality segments it (:func:`choose_checkpoint`; none fits: empty labels, ``note`` says why).

    A generator (progress, then the result as its return value); closing it cancels.  Raises
    :class:`VolumeReadError` / :class:`CaseStateError` (one line) for an unreadable source or saved
    state; a saved state made on other voxels is refused and left untouched.
    """
    from .hashing import voxel_hash
    from .io.read import read_volume

    yield CaseProgress("read", 0.0, f"reading {entry.source.name}")
    vol = read_volume(entry.source)
    if vol.is_4d or vol.is_labels:
        what = "is 4D (time frames)" if vol.is_4d else "holds labels (few integer values), not an image"
        raise VolumeReadError(f"{entry.source.name} {what}; the Cases dock segments 3D CT/MR volumes")
    image_hash = voxel_hash(vol.array)
    folder = case_folder(project, entry.source)
    if (folder / CASE_JSON).exists():
        case = load_case(folder)
        if case.image_hash != image_hash or case.labels.shape != vol.array.shape:
            raise CaseStateError(f"the saved state in {folder} was made on other voxels (the source changed since); "
                                 f"it is left untouched: move that folder away to start the case afresh")
        from .organ_stats import rows_from_json

        return OpenedCase(entry, vol, image_hash, case.labels, case.ledger, case.label_set, case.status,
                          restored=True, extra=case.extra, scribbles=case.scribbles,
                          slice_uncertainty=case.slice_uncertainty, organs=rows_from_json(case.extra.get("organs")))
    candidates = [] if checkpoint is None else [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    checkpoint, note = choose_checkpoint(candidates, vol.modality)
    if checkpoint is None:
        return OpenedCase(entry, vol, image_hash, None, None, None, "in progress", note=note)
    labels, ledger, label_set, scores, organs = yield from _segment(vol, checkpoint, device, precision)
    return OpenedCase(entry, vol, image_hash, labels, ledger, label_set, "in progress", checkpoint=str(checkpoint),
                      slice_uncertainty=scores, organs=organs, note=note)


def _segment(vol, checkpoint, device, precision):
    """``(labels, ledger, label set dict, per-slice mean uncertainty (z,), organ stats)`` of ``checkpoint`` on ``vol``.

    A generator yielding CaseProgress.  The uncertainty map is reduced here, in the worker, to its slice
    means (what *Suggest next slice* ranks) and to each organ's mean (which organ to check first); the map
    itself is not kept."""
    from .checkpoint import load_checkpoint
    from .device import pick_device
    from .inference import segment_volume
    from .organ_stats import organ_stats
    from .retrain.ledger import SliceLedger
    from .retrain.loop import slice_uncertainty

    device = pick_device(device)
    model, info = load_checkpoint(checkpoint, device=str(device))
    gen = segment_volume(vol.array, [(model, info)], device=device, precision=precision,
                         spacing=vol.geometry.spacing)
    try:
        while True:
            p = next(gen)
            yield CaseProgress("segment", p.done / max(p.total, 1),
                               f"segmenting with {Path(checkpoint).name}: {p.done}/{p.total} slices")
    except StopIteration as stop:
        result = stop.value
    finally:
        gen.close()
    ledger = SliceLedger(result.labels.shape)
    ledger.record_model_output(result.labels, result.segmented)
    organs = organ_stats(result.labels, vol.geometry.spacing, info.label_set, vol.array, uncertainty=result.uncertainty)
    return result.labels, ledger, info.label_set.to_dict(), slice_uncertainty(result.uncertainty), organs


def fine_tune_dice(checkpoint, source) -> tuple[float, float] | None:
    """``(dice_before, dice_after)`` when ``checkpoint`` was fine-tuned on ``source`` (its provenance says so), else None."""
    from .checkpoint import read_checkpoint_info

    try:
        prov = read_checkpoint_info(checkpoint).provenance
    except (OSError, ValueError):
        return None
    image = prov.get("image")
    if not image or prov.get("dice_before") is None or prov.get("dice_after") is None:
        return None
    if Path(str(image)).expanduser().resolve() != Path(source).expanduser().resolve():
        return None
    return float(prov["dice_before"]), float(prov["dice_after"])
