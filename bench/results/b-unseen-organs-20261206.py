import sys, tempfile, numpy as np
sys.path.insert(0, "bench")
from pathlib import Path
from second_patient import DATA, DICOM, synapse_labels
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.io import read_volume
from napari_medseg.retrain.protocol import run_protocol
from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume
a, b = read_volume(SAMPLE_CT), read_volume(DICOM)
aref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
bref = read_volume(synapse_labels(DATA / "example_seg_dicom.nii.gz", "total", Path(tempfile.mkdtemp()) / "b.nii.gz")).array
work = Path("/tmp/e14/fpwork"); work.mkdir(exist_ok=True)
for seed in (0, 3):
    r = run_protocol(a.array, aref, 5, time_budget_s=None, device="cpu", seed=seed, output_dir=work / f"s{seed}",
                     spacing=a.geometry.spacing, options=dict(steps=900))
    res = run_segmentation(segment_volume(b.array, load_checkpoints([r.checkpoint.path]), device="cpu",
                                          spacing=b.geometry.spacing, uncertainty=True))
    lab, unc = res.labels, res.uncertainty.astype(np.float32)
    vox = np.prod(b.geometry.spacing) / 1000
    print("seed", seed, "ckpt", r.checkpoint.path)
    for o in range(1, 9):
        m = lab == o
        r_ = bref == o
        inter = (m & r_).sum()
        print(f"  organ {o}: pred {m.sum()*vox:8.1f} mL ref {r_.sum()*vox:8.1f} mL  dice {2*inter/max(1,m.sum()+r_.sum()):.2f}  "
              f"slices {np.flatnonzero(m.any((1,2))).tolist()[:20]}  mean unc {unc[m].mean() if m.any() else float('nan'):.3f}")
    # the same organ sizes on A's own volume for comparison (untouched slices) 
