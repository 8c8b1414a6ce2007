"""within-volume k=5 at fixed steps on B (DICOM, 0.98 mm) or the MR; prints per-organ untouched Dice."""
import sys, tempfile, numpy as np, torch
sys.path.insert(0, "/work/main/bench")
from pathlib import Path
case, steps, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
from second_patient import to_synapse
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg.progress import drive
from napari_medseg.retrain.datastore import CorrectionStore
from napari_medseg.retrain.loop import StartFrom, evenly_spaced_slices, retrain_volume
from napari_medseg.retrain.protocol import untouched_dice
import napari_medseg; print(napari_medseg.__file__)
T = Path("/work/main/bench/data/totalsegmentator")
if case == "B":
    img = read_volume("/work/shared/data/ct_dicom"); ref = read_volume(T / "example_seg_dicom.nii.gz"); task, mod = "total", "ct"
else:
    img = read_volume(T / "example_mr_sm.nii.gz"); ref = read_volume(T / "example_seg_mr.nii.gz"); task, mod = "total_mr", "mr"
lab = to_synapse(ref.array.astype(np.int64), task)
assert lab.shape == img.array.shape, (lab.shape, img.array.shape)
corr = evenly_spaced_slices(img.array.shape[0], 5)
with tempfile.TemporaryDirectory() as t:
    gen = retrain_volume(img.array, lab, corr, start=StartFrom(model_name="dcaunet", label_set="synapse", modality=mod),
                         spacing=img.geometry.spacing, options=dict(steps=steps, seed=seed, device="cpu"),
                         store=CorrectionStore(t), replay=False, output=t + "/m.safetensors")
    r = drive(gen, None)
d = untouched_dice(r.labels, lab, corr, SYNAPSE)
print(case, seed, "mean %.3f" % np.nanmean(list(d.values())), " ".join("–" if np.isnan(v) else "%.2f" % v for v in d.values()))
