"""A project's saved cases, read without napari: a summary per case, and export of the labels in source geometry.

What ``medseg project list`` and ``medseg project export`` use (Qt-free)::

    cases = project_cases("~/.local/share/napari-medseg/projects/default")   # [CaseSummary], sorted by case id
    for case in cases:
        if case.status == "done":
            export_case(case, Path("out") / f"{case.case_id}.nii.gz")

A case's labels are saved in the plugin's canonical voxel order (axis 0 axial, inferior to superior);
:func:`export_case` reads the case's source volume again for its geometry and writes the labels in the
source's own voxel order and world coordinates (``io.write_labels``), after checking that the source still
holds the voxels the case was made on (``case.json``'s ``image_hash``).  It writes the last *saved* state:
the Cases dock saves on leaving a case, *Save case*, *Mark reviewed* / *Mark done* and after each fine-tune.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .casestate import CASE_JSON, CaseStateError, CaseSummary, case_summary, load_case
from .worklist import CASES_DIR

#: what :func:`export_case` writes, by the ``--format`` name (``io.writer.LABEL_FORMATS``)
EXPORT_SUFFIXES = {"nii.gz": ".nii.gz", "seg.nrrd": ".seg.nrrd", "dcm": ".dcm"}
#: the export folder's list of cases (one row per case: its summary, the file written or why not)
MANIFEST = "cases.json"


def project_cases(project) -> list[CaseSummary]:
    """Every case folder in ``<project>/cases`` that holds a ``case.json``, sorted by case id.

    A damaged ``case.json`` gives a summary with ``error`` set; the other cases are read as usual.
    Raises ``ValueError`` (one line) when ``project`` is not a folder.
    """
    project = Path(project).expanduser()
    if not project.is_dir():
        raise ValueError(f"project folder {project} does not exist")
    cases_dir = project / CASES_DIR
    folders = sorted(p for p in cases_dir.iterdir() if p.is_dir() and (p / CASE_JSON).exists()) if cases_dir.is_dir() else []
    return [case_summary(folder) for folder in folders]


def export_case(case: CaseSummary, target, *, overwrite: bool = False) -> Path:
    """Write ``case``'s saved labels to ``target`` (``.nii.gz``, ``.nii``, ``.seg.nrrd``; ``.dcm`` for
    DICOM sources) in its source's geometry, with the case's organ names; returns the path written.

    Raises ``ValueError`` (one line, naming the case) when the saved state or the source cannot be read,
    when the source's voxels changed since the case was saved, or when ``target`` exists and not ``overwrite``.
    """
    from .hashing import voxel_hash
    from .io import read_volume, write_labels
    from .labels import LabelSet

    target = Path(target)
    if case.error:
        raise ValueError(f"{case.case_id}: {case.error}")
    if target.exists() and not overwrite:
        raise ValueError(f"{case.case_id}: {target} already exists (pass overwrite to replace it)")
    if not case.source_path:
        raise ValueError(f"{case.case_id}: case.json names no source volume, so its geometry is unknown")
    try:
        state = load_case(case.folder)
        volume = read_volume(case.source_path)
    except (CaseStateError, OSError, ValueError) as err:
        raise ValueError(f"{case.case_id}: {' '.join(str(err).split())}") from None
    if volume.is_4d or voxel_hash(volume.array) != state.image_hash:
        raise ValueError(f"{case.case_id}: the source {case.source_path} no longer holds the voxels this case was "
                         "made on (it changed since); its labels are not exported in a geometry they may not fit")
    label_set = LabelSet.from_dict(state.label_set) if state.label_set else None
    return write_labels(state.labels, target, volume.geometry, label_set)


class OutputExists(ValueError):
    """A file an export would write exists already (the message names it)."""


@dataclass
class ExportPlan:
    """What :func:`run_export` writes: ``targets[case_id]`` per chosen case, and ``manifest``."""

    project: Path
    cases: list[CaseSummary]
    targets: dict[str, Path]
    manifest: Path
    overwrite: bool = False


def plan_export(project, out, *, statuses=None, suffix: str = ".nii.gz", overwrite: bool = False) -> ExportPlan:
    """Check an export of ``project``'s cases (those with a status in ``statuses``; all when None; damaged
    ones always, to be named) into the folder ``out`` before anything is written.

    Raises ``ValueError`` (one line) when no case matches, or ``out`` is a file or lies in a source
    folder; :class:`OutputExists` (a ``ValueError``) when, without ``overwrite``, a file to write exists.
    """
    project = Path(project).expanduser()
    cases = [c for c in project_cases(project) if statuses is None or c.status in statuses or c.error]
    if not cases:
        what = f" with status {' or '.join(statuses)}" if statuses else ""
        raise ValueError(f"no saved cases{what} in {project}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the label files")
    for case in cases:
        src = Path(case.source_path).expanduser() if case.source_path else None
        if src is not None and src.is_dir() and (out.resolve() == src.resolve() or src.resolve() in out.resolve().parents):
            raise ValueError(f"{out} is inside the source {src}; nothing is written beside a scan")
    targets = {c.case_id: out / f"{c.case_id}{suffix}" for c in cases}
    manifest = out / MANIFEST
    existing = [p.name for p in (*targets.values(), manifest) if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        what = f"{out / existing[0]} and {len(existing) - 1} more files already exist" if len(existing) > 1 else \
            f"{out / existing[0]} already exists"
        raise OutputExists(f"{what}; choose an empty folder")
    return ExportPlan(project, cases, targets, manifest, overwrite)


def run_export(plan: ExportPlan) -> Iterator[tuple[int, int, dict]]:
    """Export each case of ``plan``: yields ``(done, total, row)`` per case, then writes the manifest.

    A generator (closing it stops after the current case; the manifest then lists the cases done).
    ``row`` is :meth:`CaseSummary.to_dict` plus ``file`` (the name written, or None) and ``error``.
    A case that fails is recorded with its reason and the others go on; returns the rows.
    """
    from .atomic import atomic_write

    plan.manifest.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for case in plan.cases:
            row = case.to_dict()
            try:
                row["file"] = export_case(case, plan.targets[case.case_id], overwrite=plan.overwrite).name
            except (ValueError, OSError) as err:  # this case only: the others go on
                row["file"], row["error"] = None, " ".join(str(err).split())
            rows.append(row)
            yield len(rows), len(plan.cases), row
    finally:
        text = json.dumps({"format": "napari-medseg project export", "project": str(plan.project.resolve()),
                           "cases": rows}, indent=1)
        atomic_write(plan.manifest, lambda tmp: Path(tmp).write_text(text), suffix=".json")
    return rows
