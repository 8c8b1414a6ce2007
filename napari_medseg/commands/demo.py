"""``medseg demo``: the correct-and-retrain loop on the bundled sample CT, headless.

From no checkpoint: k evenly spaced slices of the reference labels play the
user's corrections; the model is fine-tuned within a CPU budget and segments
the remaining slices; per-organ Dice on those untouched slices is printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=["dcaunet", "udfa"], default="dcaunet")
    parser.add_argument("--slices", type=int, default=5, help="number of corrected slices (default 5)")
    parser.add_argument("--time-budget", type=float, default=120.0, help="fine-tuning seconds (default 120)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-dir", default="medseg-demo", help="where labels, overlay and checkpoint go")
    parser.add_argument("--seed", type=int, default=0)


def untouched_dice(pred, ref, corrected, label_set) -> dict[str, float]:
    """Per-organ Dice over the slices not in ``corrected`` (the honest test set)."""
    import numpy as np

    from training.metrics import dice

    rest = [z for z in range(ref.shape[0]) if z not in set(corrected)]
    return {name: dice(pred[rest] == value, ref[rest] == value) for value, name in label_set.organs.items()}


def print_dice_table(scores: dict[str, float]) -> None:
    import numpy as np

    width = max(len(n) for n in scores)
    for name, value in scores.items():
        print(f"  {name:<{width}}  {value:.3f}")
    print(f"  {'mean':<{width}}  {np.nanmean(list(scores.values())):.3f}")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.datastore import CorrectionStore
    from napari_medseg.io import read_volume, write_labels
    from napari_medseg.overlay import overlay_grid, save_png
    from napari_medseg.retrain import StartFrom, drive, evenly_spaced_slices, retrain_volume

    t0 = time.monotonic()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, reference = read_volume(SAMPLE_CT), read_volume(SAMPLE_LABELS)
    ref = reference.array.astype(np.uint8)
    corrected = evenly_spaced_slices(image.array.shape[0], args.slices)
    print(f"sample CT {image.array.shape} (z, y, x), {args.slices} corrected slices: {corrected}")
    start = StartFrom(model_name=args.model, label_set="synapse", modality="ct",
                      backbone_weights=None if args.model == "udfa" else "auto")
    gen = retrain_volume(
        image.array, ref, corrected, start=start, spacing=image.geometry.spacing, source="medseg-demo sample CT",
        time_budget_s=args.time_budget, store=CorrectionStore(out / "corrections"), replay=False,
        output=_unused(out / f"demo-{args.model}.safetensors"), device=args.device, seed=args.seed,
    )
    last = [-1]

    def report(p):
        pct = int(100 * p.fraction) // 10
        if p.phase == "fine-tune" and pct != last[0]:
            last[0] = pct
            print(f"  {p.phase}: {int(100 * p.fraction):3d}%  {p.message}", flush=True)

    result = drive(gen, report)
    label_set = result.checkpoint.label_set
    scores = untouched_dice(result.labels, ref, corrected, label_set)
    print(f"\nDice on the {ref.shape[0] - len(corrected)} untouched slices ({args.model}, from scratch, "
          f"{result.finetune.steps} steps):")
    print_dice_table(scores)
    labels_path = write_labels(result.labels, _unused(out / "demo_labels.nii.gz"), image.geometry, label_set)
    rest = [z for z in range(ref.shape[0]) if z not in corrected]
    show = [rest[len(rest) // 4], rest[len(rest) // 2], rest[3 * len(rest) // 4]]
    png = save_png(overlay_grid(image.array, [ref, result.labels], show, label_set), out / "demo_overlay.png")
    print(f"\nlabels:     {labels_path}\noverlay:    {png} (rows: slices {show}; columns: CT, reference, prediction)")
    print(f"checkpoint: {result.checkpoint.path}")
    print(f"wall time:  {time.monotonic() - t0:.1f} s")
    return 0


def _unused(path: Path) -> Path:
    """``path`` or ``path`` with a counter, so earlier demo outputs are never overwritten."""
    if not path.exists():
        return path
    name = path.name
    stem, suffix = (name[: -len(".nii.gz")], ".nii.gz") if name.endswith(".nii.gz") else (path.stem, path.suffix)
    i = 2
    while (path.with_name(f"{stem}-{i}{suffix}")).exists():
        i += 1
    return path.with_name(f"{stem}-{i}{suffix}")
