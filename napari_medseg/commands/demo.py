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
    from napari_medseg.models import model_names

    parser.add_argument("--model", choices=model_names(), default="dcaunet")
    parser.add_argument("--slices", type=int, default=5, help="number of corrected slices (default 5)")
    parser.add_argument("--time-budget", type=float, default=120.0, help="fine-tuning seconds (default 120)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-dir", default="medseg-demo", help="where labels, overlay and checkpoint go")
    parser.add_argument("--seed", type=int, default=0)


def print_dice_table(scores: dict[str, float]) -> None:
    import numpy as np

    width = max(len(n) for n in scores)
    for name, value in scores.items():
        print(f"  {name:<{width}}  {value:.3f}")
    print(f"  {'mean':<{width}}  {np.nanmean(list(scores.values())):.3f}")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume, write_labels
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.overlay import overlay_grid, save_png
    from napari_medseg.retrain.members import describe_steps
    from napari_medseg.retrain.protocol import run_protocol, unused_path

    t0 = time.monotonic()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, reference = read_volume(SAMPLE_CT), read_volume(SAMPLE_LABELS)
    ref = reference.array.astype(np.uint8)
    print(f"sample CT {image.array.shape} (z, y, x) at {image.geometry.spacing} mm; "
          f"{args.slices} corrected slices; {args.model} from scratch; {args.time_budget:.0f} s budget")
    if args.model == "udfa":
        print("note: no DINOv2 weights are used here, so U-DFA's frozen backbone is random: expect poor Dice")
    last = [-1]

    def report(p):
        decile = int(10 * p.fraction)
        if p.phase == "fine-tune" and decile != last[0]:
            last[0] = decile
            print(f"  fine-tune {int(100 * p.fraction):3d}%  {p.message}", flush=True)

    result = run_protocol(image.array, ref, args.slices, model_name=args.model, time_budget_s=args.time_budget,
                          device=args.device, seed=args.seed, output_dir=out, callback=report,
                          spacing=image.geometry.spacing)
    print(f"\nDice on the {ref.shape[0] - len(result.corrected)} untouched slices "
          f"(trained on slices {result.corrected}, "
          f"{describe_steps(result.finetune) if result.finetune is not None else 'untrained'}):")
    print_dice_table(result.dice)
    labels_path = write_labels(result.labels, unused_path(out / "demo_labels.nii.gz"), image.geometry, SYNAPSE)
    rest = [z for z in range(ref.shape[0]) if z not in result.corrected]
    show = [rest[len(rest) // 4], rest[len(rest) // 2], rest[3 * len(rest) // 4]]
    png = save_png(overlay_grid(image.array, [ref, result.labels], show, SYNAPSE), unused_path(out / "demo_overlay.png"))
    print(f"\nlabels:     {labels_path}\noverlay:    {png} (rows: slices {show}; columns: CT, reference, prediction)")
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint.path}")
    print(f"wall time:  {time.monotonic() - t0:.1f} s")
    return 0
