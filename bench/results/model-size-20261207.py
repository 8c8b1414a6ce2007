"""Experiment: the scratch DCAU-Net's size at equal wall time (one member, one torch thread, k = 5).

Usage: python model_size.py VARIANT SEEDS BUDGET_S   (VARIANT: base, wide, deep, fullres, fullres8)
Two processes side by side, one thread each, is what each of the default's two members gets.
"""
import sys, time, json
import numpy as np, torch
torch.set_num_threads(1)
from napari_medseg.io import read_volume
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.retrain.protocol import run_protocol

VARIANTS = {
    "base": {},
    "wide": dict(dims=[48, 96, 192, 384]),
    "deep": dict(depths=[2, 2, 2, 1]),
    "fullres": dict(decoder_channels=[64, 32, 24, 32]),
    "dec": dict(decoder_channels=[96, 48, 32, 24]),
    "fullres8": dict(decoder_channels=[64, 32, 24, 8]),  # a narrower full-resolution step: 1.4x the steps
}
variant, seeds, budget = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], float(sys.argv[3])
a = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
for seed in seeds:
    t = time.monotonic()
    r = run_protocol(a.array, ref, 5, time_budget_s=budget, device="cpu", seed=seed, spacing=a.geometry.spacing,
                     members=1, model_config=VARIANTS[variant])
    n = sum(p.numel() for p in r.checkpoint.model.parameters()) if hasattr(r.checkpoint, "model") else -1
    print(json.dumps(dict(variant=variant, seed=seed, budget=budget, mean=round(r.mean_dice, 4), steps=r.steps,
                          seconds=round(time.monotonic() - t, 1),
                          dice={k: round(v, 3) for k, v in r.dice.items()})), flush=True)
