"""Choose the ``"spacing"`` policy's default target pixel size (issue 9, point 1).

For each candidate target T (mm), the sample CT (3 mm pixels) is resampled to
T mm in-plane (bilinear image, nearest labels): that is what the ``"spacing"``
policy feeds the model.  A DCAU-Net is trained from scratch on k = 5 of its
slices with the retrain protocol (``run_protocol``) for a FIXED number of
optimiser steps, so targets are compared at equal steps whatever the load;
steps/s is measured separately.
The model starts from scratch with the ``"spacing"`` policy at target T
(``run_protocol(..., target_spacing=T)``: the policy itself resamples the
slices) and its checkpoint is run through ``segment_volume`` on:

* the sample CT itself (3 mm), Dice on its untouched slices, native grid;
* A': the sample CT resampled to 0.8 mm in-plane and padded to 512 x 512 with
  air (int16), Dice on the same untouched slices: spacing invariance;
* with ``--dicom``, the DICOM series in ../shared/data/ct_dicom (0.98 mm,
  512^2, no labels): inference speed only (A' already gives the 512^2 speed).

    python bench/spacing_target.py                         # T = 1.5 2 2.5 3, 600 steps, seeds 0 1
    python bench/spacing_target.py --targets 2,3 --steps 300 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from _machine import cpu_name  # bench/_machine.py (scripts run as python bench/NAME.py)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def resample_inplane(array: np.ndarray, spacing, target: float, labels: bool = False) -> np.ndarray:
    """``(z, y, x)`` resampled in-plane from ``(sy, sx)`` mm to ``target`` mm pixels (as the policy does)."""
    import torch
    import torch.nn.functional as F

    from napari_medseg.preprocess import resampled_hw

    hw = resampled_hw(array.shape[1:], spacing, target)
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[:, None]
    if labels:
        out = F.interpolate(x, size=hw, mode="nearest-exact")
        return out[:, 0].numpy().round().astype(array.dtype)
    shrink = hw[0] < array.shape[1] or hw[1] < array.shape[2]
    out = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)[:, 0].numpy()
    return np.rint(out).astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else out


def pad_to(array: np.ndarray, hw, value) -> np.ndarray:
    """Centre ``(z, y, x)`` in a ``(z, *hw)`` array filled with ``value``."""
    out = np.full((array.shape[0], *hw), value, array.dtype)
    oy, ox = (hw[0] - array.shape[1]) // 2, (hw[1] - array.shape[2]) // 2
    out[:, oy : oy + array.shape[1], ox : ox + array.shape[2]] = array
    return out


def segment(array, ckpt, spacing):
    from napari_medseg.inference import run_segmentation, segment_volume

    t0 = time.perf_counter()
    res = run_segmentation(segment_volume(array, [ckpt], device="cpu", uncertainty=False, spacing=spacing))
    return res.labels, array.shape[0] / (time.perf_counter() - t0)


def run_one(target, seed, steps, image, ref, spacing, a_img, a_ref, a_spacing, dicom, outdir):
    from napari_medseg.checkpoint import load_checkpoint
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.preprocess import resampled_hw
    from napari_medseg.retrain.protocol import run_protocol, untouched_dice

    stamps = []

    def on_progress(p):
        if getattr(p, "phase", "") == "fine-tune" and getattr(p, "step", None):
            stamps.append((time.perf_counter(), p.step))

    # from scratch with the "spacing" policy at T mm: the policy itself resamples the 3 mm slices
    res = run_protocol(image, ref, 5, model_name="dcaunet", time_budget_s=None, device="cpu", seed=seed,
                       output_dir=outdir / f"T{target}-s{seed}", callback=on_progress, options=dict(steps=steps),
                       spacing=spacing, target_spacing=target)
    (t_a, s_a), (t_b, s_b) = (stamps[0], stamps[-1]) if stamps else ((0.0, 0), (0.0, 0))
    steps_per_s = (s_b - s_a) / (t_b - t_a) if t_b > t_a else float("nan")  # between progress reports
    model, info = load_checkpoint(res.checkpoint.path)
    ckpt = (model.eval(), info)
    own = res.labels
    a_pred, a_sps = segment(a_img, ckpt, a_spacing)
    _, dicom_sps = segment(dicom.array, ckpt, dicom.geometry.spacing) if dicom is not None else (None, float("nan"))
    d_own = untouched_dice(own, ref, res.corrected, SYNAPSE)
    d_a = untouched_dice(a_pred, a_ref, res.corrected, SYNAPSE)
    return dict(target=target, seed=seed, steps=res.steps, steps_per_s=steps_per_s,
                resampled_hw=list(resampled_hw(image.shape[1:], spacing[1:], target)),
                dice_sample=float(np.nanmean(list(d_own.values()))), dice_a_prime=float(np.nanmean(list(d_a.values()))),
                organs_sample=d_own, organs_a_prime=d_a, a_prime_slices_per_s=a_sps,
                dicom_slices_per_s=dicom_sps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="1.5,2,2.5,3")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per run (equal for all targets)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--dicom", action="store_true", help="also time the DICOM series")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "spacing_target.json")
    args = parser.parse_args(argv)

    import torch

    from napari_medseg.io import read_volume

    image_vol = read_volume(DATA / "ct_abdomen.nii.gz")
    image, spacing = image_vol.array, image_vol.geometry.spacing
    ref = np.rint(read_volume(DATA / "ct_abdomen_labels.nii.gz").array).astype(np.uint8)
    # A': the sample at 0.8 mm in-plane, padded to 512^2 with air, int16 (as issue 9 describes it)
    a_img = pad_to(resample_inplane(image, spacing[1:], 0.8).astype(np.int16), (512, 512), -1000)
    a_ref = pad_to(resample_inplane(ref, spacing[1:], 0.8, labels=True), (512, 512), 0)
    a_spacing = (spacing[0], 0.8, 0.8)
    dicom_dir = DATA / "ct_dicom"
    dicom = read_volume(dicom_dir) if args.dicom and dicom_dir.is_dir() else None
    outdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"spacing-target-{os.getpid()}"

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average at start {os.getloadavg()}")
    print(f"sample {image.shape} at {spacing} mm; A' {a_img.shape} at {a_spacing} mm; "
          f"DICOM {None if dicom is None else dicom.array.shape}")
    rows = []
    for target in [float(t) for t in args.targets.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            row = run_one(target, seed, args.steps, image, ref, spacing, a_img, a_ref, a_spacing, dicom, outdir)
            row["load_avg"] = os.getloadavg()[0]
            rows.append(row)
            print(f"T={target:g} seed={seed}: {row['steps']} steps at {row['steps_per_s']:.1f}/s, "
                  f"Dice sample {row['dice_sample']:.3f}, A' {row['dice_a_prime']:.3f}, "
                  f"A' {row['a_prime_slices_per_s']:.2f} slices/s (load {row['load_avg']:.1f})", flush=True)

    print(f"\nDCAU-Net from scratch, k = 5, {args.steps} steps; median over seeds {args.seeds}; "
          f"load average at end {os.getloadavg()}")
    print("| target mm | slice px (sample) | steps/s | Dice sample (3 mm) | Dice A' (0.8 mm, 512^2) | |A' - sample| "
          "| A' segment slices/s |")
    print("|---|---|---|---|---|---|---|")
    for target in sorted({r["target"] for r in rows}):
        rs = [r for r in rows if r["target"] == target]
        med = lambda k: float(np.median([r[k] for r in rs]))  # noqa: E731
        print(f"| {target:g} | {rs[0]['resampled_hw'][0]}x{rs[0]['resampled_hw'][1]} | {med('steps_per_s'):.1f} "
              f"| {med('dice_sample'):.3f} | {med('dice_a_prime'):.3f} "
              f"| {abs(med('dice_a_prime') - med('dice_sample')):.3f} | {med('a_prime_slices_per_s'):.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(machine=cpu_name(), steps=args.steps, rows=rows), indent=1))
    print(f"numbers: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
