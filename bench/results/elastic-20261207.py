"""Experiment: an elastic deformation on top of the recipe's augmentation (PATIENT_VARIATION), at equal wall time.

Usage: python elastic.py VARIANT SEEDS BUDGET_S [CASE]   (VARIANT: recipe, elastic, elastic_strong; CASE: sample, mr)
One member, one torch thread (what each of the default's two members gets); two variants side by side.
"""
import sys, time, json
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, "/work/main/bench")
from napari_medseg.io import read_volume
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.models.spec import PATIENT_VARIATION
from napari_medseg.retrain.protocol import run_protocol

VARIANTS = {
    "recipe": dict(PATIENT_VARIATION),
    "elastic": dict(PATIENT_VARIATION, p_elastic=0.3),
    "elastic_strong": dict(PATIENT_VARIATION, p_elastic=0.5, elastic_alpha=0.05),
}
variant, seeds, budget = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], float(sys.argv[3])
case = sys.argv[4] if len(sys.argv) > 4 else "sample"
if case == "sample":
    v = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8); modality = "ct"
else:
    from pathlib import Path
    from second_patient import DATA, synapse_labels
    v = read_volume(DATA / "example_mr_sm.nii.gz"); modality = "mr"
    ref = read_volume(synapse_labels(DATA / "example_seg_mr.nii.gz", "total_mr", Path(f"/tmp/e15/mr_{variant}.nii.gz"))).array.astype(np.uint8)
for seed in seeds:
    t = time.monotonic()
    r = run_protocol(v.array, ref, 5, time_budget_s=budget, device="cpu", seed=seed, spacing=v.geometry.spacing,
                     members=1, modality=modality, options=dict(augment=VARIANTS[variant]))
    print(json.dumps(dict(variant=variant, case=case, seed=seed, budget=budget, mean=round(r.mean_dice, 4), steps=r.steps,
                          seconds=round(time.monotonic() - t, 1),
                          dice={k: round(v, 3) for k, v in r.dice.items()})), flush=True)
