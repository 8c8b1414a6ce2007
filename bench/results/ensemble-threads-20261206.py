"""Experiment: at equal wall time (150 s, 2 cores), one model with 2 torch threads against two models trained at
once in two Python threads (1 torch thread each), segmented as an ensemble (softmax mean; the pipeline's
smoothing across slices and one-piece rule).

    python ensemble-threads-20261206.py REPEATS BUDGET_S [b]     # b: also segment patient B unseen
(repeats 0-2 ran without b, repeats 3 and 4 with it)."""
import sys, time, os, threading
sys.path.insert(0, "/work/main")
import numpy as np, torch
from types import SimpleNamespace
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.retrain import finetune as ft
from napari_medseg.retrain.loop import StartFrom, prepare_model, evenly_spaced_slices
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.models import family_spec
from napari_medseg.inference import segment_volume, run_segmentation
from napari_medseg.retrain.protocol import untouched_dice
a = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
vol, sp = a.array, a.geometry.spacing
zs = evenly_spaced_slices(vol.shape[0], 5)
budget = float(sys.argv[2])
def job(seed, out):
    torch.manual_seed(seed)
    model, ls, prep, _ = prepare_model(StartFrom(model_name="dcaunet", label_set="synapse", modality="ct"), vol)
    data = ft.FinetuneData(images=[vol[z] for z in zs], labels=[ref[z] for z in zs], preprocessing=prep, spacing=sp)
    cfg = FinetuneConfig(**{**family_spec("dcaunet").recipe(True), "time_budget_s": budget, "device": "cpu", "seed": seed})
    r = ft.run_finetune(ft.finetune(model, data, cfg))
    out.append((model, prep, r.steps))
sys.path.insert(0, "/work/main/bench")
from second_patient import synapse_labels, DATA, DICOM
from pathlib import Path
B = read_volume(DICOM)
b_ref = read_volume(synapse_labels(DATA / "example_seg_dicom.nii.gz", "total", Path(f"/tmp/ctx/bl_{os.getpid()}.nii.gz"))).array.astype(np.uint8)
def score_b(models):
    if sys.argv[3:] != ["b"]:
        return float("nan")
    cks = [(m, SimpleNamespace(label_set=SYNAPSE, preprocessing=p, model_name="dcaunet", path=f"m{i}")) for i, (m, p, _) in enumerate(models)]
    lab = run_segmentation(segment_volume(B.array, cks, device="cpu", spacing=B.geometry.spacing)).labels
    return float(np.nanmean(list(untouched_dice(lab, b_ref, [], SYNAPSE).values())))
def score(models):
    cks = [(m, SimpleNamespace(label_set=SYNAPSE, preprocessing=p, model_name="dcaunet", path=f"m{i}")) for i, (m, p, _) in enumerate(models)]
    lab = run_segmentation(segment_volume(vol, cks, device="cpu", locked=zs, previous=ref, spacing=sp)).labels
    return float(np.nanmean(list(untouched_dice(lab, ref, zs, SYNAPSE).values())))
for rep in [int(s) for s in sys.argv[1].split(",")]:
    torch.set_num_threads(2); out = []; t = time.monotonic(); job(100 + rep, out); single = score(out)
    single_b = score_b(out)
    print(f"rep {rep}: one model, 2 threads, {budget:.0f} s: {out[0][2]} steps, Dice {single:.4f}, B unseen {single_b:.4f}  ({time.monotonic()-t:.0f} s)", flush=True)
    torch.set_num_threads(1); out = []; t = time.monotonic()
    ts = [threading.Thread(target=job, args=(200 + 2 * rep + i, out)) for i in range(2)]
    [x.start() for x in ts]; [x.join() for x in ts]
    members = [score([m]) for m in out]; torch.set_num_threads(2); ens = score(out)
    members_b = [score_b([m]) for m in out]; ens_b = score_b(out)
    print(f"rep {rep}: two models at once, 1 thread each: {[m[2] for m in out]} steps, members {[round(x, 4) for x in members]}, "
          f"ensemble {ens:.4f}  ({time.monotonic()-t:.0f} s)  ensemble - single {ens - single:+.4f}; B unseen members {[round(x, 4) for x in members_b]}, ensemble {ens_b:.4f} ({ens_b - single_b:+.4f})", flush=True)
