"""Paired: affine test-time augmentation (zooms / small rotations) on the same trained checkpoints.

The checkpoints are those of bench/results/keep-final-20261206-0906.py (/tmp/exp9/pp{seed}sample/dcaunet-k5.safetensors):
OMP_NUM_THREADS=1 python bench/results/tta-affine-20261206.py CKPT [CKPT ...]; the log holds this part, then the A' / B part (below, commented)."""
import sys, math
import numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(1)
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg.retrain.protocol import untouched_dice
from napari_medseg.retrain.loop import evenly_spaced_slices
from napari_medseg.checkpoint import load_checkpoint
from napari_medseg.inference import run_segmentation, segment_volume
a = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
corr = evenly_spaced_slices(a.array.shape[0], 5)
def warp(x, angle, scale, inverse=False):
    b = x.shape[0]
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    th = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype)
    if inverse:
        m = torch.cat([th, torch.tensor([[0, 0, 1.0]])]); th = torch.linalg.inv(m)[:2]
    grid = F.affine_grid(th.expand(b, 2, 3), x.shape, align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border" if inverse else "zeros", align_corners=False)
class TTA(torch.nn.Module):
    def __init__(self, m, poses):
        super().__init__(); self.m, self.poses = m, poses
        self.size_multiple, self.config, self.model_name = m.size_multiple, m.config, m.model_name
    def forward(self, x):
        p = torch.softmax(self.m(x), 1)
        for ang, sc in self.poses:
            p = p + warp(torch.softmax(self.m(warp(x, math.radians(ang), sc)), 1), math.radians(ang), sc, inverse=True)
        return torch.log(p / (1 + len(self.poses)) + 1e-8)
VARIANTS = {"none": [], "zoom .9/1.1": [(0, 0.9), (0, 1.1)], "rot ±8": [(8, 1), (-8, 1)],
            "zoom+rot": [(0, 0.9), (0, 1.1), (8, 1), (-8, 1)]}
for path in sys.argv[1:]:
    model, info = load_checkpoint(path); model.eval()
    out = []
    for name, poses in VARIANTS.items():
        m = TTA(model, poses) if poses else model
        lab = run_segmentation(segment_volume(a.array, [(m, info)], device="cpu", uncertainty=False, spacing=a.geometry.spacing,
                                              locked=corr, previous=ref)).labels
        d = untouched_dice(lab, ref, corr, SYNAPSE); out.append(f"{name} {np.nanmean(list(d.values())):.4f}")
    print(path.split("/")[3], " | ".join(out), flush=True)
# second part (A' and B), run the same way:
# """Paired: affine test-time augmentation (zooms / small rotations) on the same trained checkpoints."""
# import sys, math
# from pathlib import Path
# import numpy as np, torch, torch.nn.functional as F
# torch.set_num_threads(1)
# from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
# from napari_medseg.io import read_volume
# from napari_medseg.labels import SYNAPSE
# from napari_medseg.retrain.protocol import untouched_dice
# from napari_medseg.retrain.loop import evenly_spaced_slices
# from napari_medseg.checkpoint import load_checkpoint
# from napari_medseg.inference import run_segmentation, segment_volume
# a = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
# corr = evenly_spaced_slices(a.array.shape[0], 5)
# def warp(x, angle, scale, inverse=False):
#     b = x.shape[0]
#     c, s = math.cos(angle) / scale, math.sin(angle) / scale
#     th = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype)
#     if inverse:
#         m = torch.cat([th, torch.tensor([[0, 0, 1.0]])]); th = torch.linalg.inv(m)[:2]
#     grid = F.affine_grid(th.expand(b, 2, 3), x.shape, align_corners=False)
#     return F.grid_sample(x, grid, mode="bilinear", padding_mode="border" if inverse else "zeros", align_corners=False)
# class TTA(torch.nn.Module):
#     def __init__(self, m, poses):
#         super().__init__(); self.m, self.poses = m, poses
#         self.size_multiple, self.config, self.model_name = m.size_multiple, m.config, m.model_name
#     def forward(self, x):
#         p = torch.softmax(self.m(x), 1)
#         for ang, sc in self.poses:
#             p = p + warp(torch.softmax(self.m(warp(x, math.radians(ang), sc)), 1), math.radians(ang), sc, inverse=True)
#         return torch.log(p / (1 + len(self.poses)) + 1e-8)
# VARIANTS = {"none": [], "zoom .9/1.1": [(0, 0.9), (0, 1.1)], "rot ±8": [(8, 1), (-8, 1)],
#             "zoom+rot": [(0, 0.9), (0, 1.1), (8, 1), (-8, 1)]}
# import sys as _s; _s.path.insert(0, "/work/main/bench")
# from second_patient import synapse_labels
# from cross_patient import write_a_prime
# b = read_volume(Path("/work/main/../shared/data/ct_dicom"))
# b_ref = read_volume(synapse_labels(Path("/work/main/bench/data/totalsegmentator/example_seg_dicom.nii.gz"), "total", Path("/tmp/exp9/bt.nii.gz"))).array.astype(np.uint8)
# Path("/tmp/exp9/apt").mkdir(exist_ok=True)
# ap, ap_ref = write_a_prime(a.array, ref, a.geometry, Path("/tmp/exp9/apt"))
# VARIANTS = {"none": [], "zoom .9/1.1": [(0, 0.9), (0, 1.1)]}
# for path in sys.argv[1:]:
#     model, info = load_checkpoint(path); model.eval()
#     out = []
#     for name, poses in VARIANTS.items():
#         m = TTA(model, poses) if poses else model
#         for tag, vol, r, lk in (("A'", ap, ap_ref, corr), ("B", b, b_ref, [])):
#             lab = run_segmentation(segment_volume(vol.array, [(m, info)], device="cpu", uncertainty=False, spacing=vol.geometry.spacing)).labels
#             d = untouched_dice(lab, r, lk, SYNAPSE); out.append(f"{tag} {name} {np.nanmean(list(d.values())):.4f}")
#     print(path.split("/")[3], " | ".join(out), flush=True)
# for path in []:
#     model, info = load_checkpoint(path); model.eval()
#     out = []
#     for name, poses in VARIANTS.items():
#         m = TTA(model, poses) if poses else model
#         lab = run_segmentation(segment_volume(a.array, [(m, info)], device="cpu", uncertainty=False, spacing=a.geometry.spacing,
#                                               locked=corr, previous=ref)).labels
#         d = untouched_dice(lab, ref, corr, SYNAPSE); out.append(f"{name} {np.nanmean(list(d.values())):.4f}")
#     print(path.split("/")[3], " | ".join(out), flush=True)
