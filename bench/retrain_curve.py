"""Dice on untouched slices against the number of corrected slices k (issue 6's benchmark).

For each model and k in {0, 2, 5, 10}: start from no checkpoint (U-DFA with a
random-init DINOv2 backbone: no weights are available offline), fine-tune on
k evenly spaced reference slices of the sample CT within the time budget,
segment the rest, and report per-organ Dice on the untouched slices, the mean
and the wall time.  k = 0 is the untrained model.  Writes a PNG plot of Dice
against k and a JSON of all numbers.

    python bench/retrain_curve.py                       # both models, k = 0 2 5 10, 120 s budget
    python bench/retrain_curve.py --models dcaunet --ks 5 --repeats 3
    python bench/retrain_curve.py --repeats 3 --repeat-ks 5   # docs/retrain.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import cpu_name  # bench/_machine.py (scripts run as python bench/NAME.py)


def plot(results: list[dict], path: Path) -> None:
    """Dice against k, one line per model (matplotlib if present, else a plain PNG chart)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written")
        return
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    for model in sorted({r["model"] for r in results}):
        rows = sorted((r for r in results if r["model"] == model), key=lambda r: r["k"])
        ks = sorted({r["k"] for r in rows})
        med = [np.median([r["mean_dice"] for r in rows if r["k"] == k]) for k in ks]
        ax.plot(ks, med, marker="o", label=model)
    ax.axhline(0.80, color="grey", lw=0.8, ls="--", label="target (DCAU-Net, k=5)")
    ax.set_xlabel("corrected slices k")
    ax.set_ylabel("mean Dice, untouched slices")
    ax.set_ylim(0, 1)
    ax.set_title("sample CT, from scratch, CPU budget")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="dcaunet,udfa")
    parser.add_argument("--ks", default="0,2,5,10")
    parser.add_argument("--time-budget", type=float, default=120.0, help="fine-tuning seconds per run")
    parser.add_argument("--repeats", type=int, default=1, help="seeds per setting (the table shows medians)")
    parser.add_argument("--repeat-ks", default=None, help="only these k get --repeats seeds (default: every k > 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="folder for the JSON and PNG")
    parser.add_argument("--include", default=None,
                        help="earlier JSON of this script: its rows for models not run now join the table and plot")
    parser.add_argument("--model-config", default=None, help="JSON overrides of the scratch preset (experiments)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--finetune-options", default=None,
                        help='JSON overrides of the scratch fine-tuning recipe, e.g. \'{"crop_size": 96, "augment": true}\'')
    args = parser.parse_args(argv)

    import torch

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.retrain.protocol import run_protocol

    if args.threads:
        torch.set_num_threads(args.threads)
    volume = read_volume(SAMPLE_CT)
    image, spacing = volume.array, volume.geometry.spacing
    reference = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(args.model_config) if args.model_config else None
    options = json.loads(args.finetune_options) if args.finetune_options else {}
    options.update({k: v for k, v in dict(lr=args.lr, batch_size=args.batch_size).items() if v is not None})
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); budget {args.time_budget:.0f} s of fine-tuning per run")
    repeat_ks = {int(v) for v in args.repeat_ks.split(",")} if args.repeat_ks else None
    results = []
    for model in args.models.split(","):
        for k in [int(v) for v in args.ks.split(",")]:
            seeds = args.repeats if k and (repeat_ks is None or k in repeat_ks) else 1
            for seed in range(seeds):
                load = os.getloadavg()[0]
                with tempfile.TemporaryDirectory(prefix="retrain_curve-") as work:  # its checkpoints: not kept
                    r = run_protocol(image, reference, k, model_name=model, time_budget_s=args.time_budget,
                                     model_config=config, device="cpu", seed=seed, options=options, spacing=spacing,
                                     output_dir=work)
                row = dict(model=model, k=k, seed=seed, mean_dice=r.mean_dice, seconds=r.seconds, steps=r.steps,
                           dice=r.dice, corrected=r.corrected, load_before=load)
                results.append(row)
                organs = " ".join(f"{v:.2f}" for v in r.dice.values())
                print(f"{model:8s} k={k:2d} seed={seed}  mean {r.mean_dice:.3f}  [{organs}]  "
                      f"{r.seconds:6.1f} s  {r.steps} steps  (load avg before {load:.1f})", flush=True)
    models = args.models.split(",")
    if args.include:
        earlier = json.loads(Path(args.include).read_text())["results"]
        kept = [r for r in earlier if r["model"] not in models]
        print(f"including {len(kept)} earlier rows from {args.include}")
        results = kept + results
        models = sorted({r["model"] for r in kept}) + models
    names = list(results[0]["dice"])
    print("\nmedians over seeds (Dice on untouched slices):")
    print(f"| model | k | {' | '.join(names)} | mean | seconds | steps |")
    print("|---|---|" + "---|" * (len(names) + 3))
    for model in models:
        for k in sorted({r["k"] for r in results if r["model"] == model}):
            rows = [r for r in results if r["model"] == model and r["k"] == k]
            organ = [np.median([r["dice"][n] for r in rows]) for n in names]
            print(f"| {model} | {k} | " + " | ".join(f"{v:.2f}" for v in organ)
                  + f" | **{np.median([r['mean_dice'] for r in rows]):.3f}** | {np.median([r['seconds'] for r in rows]):.0f} | {np.median([r['steps'] for r in rows]):.0f} |")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"retrain_curve-{stamp}.json").write_text(json.dumps(
        dict(machine=cpu_name(), cores=os.cpu_count(), torch=torch.__version__, budget_s=args.time_budget,
             argv=sys.argv[1:], included=args.include, results=results), indent=1))
    plot(results, out / "retrain_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
