"""Experiment: does the recipe overfit when a run makes many more steps (a GPU makes ~10x a CPU's in a budget)?

Usage: python long-runs-20261207.py SEED STEPS[,STEPS...] [full|scribbles]
One model, one torch thread, fixed step budgets (the cosine schedule spans the steps), k = 5 on the sample
CT (its untouched slices) and patient B unseen, as in bench/second_patient.py.  ``scribbles``: fine-tune on
the simulated reviewer's strokes on the same 5 slices (bench/effort.py's) instead of the full slices.
"""
import json, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import second_patient as sp
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.checkpoint import load_checkpoint
from napari_medseg.inference import run_segmentation, segment_volume
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg.retrain.dice import dice
from napari_medseg.retrain.protocol import run_protocol

seed, budgets = int(sys.argv[1]), [int(s) for s in sys.argv[2].split(",")]
mode = sys.argv[3] if len(sys.argv) > 3 else "full"
v = read_volume(SAMPLE_CT)
ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
training = None
if mode == "scribbles":
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.scribbles import simulate_reviewer

    training, _ = simulate_reviewer(v.array, ref, evenly_spaced_slices(v.array.shape[0], 5), "ct")
b_vol = read_volume(str(sp.DICOM))
b_ref = read_volume(str(sp.synapse_labels(sp.DATA / "example_seg_dicom.nii.gz", "total",
                                          Path(tempfile.mkdtemp()) / "b.nii.gz"))).array.astype(np.uint8)
for steps in budgets:
    t = time.monotonic()
    r = run_protocol(v.array, ref, 5, time_budget_s=None, device="cpu", seed=seed, spacing=v.geometry.spacing,
                     members=1, options=dict(steps=steps), training_labels=training)
    model, info = load_checkpoint(r.checkpoint.path)
    labels = run_segmentation(segment_volume(b_vol.array, [(model.eval(), info)], device="cpu", uncertainty=False,
                                             spacing=b_vol.geometry.spacing)).labels
    present = [k for k in SYNAPSE.organs if (labels == k).any() or (b_ref == k).any()]
    losses = r.finetune.losses
    print(json.dumps(dict(mode=mode, seed=seed, steps=r.steps, sample=round(r.mean_dice, 4),
                          b_unseen=round(float(np.mean([dice(labels == k, b_ref == k) for k in present])), 4),
                          final_loss_mean_last50=round(float(np.mean(losses[-50:])), 4),
                          seconds=round(time.monotonic() - t, 1), dice={k: round(x, 3) for k, x in r.dice.items()})),
          flush=True)
