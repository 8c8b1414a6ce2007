"""Experiment: the share of organ-centred crops (FinetuneConfig.crop_foreground), at equal wall time.

Usage: python crops.py SHARE SEEDS BUDGET_S   (the recipe: 0.5)
One member, one torch thread (what each of the default's two members gets); two shares side by side.
"""
import sys, time, json
import numpy as np, torch
torch.set_num_threads(1)
from napari_medseg.io import read_volume
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.retrain.protocol import run_protocol

share, seeds, budget = float(sys.argv[1]), [int(s) for s in sys.argv[2].split(",")], float(sys.argv[3])
v = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
for seed in seeds:
    t = time.monotonic()
    r = run_protocol(v.array, ref, 5, time_budget_s=budget, device="cpu", seed=seed, spacing=v.geometry.spacing,
                     members=1, options=dict(crop_foreground=share))
    print(json.dumps(dict(crop_foreground=share, seed=seed, budget=budget, mean=round(r.mean_dice, 4), steps=r.steps,
                          seconds=round(time.monotonic() - t, 1),
                          dice={k: round(v, 3) for k, v in r.dice.items()})), flush=True)
