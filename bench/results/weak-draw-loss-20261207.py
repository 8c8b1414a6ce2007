"""Does the training loss show a weak draw?  The inferior half of the sample CT, k = 3, 360 fixed steps, one model,
one thread, per seed (the run of ``seed-draws-halves-20261207.py``): Dice on its untouched slices next to the mean
training loss over the first 50, the middle and the last 50 steps.  A guard that restarts a weak run would need the
weak seed's loss to stand out early.

    python bench/results/weak-draw-loss-20261207.py SEEDS      # e.g. 0,2,4,6
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main():
    seeds = [int(s) for s in sys.argv[1].split(",")]
    torch.set_num_threads(1)
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.retrain.protocol import run_protocol

    sample = read_volume(SAMPLE_CT)
    image, ref = sample.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    part = slice(0, image.shape[0] // 2)
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_protocol(image[part], ref[part], 3, model_name="dcaunet", time_budget_s=None, device="cpu",
                             seed=seed, output_dir=Path(tmp), spacing=sample.geometry.spacing, options=dict(steps=360))
        losses = np.asarray(r.finetune.losses, dtype=float)
        n = len(losses)
        first, middle, last = losses[:50].mean(), losses[n // 2 - 25:n // 2 + 25].mean(), losses[-50:].mean()
        print(f"ROW seed {seed} steps {r.steps} dice {r.mean_dice:.4f} loss first50 {first:.3f} middle50 "
              f"{middle:.3f} last50 {last:.3f}", flush=True)


if __name__ == "__main__":
    main()
