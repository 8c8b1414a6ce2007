"""Is a weak seed's weakness in its initial weights or in its crops and augmentation?  The inferior half of the
sample CT, k = 3, 360 fixed steps, one model, one thread, with the initial weights drawn under INIT_SEED and the
fine-tune's own seed (sampling, crops, augmentation) SEED, for every pair given.

    python bench/results/init-vs-sampling-20261207.py INIT_SEED:SEED[,INIT_SEED:SEED...] [STEPS] [HALF]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main():
    pairs = [tuple(int(v) for v in p.split(":")) for p in sys.argv[1].split(",")]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 360
    half = sys.argv[3] if len(sys.argv) > 3 else "inferior"
    torch.set_num_threads(1)
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.retrain import loop
    from napari_medseg.retrain.protocol import run_protocol

    original_prepare, original_seed = loop.prepare_model, torch.manual_seed
    init = {}

    def prepare_model(*args, **kwargs):  # the initial weights under init["seed"], not the fine-tune's seed
        torch.manual_seed = lambda _seed: original_seed(init["seed"])
        try:
            return original_prepare(*args, **kwargs)
        finally:
            torch.manual_seed = original_seed

    loop.prepare_model = prepare_model
    sample = read_volume(SAMPLE_CT)
    image, ref = sample.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    n = image.shape[0] // 2
    part = slice(0, n) if half == "inferior" else slice(n, None)
    for init_seed, seed in pairs:
        init["seed"] = init_seed
        with tempfile.TemporaryDirectory() as tmp:
            r = run_protocol(image[part], ref[part], 3, model_name="dcaunet", time_budget_s=None, device="cpu",
                             seed=seed, output_dir=Path(tmp), spacing=sample.geometry.spacing, options=dict(steps=steps))
        per = [round(float(d), 2) for d in r.dice.values()]
        print(f"ROW {half} k=3 init {init_seed} seed {seed} steps {r.steps} mean {r.mean_dice:.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
