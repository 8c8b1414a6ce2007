"""Paired: one training run per seed; Dice of the old rule's lowest-loss snapshot and of the final weights.

Run from the repository root: OMP_NUM_THREADS=1 python bench/results/keep-final-20261206-0906.py 0,1,2 1300
(it puts the old rule back by monkeypatching; the log beside it holds seeds 0-2 and 3-5)."""
import sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
import napari_medseg.retrain.finetune as F
def old_keep(model, run, result, step, final=False):
    ema = getattr(run, "ema", None)
    if ema is not None and (ema <= result.best_score if final else ema < result.best_score):
        result.best_score, result.best_state, result.best_step = ema, F._snapshot(model, run), step
F._keep_if_better = old_keep
stash = {}
orig_apply = F.FinetuneResult.apply
def apply(self, model):
    stash["final"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stash["best_step"], stash["steps"] = self.best_step, self.steps
    return orig_apply(self, model)
F.FinetuneResult.apply = apply
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg.retrain.protocol import run_protocol, untouched_dice
from napari_medseg.checkpoint import load_checkpoint
from napari_medseg.inference import run_segmentation, segment_volume
case = sys.argv[3] if len(sys.argv) > 3 else "sample"
a = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
if case == "512":
    sys.path.insert(0, "/work/main/bench"); from cross_patient import write_a_prime
    Path("/tmp/exp9/ap").mkdir(exist_ok=True); a, ref = write_a_prime(a.array, ref, a.geometry, Path("/tmp/exp9/ap"))
steps = int(sys.argv[2])
for seed in map(int, sys.argv[1].split(",")):
    r = run_protocol(a.array, ref, 5, model_name="dcaunet", time_budget_s=None, device="cpu", seed=seed,
                     output_dir=Path(f"/tmp/exp9/pp{seed}{case}"), spacing=a.geometry.spacing, options=dict(steps=steps))
    model, info = load_checkpoint(r.checkpoint.path)
    model.load_state_dict(stash["final"])
    lab = run_segmentation(segment_volume(a.array, [(model.eval(), info)], device="cpu", uncertainty=False,
                                          spacing=a.geometry.spacing, locked=r.corrected, previous=ref)).labels
    d = untouched_dice(lab, ref, r.corrected, SYNAPSE)
    fin = float(np.nanmean(list(d.values())))
    print(f"{case} seed {seed} steps {steps}: lowest-loss snapshot (step {stash['best_step']}) {r.mean_dice:.4f}  final {fin:.4f}  diff {fin - r.mean_dice:+.4f}", flush=True)
