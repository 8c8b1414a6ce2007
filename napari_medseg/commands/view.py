"""``medseg view``: launch napari with the plugin's docks and a volume (or the sample) loaded."""

from __future__ import annotations

import argparse
from pathlib import Path

DOCKS = ("Segment", "Correct and retrain", "Organ legend")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", help="volumes to open (NIfTI, DICOM folder, NRRD, MHA)")
    parser.add_argument("--sample", action="store_true", help="open the bundled abdominal CT with its labels")
    parser.add_argument("--no-docks", action="store_true", help="do not open the plugin's dock widgets")
    parser.add_argument("--series", metavar="UID|INDEX",
                        help="DICOM folders with several series: open this one (UID or 0-based index, largest first)")


def check_paths(paths) -> None:
    """Refuse, before napari starts, a path that cannot be opened (one line naming it and why)."""
    from napari_medseg.cli import CommandError
    from napari_medseg.io.read import check_readable

    for path in paths:
        try:
            check_readable(Path(path))
        except ValueError as err:
            raise CommandError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    check_paths(args.paths)
    import napari

    chosen = []  # with --series: read (and refuse a bad choice) before any window opens
    if args.series is not None:
        from napari_medseg._reader import volume_layer_data
        from napari_medseg.io import read_volume

        chosen = [volume_layer_data(read_volume(path, series_uid=args.series)) for path in args.paths]
    viewer = napari.Viewer(title="napari-medseg")
    if args.sample or not args.paths:
        viewer.open_sample("napari-medseg", "abdominal_ct")
    for path in args.paths if args.series is None else []:
        viewer.open(path, plugin="napari-medseg")
    for data, kwargs, kind in chosen:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    if not args.no_docks:
        for name in DOCKS:
            try:
                viewer.window.add_plugin_dock_widget("napari-medseg", name)
            except Exception as err:  # a dock failing must not stop the viewer from opening
                print(f"medseg view: could not open the {name!r} dock: {err}")
    napari.run()
    return 0
