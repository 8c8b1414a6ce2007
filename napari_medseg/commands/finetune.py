"""``medseg finetune``: fine-tune on corrected slices of one volume, headless (same code as the GUI)."""

from __future__ import annotations

import argparse
import sys

from napari_medseg.cli import CommandError
from napari_medseg.labels import BUILTIN
from napari_medseg.models import family_spec, fine_tuning_scopes, model_names
from napari_medseg.models.spec import PRECISIONS
from napari_medseg.retrain.config import DEFAULT_ENTROPY_WEIGHT, DEFAULT_SIGMA_PER_STEP, DEFAULT_SMOOTHNESS_WEIGHT


def scope_defaults() -> str:
    """``"decoder for DCAU-Net, ..."``: each family's default scope, from its spec."""
    specs = [family_spec(name) for name in model_names()]
    return "; ".join(f"{s.finetune_scope} for {s.display} ({s.scratch_scope} from scratch)" for s in specs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="the image (NIfTI, DICOM folder, NRRD, MHA)")
    parser.add_argument("--labels", required=True, help="labels in the image's geometry; only --slices are read as truth")
    parser.add_argument("--slices",
                        help="corrected axial slices, comma-separated, counted from inferior to superior (e.g. 3,10,17); "
                             "required without --partial; with it, default: every slice holding a labelled pixel")
    parser.add_argument("--partial", action="store_true",
                        help="--labels are partial (scribbles, partial edits): 255 = not labelled (ignored), "
                             "0 = background the user asserted, 1..K = organs")
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--checkpoint", help="base checkpoint (.safetensors) to fine-tune")
    start.add_argument("--model", choices=model_names(), help="start from scratch with this model")
    parser.add_argument("--label-set", choices=sorted(BUILTIN), help="label set when starting from scratch")
    parser.add_argument("--modality", choices=["ct", "mr"], help="from scratch: override the guess (HU -> ct)")
    parser.add_argument("--members", type=int, metavar="N",
                        help="from scratch: train N models at once and save them as one averaged checkpoint "
                             "(default: 2 for DCAU-Net with --time-budget of 120 s or more on a CPU with two or "
                             "more threads, else 1; a checkpoint keeps its own)")
    parser.add_argument("--smoothness", type=float, default=None, metavar="W",
                        help="with --partial: weight of the edge-aware smoothness term that spreads labels from the "
                             f"strokes through homogeneous tissue (default {DEFAULT_SMOOTHNESS_WEIGHT:g}; 0 = off)")
    parser.add_argument("--smoothness-sigma", type=float, default=None, metavar="S",
                        help="with --partial: intensity difference (window units, 0..1) at which the smoothness term "
                        f"stops spreading labels (default: {DEFAULT_SIGMA_PER_STEP:g} x the slices' typical "
                        "neighbour difference, so a blurred or noisy scan gets its own)")
    parser.add_argument("--entropy", type=float, default=None, metavar="W",
                        help="with --partial: weight of the term that asks the model to decide on the unlabelled "
                             f"pixels (mean normalised entropy; default {DEFAULT_ENTROPY_WEIGHT:g}; 0 = off)")
    parser.add_argument("--scope", choices=fine_tuning_scopes(), help=f"what to train (default: {scope_defaults()})")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--time-budget", type=float, help="seconds of fine-tuning (default 60)")
    budget.add_argument("--steps", type=int, help="optimiser steps instead of a time budget")
    parser.add_argument("--frame", type=int, help="time frame of a 4D image")
    parser.add_argument("--series", metavar="UID|INDEX",
                        help="--image is a DICOM folder with several series: its UID or 0-based index (largest first)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS), help="mixed precision (fp16: CUDA only)")
    parser.add_argument("--backbone-weights", default="auto",
                        help="U-DFA from scratch: DINOv2 weights file, 'hub', 'auto' or 'none' (random, tests only)")
    parser.add_argument("--store", help="corrections datastore folder (default: the user's data dir)")
    replay = parser.add_mutually_exclusive_group()
    replay.add_argument("--no-replay", action="store_true", help="do not replay earlier stored corrections")
    replay.add_argument("--replay-entry", action="append", metavar="ID",
                        help="replay only this store entry (repeatable; see: medseg datastore list)")
    parser.add_argument("-o", "--output", required=True, help="new checkpoint path (.safetensors); never overwritten")


def parse_slices(text: str) -> list[int]:
    try:
        slices = sorted({int(s) for s in text.replace(" ", "").split(",") if s})
    except ValueError:
        raise CommandError(f"--slices must be comma-separated integers, got {text!r}") from None
    if not slices:
        raise CommandError("--slices names no slice")
    return slices


def load_pair(image_path: str, labels_path: str, frame: int | None, series: str | None = None):
    """Image and labels volumes on one grid (canonical order), checked to describe the same space."""
    import numpy as np

    from napari_medseg.io import read_volume

    image = read_volume(image_path, series_uid=series)
    if image.is_4d:
        if frame is None:
            raise CommandError(f"{image_path} is 4D ({image.num_frames} frames); choose one with --frame")
        image = image.frame(frame)
    labels = read_volume(labels_path)
    if labels.is_4d:
        labels = labels.frame(frame if frame is not None else 0)
    if labels.array.shape != image.array.shape or not np.allclose(
        labels.geometry.world_affine(), image.geometry.world_affine(), atol=1e-3
    ):
        what = (f"shape {labels.array.shape} vs {image.array.shape}" if labels.array.shape != image.array.shape
                else "same shape, different position, spacing or orientation")
        raise CommandError(f"labels {labels_path} are not on the image's grid ({what}); resample them to the image first")
    return image, labels


def run(args: argparse.Namespace) -> int:
    from napari_medseg.commands._outputs import check_new_checkpoint
    from napari_medseg.progress import drive
    from napari_medseg.retrain.config import check_positive
    from napari_medseg.retrain.loop import StartFrom, retrain_volume
    from napari_medseg.retrain.members import describe_steps

    if args.model and not args.label_set:
        raise CommandError("--model needs --label-set (e.g. --label-set synapse)")
    check_positive("--time-budget", args.time_budget)  # before reading anything: nan/inf/0 would never end
    check_positive("--steps", args.steps, integer=True)
    check_positive("--members", args.members, integer=True)
    if args.slices is None and not args.partial:
        raise CommandError("--slices is required (e.g. --slices 3,10,17), unless --partial picks the labelled slices")
    slices = parse_slices(args.slices) if args.slices is not None else None
    store = check_store(args.store)
    check_new_checkpoint(args.output, inputs=[args.image, args.labels] + ([args.checkpoint] if args.checkpoint else []))
    image, labels = load_pair(args.image, args.labels, args.frame, args.series)
    slices, truth = _truth(labels.array, slices, args.partial, args.labels)
    weights = None if str(args.backbone_weights).lower() == "none" else args.backbone_weights
    start = StartFrom(checkpoint=args.checkpoint, model_name=args.model, label_set=args.label_set,
                      modality=args.modality, backbone_weights=weights, members=args.members)
    budget = args.time_budget if args.time_budget is not None else (None if args.steps else 60.0)
    options = dict(scope=args.scope, steps=args.steps, time_budget_s=budget, device=args.device, precision=args.precision)
    if args.smoothness is not None:
        options["smoothness_weight"] = args.smoothness
    if args.smoothness_sigma is not None:
        options["smoothness_sigma"] = args.smoothness_sigma
    if args.entropy is not None:
        options["entropy_weight"] = args.entropy
    gen = retrain_volume(
        image.array, truth, slices, start=start, spacing=image.geometry.spacing,
        source=str(args.image), options=options, store=store,
        replay=args.replay_entry or not args.no_replay, output=args.output, resegment=False, partial=args.partial,
    )
    result = drive(gen, _progress_printer())
    ft = result.finetune
    print(f"\nsaved {result.checkpoint.path}")
    if args.partial:
        print(f"  partial labels on slices {','.join(map(str, slices))} (unlabelled pixels ignored)")
    print(f"  {describe_steps(ft)} in {ft.seconds:.1f} s, final loss {ft.final_loss:.4f}, scope {ft.scope}, stopped by {ft.stopped_by}")
    if ft.best_step != ft.steps:  # held-out slices chose, or the loss diverged: an earlier snapshot
        best = "highest held-out Dice" if ft.dice_on == "held-out" else "lowest smoothed loss; the run diverged"
        print(f"  saved the weights of step {ft.best_step} ({best}), not of step {ft.steps}")
    print(f"  mean Dice on {ft.dice_on} slices: before {ft.dice_before:.3f}, after {ft.dice_after:.3f}")
    print("  " + (f"store {store.root}: replay off (--no-replay)" if args.no_replay else result.replay_plan.describe()))
    return 0


def _truth(labels, slices, partial: bool, path: str):
    """``(slices, uint8 labels)`` checked for fine-tuning; with ``partial``, ``slices`` default to the labelled ones."""
    from napari_medseg.labels import check_label_values
    from napari_medseg.scribbles import UNLABELLED, labelled_slices

    if not partial:
        for z in slices:
            if 0 <= z < labels.shape[0] and (labels[z] == UNLABELLED).any():
                raise CommandError(f"slice {z} of {path} holds label value {UNLABELLED} (= not labelled); "
                                   "pass --partial to fine-tune on partial labels, or label the whole slice")
        return slices, check_label_values(labels, slices)
    truth = check_label_values(labels, slices)  # integers 0..255 (the label set's range is checked later)
    if slices is None:
        slices = labelled_slices(truth)
        if not slices:
            raise CommandError(f"nothing is labelled in {path}: every value is {UNLABELLED}; paint some strokes first")
    return slices, truth


def check_store(path: str | None):
    """The ``--store`` datastore (default: the user's); a file or an unwritable folder is refused before any work."""
    from pathlib import Path

    from napari_medseg.commands._outputs import check_parent_writable
    from napari_medseg.retrain.datastore import CorrectionStore

    store = CorrectionStore(path) if path else CorrectionStore()
    if store.root.exists() and not store.root.is_dir():
        raise CommandError(f"--store {store.root} is a file, not a datastore folder")
    check_parent_writable(Path(store.root) / "meta.json", "--store")
    return store


def _progress_printer():
    """A tqdm bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", desc="fine-tune")

    def update(p):
        bar.n = int(round(100 * p.fraction))
        bar.set_postfix_str(p.message)
        bar.refresh()

    return update
