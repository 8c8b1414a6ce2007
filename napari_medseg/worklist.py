"""A worklist of cases (Qt-free): the volumes to segment, and each case's saved state in a project folder.

A worklist comes from a folder (every NIfTI, NRRD, MHA/MHD file and every
DICOM folder directly inside it, sorted by name) or from a text file (one path
a line, relative to the text file's folder; blank lines and ``#`` comments are
skipped).  Project folder layout::

    <project>/
      cases/<case id>/     one napari_medseg.casestate folder per case (case.json + state-NNNNNN.npz)

``<case id>`` is ``<volume name>-<first 8 hex of sha256(resolved source path)>``,
so two ``ct.nii.gz`` in different folders get different cases.  Nothing is
ever written beside or over a source volume.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .casestate import STATUSES, CaseStateError, read_case_info
from .io.read import check_readable, detect_format, volume_name
from .io.volume import VolumeReadError

UNREADABLE = "unreadable"
CASES_DIR = "cases"


@dataclass
class CaseEntry:
    """One row of the worklist.  ``status``: one of ``casestate.STATUSES`` or ``"unreadable"``."""

    source: Path
    case_id: str
    status: str
    reason: str | None = None  # why it is unreadable (one line)
    corrected: int = 0  # edited + reviewed slices saved for the case
    dice_before: float | None = None
    dice_after: float | None = None


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
    """Why ``source`` cannot be opened (one line), or None when it looks readable (cheap: no voxels read)."""
    try:
        check_readable(source)
    except VolumeReadError as err:
        return str(err)
    if detect_format(source) is None:
        kind = "folder without DICOM files" if source.is_dir() else "file that is not NIfTI, NRRD, MHA/MHD or DICOM"
        return f"{source.name} is a {kind}"
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
        folder = case_folder(project, source)
        if (folder / "case.json").exists():
            try:
                info = read_case_info(folder)
            except CaseStateError as err:
                entry.status, entry.reason = UNREADABLE, f"saved case state is damaged: {err}"
            else:
                entry.status = info["status"] if info["status"] in STATUSES else UNREADABLE
                entry.corrected = len(info.get("locked", []))
                entry.dice_before, entry.dice_after = info.get("dice_before"), info.get("dice_after")
        rows.append(entry)
    return rows


def next_case(rows: list[CaseEntry], after: str | None = None) -> CaseEntry | None:
    """The first case after ``after`` (a case id) that is neither done nor unreadable."""
    start = next((i + 1 for i, r in enumerate(rows) if r.case_id == after), 0)
    return next((r for r in rows[start:] if r.status not in ("done", UNREADABLE)), None)
