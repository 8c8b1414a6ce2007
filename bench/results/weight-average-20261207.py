"""Experiment: averaging the weights over the end of the schedule (SWA-style), read out in the same run.

Usage: python weight-average-20261207.py SEEDS BUDGET_S [full|scribbles]
One member, one torch thread (what each of the default's two members gets), the sample CT, k = 5.
Each run is scored three times through the same pipeline (locked corrected slices, smoothing across
slices, one piece per organ): its final weights (the recipe), and the uniform average of the weights
(parameters and buffers) after every step from 50 % and from 75 % of the budget on.  Same trajectory,
so the three readouts are paired without seed noise.  Each readout also segments patient B (the DICOM
series, unseen; TotalSegmentator's labels as in bench/second_patient.py).  ``scribbles``: fine-tune on the
simulated reviewer's strokes on the same 5 slices instead of the full slices.
"""
import json, sys, time

import numpy as np
import torch

torch.set_num_threads(1)
import napari_medseg.retrain.finetune as ft
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.checkpoint import load_checkpoint
from napari_medseg.inference import run_segmentation, segment_volume
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg.retrain.protocol import run_protocol, untouched_dice

STARTS = (0.5, 0.75)
state = {}
orig_train, orig_keep = ft._train, ft._keep_if_better


def averaging_train(model, config, run, result):
    sums = {s: None for s in STARTS}
    counts = {s: 0 for s in STARTS}
    for progress in orig_train(model, config, run, result):
        snap = None
        for s in STARTS:
            if progress.fraction >= s:
                snap = snap if snap is not None else ft._snapshot(model, run)
                if sums[s] is None:
                    sums[s] = {k: v.double() if v.is_floating_point() else v.clone() for k, v in snap.items()}
                else:
                    for k, v in snap.items():
                        if v.is_floating_point():
                            sums[s][k] += v
                        else:
                            sums[s][k] = v.clone()
                counts[s] += 1
        yield progress
    state["avg"] = {s: {k: (v / counts[s]).float() if v.is_floating_point() else v for k, v in sums[s].items()}
                    for s in STARTS if counts[s]}
    state["counts"] = dict(counts)


def keep(model, run, result, step, final=False):
    orig_keep(model, run, result, step, final)
    if final:
        state["final"] = result.best_state


ft._train, ft._keep_if_better = averaging_train, keep

seeds, budget = [int(s) for s in sys.argv[1].split(",")], float(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else "full"
v = read_volume(SAMPLE_CT)
ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import tempfile
from pathlib import Path

import second_patient as sp
from napari_medseg.retrain.loop import evenly_spaced_slices
from napari_medseg.scribbles import simulate_reviewer

b_vol = read_volume(str(sp.DICOM))
b_ref = read_volume(str(sp.synapse_labels(sp.DATA / "example_seg_dicom.nii.gz", "total",
                                          Path(tempfile.mkdtemp()) / "b.nii.gz"))).array.astype(np.uint8)
training = None
if mode == "scribbles":
    training, _ = simulate_reviewer(v.array, ref, evenly_spaced_slices(v.array.shape[0], 5), "ct")


def b_unseen(model, info):
    labels = run_segmentation(segment_volume(b_vol.array, [(model.eval(), info)], device="cpu", uncertainty=False,
                                             spacing=b_vol.geometry.spacing)).labels
    present = [(k, n) for k, n in SYNAPSE.organs.items() if (labels == k).any() or (b_ref == k).any()]
    from napari_medseg.retrain.dice import dice
    return round(float(np.mean([dice(labels == k, b_ref == k) for k, _ in present])), 4)
for seed in seeds:
    t = time.monotonic()
    r = run_protocol(v.array, ref, 5, time_budget_s=budget, device="cpu", seed=seed, spacing=v.geometry.spacing,
                     members=1, training_labels=training)
    row = dict(mode=mode, seed=seed, budget=budget, steps=r.steps, recipe=round(r.mean_dice, 4), counts=state["counts"])
    model, info = load_checkpoint(r.checkpoint.path)
    # what retrain_volume's re-segmentation does: full slices locked; scribbled slices filled, their strokes kept
    pipeline = (dict(strokes={z: training[z] for z in r.corrected}) if training is not None
                else dict(locked=r.corrected, previous=ref))
    for s, avg in state["avg"].items():
        model.load_state_dict({**model.state_dict(), **avg})
        labels = run_segmentation(segment_volume(v.array, [(model.eval(), info)], device="cpu", uncertainty=False,
                                                 spacing=v.geometry.spacing, **pipeline)).labels
        dice = untouched_dice(labels, ref, r.corrected, SYNAPSE)
        row[f"avg_from_{s}"] = round(float(np.nanmean(list(dice.values()))), 4)
        row[f"dice_avg_{s}"] = {k: round(x, 3) for k, x in dice.items()}
        row[f"b_avg_{s}"] = b_unseen(model, info)
    model.load_state_dict({**model.state_dict(), **state["final"]})  # the final weights through this same path
    labels = run_segmentation(segment_volume(v.array, [(model.eval(), info)], device="cpu", uncertainty=False,
                                             spacing=v.geometry.spacing, **pipeline)).labels
    row["b_final"] = b_unseen(model, info)
    row["final_again"] = round(float(np.nanmean(list(untouched_dice(labels, ref, r.corrected, SYNAPSE).values()))), 4)
    row["dice_recipe"] = {k: round(x, 3) for k, x in r.dice.items()}
    row["seconds"] = round(time.monotonic() - t, 1)
    print(json.dumps(row), flush=True)
