"""``medseg evaluate``: per-volume, per-organ DSC and HD95 of a checkpoint (or of saved predictions).

Examples::

    medseg evaluate --checkpoint model.safetensors --images imagesTs/ --labels labelsTs/ --out metrics.csv
    medseg evaluate --predictions preds/ --images imagesTs/ --labels labelsTs/ --label-set synapse --transunet-compatible
    medseg evaluate --checkpoint model.safetensors --synapse-root /data/Synapse --transunet-compatible
    medseg evaluate --checkpoint model.safetensors --acdc-root /data/ACDC            # the shipped ACDC test split

Images and labels pair by case name (``case01_0000.nii.gz`` or ``case01.nii.gz``
with ``case01.nii.gz``; ACDC's ``X.nii.gz`` with ``X_gt.nii.gz``, also in one
folder).  ``--synapse-root`` reorients the h5 volumes with the training
recipe's ``data.inplane`` (``--recipe``, else the ``recipe.yaml`` that
``medseg train`` wrote beside the checkpoint; ``--inplane`` overrides).  HD95 is in millimetres from the image spacing, or in
voxels with ``--transunet-compatible`` (TransUNet's ``calculate_metric_percase``
rules, so numbers compare with the papers' tables).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_medseg.commands._arguments import add_postprocess_arguments, postprocess_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", default=[], help="checkpoint(s) to segment with (several = ensemble)")
    parser.add_argument("--predictions", help="folder of predicted label volumes (instead of a checkpoint)")
    parser.add_argument("--images", help="folder of image volumes")
    parser.add_argument("--labels", help="folder of reference label volumes")
    parser.add_argument("--synapse-root", help="TransUNet's Synapse folder (test_vol_h5/, lists/) instead of "
                        "--images/--labels; needs h5py and a checkpoint; HD95 in voxels")
    parser.add_argument("--inplane", help="in-plane reorientation of --synapse-root volumes (transpose, flip_y, "
                        "flip_x joined by '+', or 'none'); default: the recipe's data.inplane")
    parser.add_argument("--recipe", help="training recipe whose data.inplane --synapse-root applies (default: "
                        "recipe.yaml beside the checkpoint, if any)")
    parser.add_argument("--acdc-root", help="ACDC as distributed (patientXXX/ folders) instead of --images/--labels: "
                        "evaluates the ED/ES frames of the shipped split (--acdc-split)")
    parser.add_argument("--acdc-split", default="test", choices=["train", "val", "test"],
                        help="which shipped ACDC split --acdc-root evaluates (default test: AgileFormer's 20 patients)")
    parser.add_argument("--label-set", help="synapse or acdc (default: the checkpoint's; required with --predictions)")
    parser.add_argument("--out", default="metrics.csv", help="CSV with per-case rows and means (default metrics.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--transunet-compatible", action="store_true",
                        help="TransUNet/Swin-Unet metric conventions: HD95 in voxels, (1, 0) for a prediction where the reference is empty, (0, 0) otherwise")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tta", action="store_true",
                        help="flip test-time augmentation (only for checkpoints trained with flips)")
    add_postprocess_arguments(parser)


def run(args) -> int:
    from napari_medseg.commands._outputs import check_output_file
    from napari_medseg.labels import get_label_set
    from training.evaluate import evaluate_cases, format_table, iter_cases, pair_files, summarise, write_csv

    if bool(args.checkpoint) == bool(args.predictions):
        raise ValueError("give either --checkpoint (segment now) or --predictions DIR (already segmented)")
    check_output_file(args.out, overwrite=args.overwrite, suffixes=(".csv",), what="--out")
    checkpoints = None
    if args.checkpoint:
        from napari_medseg.inference import load_checkpoints

        checkpoints = load_checkpoints(args.checkpoint)
        label_set = checkpoints[0][1].label_set
        if args.label_set and get_label_set(args.label_set).names != label_set.names:
            raise ValueError(f"--label-set {args.label_set} does not match the checkpoint's label set {label_set.name!r}")
    else:
        if not args.label_set:
            raise ValueError("--label-set is required with --predictions (synapse or acdc)")
        label_set = get_label_set(args.label_set)
    if args.synapse_root:
        from training.datasets import read_synapse_list
        from training.evaluate import iter_synapse_h5_cases

        if not checkpoints:
            raise ValueError("--synapse-root needs --checkpoint")
        n_cases = len(read_synapse_list(Path(args.synapse_root), "test_vol.txt"))
        inplane = synapse_inplane(args)
        print(f"Synapse volumes reoriented in-plane: {inplane or 'no'}", file=sys.stderr)
        cases = iter_synapse_h5_cases(args.synapse_root, checkpoints, inplane=inplane, device=args.device,
                                      batch_size=args.batch_size, tta=args.tta,
                                      **postprocess_options(args))
    elif args.acdc_root:
        from training.evaluate import acdc_pairs

        pairs = acdc_pairs(args.acdc_root, args.acdc_split, args.predictions)
        n_cases = len(pairs)
        cases = iter_cases(pairs, checkpoints, device=args.device, batch_size=args.batch_size, tta=args.tta,
                           **postprocess_options(args))
    else:
        if not (args.images and args.labels):
            raise ValueError("give --images and --labels folders (or --synapse-root, or --acdc-root)")
        pairs = pair_files(args.images, args.labels, args.predictions)
        n_cases = len(pairs)
        cases = iter_cases(pairs, checkpoints, device=args.device, batch_size=args.batch_size, tta=args.tta,
                           **postprocess_options(args))

    def announce(stream):
        for i, case in enumerate(stream, 1):
            print(f"[{i}/{n_cases}] {case[0]}", file=sys.stderr)
            yield case

    rows = evaluate_cases(announce(cases), label_set, args.transunet_compatible)
    summary = summarise(rows, label_set, args.transunet_compatible)
    path = write_csv(rows, summary, args.out)
    print(format_table(summary))
    print(f"per-case metrics written to {path}")
    return 0


def synapse_inplane(args) -> str | None:
    """The in-plane reorientation for ``--synapse-root``: ``--inplane``, else the recipe's ``data.inplane``.

    The recipe is ``--recipe``, else ``recipe.yaml`` beside the first
    checkpoint (what ``medseg train`` writes), else none (no reorientation).
    """
    if args.inplane is not None:
        return None if args.inplane.lower() == "none" else args.inplane
    recipe_path = args.recipe
    if recipe_path is None and args.checkpoint:
        beside = Path(args.checkpoint[0]).parent / "recipe.yaml"
        recipe_path = beside if beside.exists() else None
    if recipe_path is None:
        return None
    from training.engine import load_recipe

    return (load_recipe(recipe_path).get("data") or {}).get("inplane")
