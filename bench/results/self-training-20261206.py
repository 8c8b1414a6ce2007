"""Experiment: self-training on the volume's own untouched slices (confident pseudo-labels, 255 elsewhere).

Arms at equal total steps N: (a) the recipe, N steps on the k=5 slices; (b) N1 steps, then segment the
volume (pipeline: z-smoothing, one-piece, corrected slices locked), keep pixels with normalised entropy
< THR as pseudo-labels, then N-N1 more steps from that model on corrected (current) + pseudo (replay) slices.
"""
import sys, os, time
sys.path.insert(0, os.environ.get("CODE", "/work/main")); sys.path.insert(0, "/work/main/bench")
import numpy as np, torch
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
from types import SimpleNamespace
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg.retrain import finetune as ft
from napari_medseg.retrain.loop import StartFrom, prepare_model, evenly_spaced_slices
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.models import family_spec
from napari_medseg.inference import segment_volume, run_segmentation
from napari_medseg.retrain.protocol import untouched_dice
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS

def seg(model, prep, vol, ref, corrected, spacing):
    info = SimpleNamespace(label_set=SYNAPSE, preprocessing=prep, model_name="dcaunet", path="x")
    return run_segmentation(segment_volume(vol, [(model, info)], device="cpu", locked=corrected, previous=ref, spacing=spacing))

def train(model, prep, images, labels, spacing, steps, seed, replay=(), **over):
    data = ft.FinetuneData(images=images, labels=labels, preprocessing=prep, spacing=spacing, replay=replay)
    cfg = FinetuneConfig(**{**family_spec("dcaunet").recipe(True), "steps": steps, "device": "cpu", "seed": seed, **over})
    return ft.run_finetune(ft.finetune(model, data, cfg))

def main(case, seeds, total, first, thr, lr2, rf):
    if case == "sample":
        v = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    else:  # MR
        from second_patient import synapse_labels, DATA
        from pathlib import Path
        v = read_volume(DATA / "example_mr_sm.nii.gz")
        ref = read_volume(synapse_labels(DATA / "example_seg_mr.nii.gz", "total_mr", Path(f"/tmp/ctx/mr_{os.getpid()}.nii.gz"))).array.astype(np.uint8)
    vol, sp = v.array, v.geometry.spacing
    corrected = evenly_spaced_slices(vol.shape[0], 5)
    start = StartFrom(model_name="dcaunet", label_set="synapse", modality="ct" if case == "sample" else "mr")
    mean = lambda d: np.nanmean(list(d.values()))
    for seed in seeds:
        torch.manual_seed(seed)
        m, _, prep, _ = prepare_model(start, vol)
        t = time.monotonic(); r = train(m, prep, [vol[z] for z in corrected], [ref[z] for z in corrected], sp, total, seed)
        base = untouched_dice(seg(m, prep, vol, ref, corrected, sp).labels, ref, corrected, SYNAPSE)
        print(f"{case} seed {seed} recipe {total} steps: {mean(base):.4f}  {time.monotonic()-t:.0f}s", flush=True)
        if first <= 0:
            print("per organ", {k: round(v, 3) for k, v in base.items()}, "best_step", r.best_step, "steps", r.steps, flush=True)
            continue
        torch.manual_seed(seed)
        m, _, prep, _ = prepare_model(start, vol)
        t = time.monotonic(); train(m, prep, [vol[z] for z in corrected], [ref[z] for z in corrected], sp, first, seed)
        s = seg(m, prep, vol, ref, corrected, sp)
        mid = untouched_dice(s.labels, ref, corrected, SYNAPSE)
        rest = [z for z in range(vol.shape[0]) if z not in corrected]
        pseudo = s.labels[rest].copy(); pseudo[s.uncertainty[rest].astype(np.float32) >= thr] = 255
        kept = float((pseudo != 255).mean())
        train(m, prep, [vol[z] for z in corrected], [ref[z] for z in corrected], sp, total - first, seed + 100,
              replay=[(vol[rest], pseudo, SimpleNamespace(spacing=sp, id="pseudo"))], lr=lr2, replay_fraction=rf)
        st = untouched_dice(seg(m, prep, vol, ref, corrected, sp).labels, ref, corrected, SYNAPSE)
        print(f"{case} seed {seed} self-train {first}+{total-first} thr {thr} lr2 {lr2} rf {rf}: mid {mean(mid):.4f} -> {mean(st):.4f}  "
              f"(kept {kept:.2f} of pseudo pixels)  {time.monotonic()-t:.0f}s  vs recipe {mean(st)-mean(base):+.4f}", flush=True)

if __name__ == "__main__":
    a = sys.argv
    main(a[1], [int(s) for s in a[2].split(",")], int(a[3]), int(a[4]), float(a[5]), float(a[6]), float(a[7]))
