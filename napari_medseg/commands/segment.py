"""``medseg segment``: segment a volume (or a folder of volumes) with one or more checkpoints.

The model type, label set and preprocessing come from each checkpoint.  Several
``--checkpoint`` options make an ensemble (averaged softmax).  The output is
written in the input's geometry by ``napari_medseg.io.write_labels``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_medseg.commands._arguments import add_postprocess_arguments, postprocess_options
from napari_medseg.commands._outputs import (
    LABEL_SUFFIXES,
    check_label_outputs,
    check_output_file,
    output_suffix,
    write_label_output,
)
from napari_medseg.models.spec import PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="volume (NIfTI, DICOM folder, NRRD, MHA) or a folder of volumes")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output .nii.gz (a folder when INPUT is a folder of volumes)")
    parser.add_argument("--checkpoint", "-c", type=Path, action="append", required=True,
                        help="model checkpoint (.safetensors); repeat for an ensemble")
    parser.add_argument("--device", default="auto", help="auto (cuda -> mps -> cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    parser.add_argument("--tta", action="store_true",
                        help="average over flips (4x slower); only for checkpoints trained with flips (the "
                        "papers' recipes), refused for fine-tuned ones")
    add_postprocess_arguments(parser)
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                        help="auto = fp16/bf16 on CUDA; on CPU the faster of fp32/bf16 (timed once, cached)")
    parser.add_argument("--frame", type=int, default=None, help="time frame to segment in a 4D volume")
    parser.add_argument("--series", default=None, metavar="UID|INDEX",
                        help="DICOM folder with several series: the series UID, or its 0-based index (largest first)")
    parser.add_argument("--itksnap-labels", type=Path, default=None, metavar="FILE",
                        help="also write ITK-SNAP's label description file (names, colours)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (never an input of this run)")


def _is_volume_file(path: Path) -> bool:
    """A single-file volume (NIfTI, NRRD, MHA/MHD); DICOM slice files are not volumes on their own."""
    from napari_medseg.io import detect_format

    return path.is_file() and detect_format(path) in ("nifti", "nrrd", "mha")


def _batch_entries(folder: Path) -> list[Path]:
    """Visible entries of ``folder``, sorted; hidden names (temp files of interrupted writes, ``._x``) are skipped."""
    from napari_medseg.cli import CommandError

    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise CommandError(f"cannot list input folder {str(folder)!r}: {err.strerror}") from None
    return [p for p in entries if not p.name.startswith(".")]


def _unique_names(items: list[Path]) -> list[str]:
    """Output stems, one per input; inputs sharing a stem (``a.nii`` / ``a.nii.gz``) keep their extension in it."""
    from napari_medseg.io.read import volume_name

    stems = [volume_name(p) for p in items]
    names = []
    for p, stem in zip(items, stems):
        if stems.count(stem) > 1:
            ext = p.name[len(stem):] if p.name.startswith(stem) else p.suffix
            stem = stem + ext.replace(".", "_") if ext else stem + "_folder"
        names.append(stem)
    return names


def plan_jobs(input_path: Path, output: Path) -> list[tuple[Path, Path]]:
    """``[(input volume, output .nii.gz), ...]``, with unique outputs.

    A folder holding volume files or DICOM series sub-folders is a batch and
    ``output`` a folder (other sub-folders and hidden files are skipped); any
    other folder is one DICOM series.
    """
    from napari_medseg.cli import CommandError
    from napari_medseg.io import detect_format
    from napari_medseg.io.read import check_readable

    check_readable(input_path)
    if input_path.is_dir():
        entries = _batch_entries(input_path)
        files = [p for p in entries if _is_volume_file(p)]
        series = [p for p in entries if p.is_dir() and detect_format(p) == "dicom"]
        if files or (series and detect_format(input_path) != "dicom"):
            items = files + series
            if output_suffix(output, LABEL_SUFFIXES) or (output.exists() and not output.is_dir()):
                raise CommandError(f"INPUT {str(input_path)!r} is a folder of volumes, so --output must be a folder")
            return [(p, output / f"{name}.nii.gz") for p, name in zip(items, _unique_names(items))]
    if output_suffix(output, LABEL_SUFFIXES) is None:
        raise CommandError(f"--output must end in {' or '.join(LABEL_SUFFIXES)}, got {str(output)!r}")
    if output.name.lower().endswith(".dcm") and detect_format(input_path) != "dicom":
        raise CommandError(f"--output {output.name}: DICOM-SEG needs the source DICOM series, and {input_path.name} "
                           "is not one; write .nii.gz or .seg.nrrd")
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
    from napari_medseg.checkpoint import read_checkpoint_info
    from napari_medseg.cli import CommandError, one_line
    from napari_medseg.device import pick_device
    from napari_medseg.inference import check_same_label_set, load_checkpoints
    from napari_medseg.io.read import check_readable

    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    for ckpt in args.checkpoint:
        check_readable(ckpt)
        if not ckpt.is_file():
            raise CommandError(f"checkpoint {str(ckpt)!r} is a folder, not a .safetensors file")
    jobs = plan_jobs(args.input, args.output)
    if not jobs:
        raise CommandError(f"{args.input} holds no volumes")
    inputs = [src for src, _ in jobs] + list(args.checkpoint)
    check_label_outputs([dst for _, dst in jobs], inputs=inputs, overwrite=args.overwrite)
    if args.series is not None:
        from napari_medseg.io import detect_format
        from napari_medseg.io.dicom import pick_series

        if len(jobs) != 1 or detect_format(jobs[0][0]) != "dicom":
            raise CommandError("--series chooses a series in one DICOM folder; INPUT is not a DICOM folder")
        pick_series(jobs[0][0] if jobs[0][0].is_dir() else jobs[0][0].parent, args.series)  # refuse a bad choice now
    if args.itksnap_labels is not None:
        check_output_file(args.itksnap_labels, inputs=inputs, overwrite=args.overwrite, suffixes=None,
                          what="--itksnap-labels")
    label_set = check_same_label_set([_read_info(p, read_checkpoint_info) for p in args.checkpoint])
    device = pick_device(args.device)
    if len(jobs) == 1:  # read (and pick the frame) before loading the models
        vol = _read_input(jobs[0][0], args.frame, args.series)
        checkpoints = load_checkpoints(args.checkpoint, device=device)
        _segment_one(vol, *jobs[0], args, checkpoints, device, label_set, inputs)
    else:
        checkpoints = load_checkpoints(args.checkpoint, device=device)
        failed = []
        for src, dst in jobs:
            try:
                _segment_one(_read_input(src, args.frame), src, dst, args, checkpoints, device, label_set, inputs)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # a batch tries every input and reports each failure
                failed.append(f"{src.name} ({one_line(err)})")
        if failed:
            raise CommandError(f"{len(failed)} of {len(jobs)} inputs failed: " + "; ".join(failed))
    if args.itksnap_labels is not None:
        from napari_medseg.atomic import atomic_write
        from napari_medseg.io.itksnap import itksnap_label_text

        text = itksnap_label_text(label_set)
        atomic_write(args.itksnap_labels, lambda tmp: Path(tmp).write_text(text), suffix=".txt")
        print(f"ITK-SNAP label descriptions -> {args.itksnap_labels}")
    return 0


def _read_input(src: Path, frame: int | None, series: str | None = None):
    """The 3D volume to segment: ``src`` itself (``series`` of a DICOM folder), or its frame ``frame`` when 4D."""
    from napari_medseg.io import read_volume

    vol = read_volume(src, series_uid=series)
    if vol.array.ndim == 4:
        if frame is None:
            raise ValueError(f"{src.name} is 4D ({vol.array.shape[0]} frames); choose one with --frame T")
        try:
            return vol.frame(frame)
        except IndexError as err:
            raise ValueError(f"--frame: {err}") from None
    if frame is not None:
        raise ValueError(f"{src.name} is 3D; --frame applies to 4D volumes only")
    return vol


def _segment_one(vol, src: Path, dst: Path, args, checkpoints, device, label_set, inputs) -> None:
    """Segment one volume and write its labels; prints the result line and organ table."""
    from tqdm import tqdm

    from napari_medseg.inference import run_segmentation, segment_volume
    from napari_medseg.organ_stats import format_least_certain, format_table, organ_stats
    from napari_medseg.preprocess import modality_mismatch

    for _, info in checkpoints:
        mismatch = modality_mismatch(info.path.name, info.preprocessing.modality, vol.modality,
                                     remedy="segmented anyway (--checkpoint {an} {modality} model instead)")
        if mismatch:  # a warning, not an error: a NIfTI's modality is a guess from its intensities
            print(f"warning: {src.name}: {mismatch}", file=sys.stderr)
    gen = segment_volume(vol.array, checkpoints, device=device, precision=args.precision,
                         batch_size=args.batch_size, tta=args.tta, spacing=vol.geometry.spacing,
                         **postprocess_options(args))
    with tqdm(total=vol.array.shape[0], desc=src.name, unit="slice", disable=not sys.stderr.isatty(),
              file=sys.stderr) as bar:
        def report(p):
            bar.update(p.done - bar.n)
            bar.set_postfix_str(p.device)
        result = run_segmentation(gen, report)
    algorithm = None
    if dst.name.lower().endswith(".dcm"):  # hashing checkpoints only for DICOM-SEG
        from napari_medseg.io.dicom_seg import Algorithm

        algorithm = Algorithm.from_checkpoints([info for _, info in checkpoints])
    written = write_label_output(result.labels, dst, vol.geometry, label_set, inputs=inputs,
                                 overwrite=args.overwrite, algorithm=algorithm)
    unit = "HU" if vol.modality == "ct" else "a.u."
    print(f"{src} -> {written}  ({result.seconds:.1f} s, {result.slices_per_s:.1f} slices/s, "
          f"{result.device} {result.precision})")
    organs = organ_stats(result.labels, vol.geometry.spacing, label_set, vol.array, uncertainty=result.uncertainty)
    print(format_table(organs, unit=unit))
    if result.uncertainty is not None:
        print(UNCERTAINTY_NOTE)
    ranked = format_least_certain(organs)
    if ranked:
        print(f"organs to check first (the least certain found): {ranked}")
    hint = correct_first_hint(result.uncertainty, vol.geometry.spacing[0])
    if hint:
        print(hint)


#: What the organ table's uncertainty column means, printed under it.
UNCERTAINTY_NOTE = ("uncertainty: the mean normalised entropy inside the organ (0 = certain, 1 = guessing); "
                    "an organ the model is unsure of is the first to check")

#: Slices ``medseg segment`` proposes to correct first (for ``medseg finetune --slices``).
CORRECT_FIRST = 3


def correct_first_hint(uncertainty, slice_mm: float | None) -> str:
    """One line naming the most uncertain slices, kept apart (``suggest_slices``); "" without uncertainty."""
    from napari_medseg.retrain.loop import SUGGESTION_GAP_MM, suggest_slices

    if uncertainty is None or uncertainty.shape[0] < 2:
        return ""
    picks = suggest_slices(uncertainty, range(uncertainty.shape[0]), CORRECT_FIRST, slice_mm=slice_mm)
    return (f"slices to correct first (the most uncertain, about {SUGGESTION_GAP_MM:.0f} mm apart; "
            f"for medseg finetune --slices): {','.join(map(str, sorted(picks)))}")
