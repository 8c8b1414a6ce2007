"""``medseg datastore``: list, check, prune or export the stored corrections.

Damaged entries (bad ``meta.json``, corrupt or missing ``slices.npz``) are named in a
one-line warning and skipped by ``list``, ``prune`` and ``export``; ``check`` lists
them and exits 2 if there is any (delete one with ``prune --id <folder name>``).
"""

from __future__ import annotations

import argparse

from napari_medseg.cli import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "check", "prune", "export"])
    parser.add_argument("--store", help="datastore folder (default: the user's data dir)")
    parser.add_argument("--id", action="append", dest="ids", help="prune: entry id (repeatable)")
    parser.add_argument("--source", help="prune: all entries of this source image")
    parser.add_argument("--keep-last", type=int, help="prune: keep only the newest N entries")
    parser.add_argument("--label-set", default="synapse", help="export: which label set (default synapse)")
    parser.add_argument("-o", "--output", help="export: new folder for the nnU-Net-style dataset")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad arguments before the store is touched (one line each)."""
    from pathlib import Path

    if args.store is not None:
        store = Path(args.store)
        if store.exists() and not store.is_dir():
            raise CommandError(f"--store {args.store} is a file, not a datastore folder")
        if args.action != "export" and not store.exists():
            raise CommandError(f"--store {args.store} does not exist")
    if args.action == "prune":
        if not (args.ids or args.source or args.keep_last is not None):
            raise CommandError("prune needs --id, --source or --keep-last")
        if args.keep_last is not None and args.keep_last < 1:
            raise CommandError(f"--keep-last must be 1 or more, got {args.keep_last}; to delete entries name them with --id")
        if args.source is not None and not args.source.strip():
            raise CommandError("--source is empty")
    if args.action == "export":
        from napari_medseg.labels import get_label_set

        if not args.output:
            raise CommandError("export needs -o/--output (a new folder)")
        get_label_set(args.label_set)
        check_export_folder(Path(args.output))


def check_export_folder(out) -> None:
    """The export goes to a new or empty folder whose nearest existing parent is writable."""
    from napari_medseg.commands._outputs import check_parent_writable

    if out.is_symlink() and not out.exists():
        raise CommandError(f"--output {out} is a broken symbolic link")
    if out.exists():
        if not out.is_dir():
            raise CommandError(f"--output {out} is a file; give a new folder for the export")
        try:
            if any(out.iterdir()):
                raise CommandError(f"--output {out} is not empty; choose a new folder for the export")
        except OSError as err:
            raise CommandError(f"--output {out} cannot be listed: {err.strerror}") from None
    check_parent_writable(out / "dataset.json", "--output")


def run(args: argparse.Namespace) -> int:
    from napari_medseg.retrain.datastore import CorrectionStore

    check_arguments(args)
    store = CorrectionStore(args.store) if args.store else CorrectionStore()
    if args.action == "list":
        entries = store.entries()
        print(f"{len(entries)} entries in {store.root}")
        for e in entries:
            scribbled = len(e.unlabelled_slices or ())  # not replayed automatically (docs/retrain.md)
            print(f"  {e.id}  {e.num_slices:3d} slices  {e.label_set.get('name', '?'):<8}  {e.modality or '?':<3}  "
                  f"{e.created}  {e.source}" + (f"  [{scribbled} scribbled: replayed only by --replay-entry]"
                                                if scribbled else ""))
        return 0
    if args.action == "check":
        entries, unreadable_meta = store.scan()
        damaged = store.check()
        print(f"{len(entries) + len(unreadable_meta)} entries in {store.root}, {len(damaged)} damaged")
        for d in damaged:
            print(f"  damaged: {d}")
        if damaged:
            print("  delete a damaged entry with: medseg datastore prune --store ... --id <folder name>")
        return 2 if damaged else 0
    if args.action == "prune":
        if args.ids:
            entries, damaged = store.scan()
            unknown = sorted(set(args.ids) - {e.id for e in entries} - {d.path.name for d in damaged})
            if unknown:
                raise CommandError(f"no entries with id {', '.join(unknown)} in {store.root}; see: medseg datastore list")
        removed = store.prune(ids=args.ids, source=args.source, keep_last=args.keep_last)
        print(f"removed {len(removed)} entries" + ("".join(f"\n  {r}" for r in removed)))
        return 0
    out = store.export_nnunet(args.output, args.label_set)
    print(f"exported to {out} (train it with: medseg train --config ... --data-root {out})")
    return 0
