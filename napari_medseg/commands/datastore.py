"""``medseg datastore``: list, prune or export the stored corrections."""

from __future__ import annotations

import argparse

from napari_medseg.cli import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "prune", "export"])
    parser.add_argument("--store", help="datastore folder (default: the user's data dir)")
    parser.add_argument("--id", action="append", dest="ids", help="prune: entry id (repeatable)")
    parser.add_argument("--source", help="prune: all entries of this source image")
    parser.add_argument("--keep-last", type=int, help="prune: keep only the newest N entries")
    parser.add_argument("--label-set", default="synapse", help="export: which label set (default synapse)")
    parser.add_argument("-o", "--output", help="export: new folder for the nnU-Net-style dataset")


def run(args: argparse.Namespace) -> int:
    from napari_medseg.retrain.datastore import CorrectionStore

    store = CorrectionStore(args.store) if args.store else CorrectionStore()
    if args.action == "list":
        entries = store.entries()
        print(f"{len(entries)} entries in {store.root}")
        for e in entries:
            print(f"  {e.id}  {e.num_slices:3d} slices  {e.label_set.get('name', '?'):<8}  {e.created}  {e.source}")
        return 0
    if args.action == "prune":
        if not (args.ids or args.source or args.keep_last is not None):
            raise CommandError("prune needs --id, --source or --keep-last")
        removed = store.prune(ids=args.ids, source=args.source, keep_last=args.keep_last)
        print(f"removed {len(removed)} entries" + ("".join(f"\n  {r}" for r in removed)))
        return 0
    if not args.output:
        raise CommandError("export needs -o/--output (a new folder)")
    out = store.export_nnunet(args.output, args.label_set)
    print(f"exported to {out} (train it with: medseg train --config ... --data-root {out})")
    return 0
