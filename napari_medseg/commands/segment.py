"""``medseg segment``: segment a volume (or a folder of volumes) with one or more checkpoints.

The model type, label set and preprocessing come from each checkpoint.  Several
``--checkpoint`` options make an ensemble (averaged softmax).  The output is
written in the input's geometry by ``napari_medseg.io.write_labels``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="volume (NIfTI, DICOM folder, NRRD, MHA) or a folder of volumes")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output .nii.gz/.nii (NIfTI), .seg.nrrd (3D Slicer) or .dcm (DICOM-SEG, DICOM input); "
                             "a folder when INPUT is a folder of volumes")
    parser.add_argument("--checkpoint", "-c", type=Path, action="append", required=True,
                        help="model checkpoint (.safetensors); repeat for an ensemble")
    parser.add_argument("--device", default="auto", help="auto (cuda -> mps -> cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    parser.add_argument("--tta", action="store_true", help="average over flips (4x slower)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto = fp16/bf16 on CUDA; on CPU the faster of fp32/bf16 (timed once, cached)")
    parser.add_argument("--frame", type=int, default=None, help="time frame to segment in a 4D volume")
    parser.add_argument("--series", default=None, metavar="UID|INDEX",
                        help="DICOM folder with several series: the series UID, or its 0-based index (largest first)")
    parser.add_argument("--itksnap-labels", type=Path, default=None, metavar="FILE",
                        help="also write ITK-SNAP's label description file (names, colours)")


def _is_volume_file(path: Path) -> bool:
    """A single-file volume (NIfTI, NRRD, MHA/MHD); DICOM slice files are not volumes on their own."""
    from napari_medseg.io import detect_format

    return path.is_file() and detect_format(path) in ("nifti", "nrrd", "mha")


def plan_jobs(input_path: Path, output: Path) -> list[tuple[Path, Path]]:
    """``[(input volume, output .nii.gz), ...]``.

    A folder holding volume files (or sub-folders, read as DICOM series) is a
    batch and ``output`` a folder; any other folder is one DICOM series.
    """
    from napari_medseg.io.read import volume_name

    if not input_path.exists():
        raise FileNotFoundError(f"input {str(input_path)!r} does not exist")
    if input_path.is_dir():
        entries = sorted(input_path.iterdir())
        files = [p for p in entries if _is_volume_file(p)]
        if files or (entries and all(p.is_dir() for p in entries)):
            items = files + [p for p in entries if p.is_dir()]
            if output.suffix in (".nii", ".gz") or (output.exists() and not output.is_dir()):
                raise ValueError(f"INPUT {str(input_path)!r} is a folder of volumes, so --output must be a folder")
            return [(p, output / f"{volume_name(p)}.nii.gz") for p in items]
    from napari_medseg.io import detect_format
    from napari_medseg.io.writer import label_target

    try:
        _, fmt, _ = label_target(output)
    except ValueError as err:
        raise ValueError(f"--output: {err}") from None
    if fmt == "dicom-seg" and detect_format(input_path) != "dicom":
        raise ValueError(f"--output {output.name}: DICOM-SEG needs the source DICOM series, and {input_path.name} is not one; "
                         "write .nii.gz or .seg.nrrd")
    return [(input_path, output)]


def _read_info(path: Path, reader):
    """Checkpoint metadata, or a one-line CommandError naming the file."""
    from napari_medseg.cli import CommandError

    try:
        return reader(path)
    except Exception as err:  # CLI boundary: any unreadable file becomes one clear line
        reason = " ".join(str(err).split())
        raise CommandError(f"{path.name} is not a usable napari-medseg checkpoint: {reason}") from err


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_medseg.checkpoint import read_checkpoint_info
    from napari_medseg.device import pick_device
    from napari_medseg.inference import check_same_label_set, load_checkpoints, run_segmentation, segment_volume
    from napari_medseg.io import detect_format, read_volume, write_labels
    from napari_medseg.io.dicom_seg import Algorithm
    from napari_medseg.organ_stats import format_table, organ_stats

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    for ckpt in args.checkpoint:
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {str(ckpt)!r} does not exist")
    jobs = plan_jobs(args.input, args.output)
    if args.series is not None:
        from napari_medseg.io.dicom import pick_series

        if len(jobs) != 1 or detect_format(jobs[0][0]) != "dicom":
            raise ValueError("--series chooses a series in one DICOM folder; INPUT is not a DICOM folder")
        pick_series(jobs[0][0] if jobs[0][0].is_dir() else jobs[0][0].parent, args.series)  # refuse a bad choice now
    if args.itksnap_labels is not None:
        _check_itksnap_target(args.itksnap_labels, [src for src, _ in jobs], getattr(args, "overwrite", False))
    label_set = check_same_label_set([_read_info(p, read_checkpoint_info) for p in args.checkpoint])
    device = pick_device(args.device)
    checkpoints = load_checkpoints(args.checkpoint, device=device)
    tty = sys.stderr.isatty()
    wants_seg = any(dst.name.lower().endswith(".dcm") for _, dst in jobs)  # hashing checkpoints only for DICOM-SEG
    algorithm = Algorithm.from_checkpoints([info for _, info in checkpoints]) if wants_seg else None
    for src, dst in jobs:
        vol = read_volume(src, series_uid=args.series)
        if vol.array.ndim == 4:
            if args.frame is None:
                raise ValueError(f"{src.name} is 4D ({vol.array.shape[0]} frames); choose one with --frame T")
            vol = vol.frame(args.frame)
        for _, info in checkpoints:
            if vol.modality and vol.modality != info.preprocessing.modality:
                print(f"warning: {src.name} looks like {vol.modality.upper()} but the checkpoint was trained "
                      f"on {info.preprocessing.modality.upper()}", file=sys.stderr)
        gen = segment_volume(vol.array, checkpoints, device=device, precision=args.precision,
                             batch_size=args.batch_size, tta=args.tta)
        with tqdm(total=vol.array.shape[0], desc=src.name, unit="slice", disable=not tty, file=sys.stderr) as bar:
            def report(p):
                bar.update(p.done - bar.n)
                bar.set_postfix_str(p.device)
            result = run_segmentation(gen, report)
        dst.parent.mkdir(parents=True, exist_ok=True)
        written = write_labels(result.labels, dst, vol.geometry, label_set, algorithm=algorithm)
        unit = "HU" if vol.modality == "ct" else "a.u."
        print(f"{src} -> {written}  ({result.seconds:.1f} s, {result.slices_per_s:.1f} slices/s, "
              f"{result.device} {result.precision})")
        print(format_table(organ_stats(result.labels, vol.geometry.spacing, label_set, vol.array), unit=unit))
    if args.itksnap_labels is not None:
        from napari_medseg.atomic import atomic_write
        from napari_medseg.io.itksnap import itksnap_label_text

        text = itksnap_label_text(label_set)
        atomic_write(args.itksnap_labels, lambda tmp: Path(tmp).write_text(text), suffix=".txt")
        print(f"ITK-SNAP label descriptions -> {args.itksnap_labels}")
    return 0


def _check_itksnap_target(path: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse (before any work) a label file that is an input, exists (without --overwrite) or has no folder."""
    for src in inputs:
        if path.resolve() == src.resolve():
            raise ValueError(f"--itksnap-labels {path} is an input of this run; choose another file name")
    if path.exists() and (path.is_dir() or not overwrite):
        raise ValueError(f"--itksnap-labels {path} already exists; choose another name" + ("" if path.is_dir() else " or pass --overwrite"))
    if not path.parent.is_dir():
        raise ValueError(f"--itksnap-labels: folder {path.parent} does not exist")
