"""Where the sample's last Dice points go: per-slice organ Dice against the distance to the nearest corrected slice.

One model from scratch on the sample at k = 5 (the recipe, 900 fixed steps, seeds given), then, for each organ,
the Dice of each untouched slice that holds it in the reference or the prediction, grouped by the distance
(slices) to the nearest corrected slice; and each organ's share of the volume-level misses (false negatives +
false positives) on the untouched slices.

    python bench/results/pancreas-by-distance-20261208.py SEEDS
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main():
    seeds = [int(s) for s in sys.argv[1].split(",")]
    torch.set_num_threads(2)
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.retrain.protocol import run_protocol

    sample = read_volume(SAMPLE_CT)
    image, ref = sample.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_protocol(image, ref, 5, time_budget_s=None, device="cpu", seed=seed, output_dir=Path(tmp),
                             spacing=sample.geometry.spacing, options=dict(steps=900))
        pred, corrected = np.asarray(r.labels), r.corrected
        untouched = [z for z in range(ref.shape[0]) if z not in corrected]
        dist = {z: min(abs(z - c) for c in corrected) for z in untouched}
        print(f"seed {seed}: mean {r.mean_dice:.4f}, corrected {corrected}", flush=True)
        misses = {}
        for value, name in SYNAPSE.organs.items():
            by_d = {}
            for z in untouched:
                a, b = pred[z] == value, ref[z] == value
                if a.any() or b.any():
                    by_d.setdefault(dist[z], []).append(2 * (a & b).sum() / (a.sum() + b.sum()))
            a, b = pred[untouched] == value, ref[untouched] == value
            misses[name] = int((a & ~b).sum() + (~a & b).sum())
            cells = "  ".join(f"d{d}: {np.mean(v):.2f} (n {len(v)})" for d, v in sorted(by_d.items()))
            print(f"  {name:13s} volume Dice {r.dice.get(name, float('nan')):.2f}  per-slice by distance: {cells}", flush=True)
        total = sum(misses.values())
        print("  share of the misses (voxels): " + ", ".join(f"{k} {v / total:.2f}" for k, v in misses.items()), flush=True)


if __name__ == "__main__":
    main()
