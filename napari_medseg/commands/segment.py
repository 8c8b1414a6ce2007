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
                        help="output .nii.gz (a folder when INPUT is a folder of volumes)")
    parser.add_argument("--checkpoint", "-c", type=Path, action="append", required=True,
                        help="model checkpoint (.safetensors); repeat for an ensemble")
    parser.add_argument("--device", default="auto", help="auto (cuda -> mps -> cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    parser.add_argument("--tta", action="store_true", help="average over flips (4x slower)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto = fp16/bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--frame", type=int, default=None, help="time frame to segment in a 4D volume")


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
    if not output.name.endswith((".nii.gz", ".nii")):
        raise ValueError(f"--output must end in .nii.gz or .nii, got {str(output)!r}")
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
    from napari_medseg.io import read_volume, write_labels
    from napari_medseg.organ_stats import format_table, organ_stats

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    for ckpt in args.checkpoint:
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {str(ckpt)!r} does not exist")
    jobs = plan_jobs(args.input, args.output)
    label_set = check_same_label_set([_read_info(p, read_checkpoint_info) for p in args.checkpoint])
    device = pick_device(args.device)
    checkpoints = load_checkpoints(args.checkpoint, device=device)
    tty = sys.stderr.isatty()
    for src, dst in jobs:
        vol = read_volume(src)
        if vol.array.ndim == 4:
            if args.frame is None:
                raise ValueError(f"{src.name} is 4D ({vol.array.shape[0]} frames); choose one with --frame T")
            vol = vol.frame(args.frame)
        for _, info in checkpoints:
            if vol.modality and vol.modality != info.preprocessing.modality:
                print(f"warning: {src.name} looks like {vol.modality.upper()} but the checkpoint was trained "
                      f"on {info.preprocessing.modality.upper()}", file=sys.stderr)
        gen = segment_volume(vol.array, checkpoints, device=device, precision=args.precision,
                             batch_size=args.batch_size, tta=args.tta, spacing=vol.geometry.spacing)
        with tqdm(total=vol.array.shape[0], desc=src.name, unit="slice", disable=not tty, file=sys.stderr) as bar:
            def report(p):
                bar.update(p.done - bar.n)
                bar.set_postfix_str(p.device)
            result = run_segmentation(gen, report)
        dst.parent.mkdir(parents=True, exist_ok=True)
        written = write_labels(result.labels, dst, vol.geometry, label_set)
        unit = "HU" if vol.modality == "ct" else "a.u."
        print(f"{src} -> {written}  ({result.seconds:.1f} s, {result.slices_per_s:.1f} slices/s, "
              f"{result.device} {result.precision})")
        print(format_table(organ_stats(result.labels, vol.geometry.spacing, label_set, vol.array), unit=unit))
    return 0
