"""``medseg project``: list a project's cases, or export their labels in each source's geometry.

``list`` prints one row per saved case (status, corrected slices, Dice of the last fine-tune,
the user's effort on it so far, when it was saved) and the project's newest fine-tuned checkpoint.  ``export`` writes each
chosen case's labels as ``<case id>.<format>`` into a folder, plus ``cases.json`` (one row per
case: status, source, the edited / reviewed / locked slices, the file written or why not).
Every output path is checked before anything is written; an existing file is an error unless
``--overwrite``.  A case that cannot be exported (source moved or changed, damaged state) is
named with its reason, the others are written, and the exit code is 2.  The Cases dock's
*Export labels…* runs the same code (:mod:`napari_medseg.project_export`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_medseg.cli import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from napari_medseg.casestate import STATUSES
    from napari_medseg.project_export import EXPORT_SUFFIXES

    parser.add_argument("action", choices=["list", "export"])
    parser.add_argument("--project", type=Path,
                        help="project folder (default: <data dir>/projects/default, the Cases dock's default)")
    parser.add_argument("-o", "--output", type=Path, help="export: folder for the label files (created if missing)")
    parser.add_argument("--status", action="append", choices=STATUSES,
                        help="export: only cases with this status (repeatable; default: every saved case)")
    parser.add_argument("--format", default="nii.gz", choices=sorted(EXPORT_SUFFIXES),
                        help="export: label file format (dcm = DICOM-SEG, DICOM sources only; default nii.gz)")
    parser.add_argument("--overwrite", action="store_true", help="export: replace label files that exist")


def run(args: argparse.Namespace) -> int:
    from napari_medseg.project_export import project_cases
    from napari_medseg.worklist import default_project_dir

    project = (args.project or default_project_dir()).expanduser()
    if args.action == "export" and args.output is None:
        raise CommandError("export needs -o/--output (a folder for the label files)")
    if args.action == "list":
        _print_list(project, project_cases(project))
        return 0
    return _export(project, args)


def _print_list(project: Path, cases) -> None:
    from napari_medseg.worklist import describe_effort, newest_checkpoint

    print(f"{len(cases)} saved case(s) in {project}, in the order they were first opened")
    cases = sorted(cases, key=lambda c: (c.opened_at or c.saved_at or "~", c.case_id))  # unreadable ones last
    for case in cases:
        if case.error:
            print(f"  {case.case_id}  unreadable: {case.error}")
            continue
        dice = "" if case.dice_after is None else f"  Dice {case.dice_before:.3f} -> {case.dice_after:.3f}"
        scribbled = sorted(set(case.scribbled) - set(case.locked))
        extra = f" + {len(scribbled)} scribbled" if scribbled else ""
        effort = describe_effort(case.active_seconds, case.changed_voxels, case.stroke_voxels)
        print(f"  {case.case_id}  {case.status:<11}  {len(case.locked)}{extra} corrected of {case.shape[0]} slices"
              f"{dice}{f'  ({effort})' if effort else ''}  saved {case.saved_at[:19]}  {case.source_path}")
    timed = [c for c in cases if c.active_seconds is not None]
    if timed:  # does the next patient cost less? (the product's measure: the user's effort per case)
        print("effort per case, in that order: " + ", ".join(f"{c.active_seconds / 60:.1f} min" for c in timed)
              + " active; " + ", ".join(f"{c.changed_voxels or 0:,}" for c in timed) + " voxels changed")
    try:
        newest = newest_checkpoint(project)
    except ValueError as err:
        newest = f"unreadable ({err})"
    print(f"newest fine-tuned checkpoint: {newest or 'none yet'}")


def _export(project: Path, args) -> int:
    from napari_medseg.progress import drive
    from napari_medseg.project_export import EXPORT_SUFFIXES, OutputExists, plan_export, run_export

    try:
        plan = plan_export(project, args.output, statuses=args.status, suffix=EXPORT_SUFFIXES[args.format],
                           overwrite=args.overwrite)
    except OutputExists as err:
        raise CommandError(f"{err}, or pass --overwrite") from None

    def report(progress) -> None:
        _done, _total, row = progress
        where = f"-> {row['file']}" if row["file"] else f"not exported: {row['error']}"
        print(f"  {row['case_id']}  {row['status'] or '?':<11}  {where}")

    rows = drive(run_export(plan), report)
    failed = [row["error"] for row in rows if row["file"] is None]
    print(f"exported {len(rows) - len(failed)} of {len(rows)} case(s) to {args.output} (list: {plan.manifest.name})")
    if failed:
        raise CommandError(f"{len(failed)} case(s) not exported: " + "; ".join(failed))
    return 0
