"""The inferior half of the sample CT (15 slices) learned from k = 3 corrected slices at fixed steps, from scratch,
one model, one thread, per seed: the first step of ``bench/cross_patient.py``'s carry-over proxy, whose seed-0 model
fell to 0.66-0.70 on 2026-12-07 (0.81-0.84 in earlier runs, whose initial weights were random per process).

    python bench/results/seed-draws-halves-20261207.py SEEDS [STEPS] [HALF]    # e.g. 0,2,4 360 inferior
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main():
    seeds = [int(s) for s in sys.argv[1].split(",")]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 360
    half = sys.argv[3] if len(sys.argv) > 3 else "inferior"
    torch.set_num_threads(1)
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.retrain.protocol import run_protocol

    sample = read_volume(SAMPLE_CT)
    image, ref = sample.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    n = image.shape[0] // 2
    part = slice(0, n) if half == "inferior" else slice(n, None)
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_protocol(image[part], ref[part], 3, model_name="dcaunet", time_budget_s=None, device="cpu",
                             seed=seed, output_dir=Path(tmp), spacing=sample.geometry.spacing, options=dict(steps=steps))
        per = [round(float(d), 2) for d in r.dice.values()] if isinstance(r.dice, dict) else r.dice
        print(f"ROW {half} k=3 seed {seed} steps {r.steps} mean {r.mean_dice:.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
