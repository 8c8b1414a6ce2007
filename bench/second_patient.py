"""Issue 9, point 6, on real second patients, through the CLI only.

Patient A is the bundled sample CT (3 mm, 8 Synapse organs).  The other scans are
patients nobody tuned on, with TotalSegmentator's labels (``bench/data/totalsegmentator``,
Apache-2.0; the ids are mapped to the Synapse order here):

* **B**: the real CT DICOM series in ``../shared/data/ct_dicom`` (512², 0.98 mm, 2 mm
  slices, 20 slices).  Its labels are a NIfTI on the same grid in another voxel order.
* **MR**: TotalSegmentator's example abdominal MR (117×91×20, 3 mm).

Each step runs the issue's commands (``medseg finetune`` / ``medseg segment`` in
subprocesses, DCAU-Net, a temporary ``--store`` in place of the user's), then scores
the written NIfTI against the reference on the slices nobody corrected:

1. ``finetune`` A on slices 2,8,14,21,27 for ``--a-budget`` s -> ``a.safetensors``;
   A's own untouched slices (the baseline).
2. ``segment`` B with ``a.safetensors``, all slices (target >= 0.40).
3. ``finetune`` B on slices 2,17 for ``--carry-budget`` s from ``a.safetensors`` (the
   store replays A's slices, the default) against from scratch with ``--no-replay``
   (target: at least 0.02 above from scratch).
4. Within one clinical-resolution volume: B, 5 evenly spaced slices, ``--budget`` s from
   scratch (target >= 0.85).  And the same on the MR.

Mean Dice is over the organs present in the reference or the prediction (an organ
predicted where the reference has none counts 0); the per-organ values are printed.

    python bench/second_patient.py                      # about 12 min on 2 idle cores
    python bench/second_patient.py --a-budget 10 --carry-budget 5 --budget 5   # smoke run

``--transfer VARIANTS`` (the choice of the recipe, in-process through the Python API: the
CLI has no recipe flags) instead learns A with the family's scratch recipe and with each
variant (JSON list of ``FinetuneConfig`` fields) at ``--steps`` fixed steps per ``--seeds``
seed (quality independent of the load), and prints A's untouched Dice next to B's,
segmented unseen by that model:

    python bench/second_patient.py --threads 1 --steps 900 --seeds 0 \
        --transfer '[{"augment": {"p_rotate": 0, "p_intensity": 0.5}}]'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import cpu_name, load_average as load  # bench/_machine.py (scripts run as python bench/NAME.py)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "totalsegmentator"
DICOM = ROOT / ".." / "shared" / "data" / "ct_dicom"
#: TotalSegmentator v2 class id -> Synapse value (aorta, gallbladder, kidney L/R, liver, pancreas, spleen, stomach)
TO_SYNAPSE = {
    "total": {52: 1, 4: 2, 3: 3, 2: 4, 5: 5, 7: 6, 1: 7, 6: 8},
    "total_mr": {23: 1, 4: 2, 3: 3, 2: 4, 5: 5, 7: 6, 1: 7, 6: 8},
}
A_SLICES = [2, 8, 14, 21, 27]  # the command for patient A
B_SLICES = [2, 17]  # and for patient B


def synapse_labels(src: Path, task: str, out: Path) -> Path:
    """``src`` (TotalSegmentator ids) rewritten with Synapse values, same header and voxel order."""
    import nibabel as nib

    img = nib.load(str(src))
    nib.save(nib.Nifti1Image(to_synapse(np.asanyarray(img.dataobj), task), img.affine, img.header), str(out))
    return out


def to_synapse(ids: np.ndarray, task: str) -> np.ndarray:
    """TotalSegmentator ids (``task`` "total" or "total_mr") as uint8 Synapse values; other ids -> 0."""
    ids = np.asarray(ids).astype(np.int64)
    lut = np.zeros(max(256, int(ids.max(initial=0)) + 1), np.uint8)
    for total_id, value in TO_SYNAPSE[task].items():
        lut[total_id] = value
    return lut[ids]


def medseg(*args: str) -> str:
    """Run ``medseg ARGS`` (the installed CLI, same Python); its stdout, or stop with its stderr."""
    done = subprocess.run([sys.executable, "-m", "napari_medseg.cli", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"medseg {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def finetune(out: Path, image: Path, labels: Path, slices, budget: float, store: Path, *, checkpoint=None,
             replay: bool = True) -> dict:
    start = ["--checkpoint", str(checkpoint)] if checkpoint else ["--model", "dcaunet", "--label-set", "synapse"]
    t0 = time.monotonic()
    text = medseg("finetune", "--image", str(image), "--labels", str(labels), "--slices", ",".join(map(str, slices)),
                  *start, "--time-budget", str(budget), "--store", str(store), *(() if replay else ("--no-replay",)),
                  "-o", str(out))
    steps = re.search(r"([\d +]+) steps (?:\(\d+ models at once\) )?in", text)  # "650 steps in" or "531 + 520 steps (2 ...) in"
    replayed = [line.strip() for line in text.splitlines() if "replay" in line]
    return dict(steps=steps.group(1).strip().replace(" ", "") if steps else None, seconds=time.monotonic() - t0,
                replay=replayed[-1] if replayed else "")


def segment(image: Path, checkpoint: Path, out: Path) -> Path:
    medseg("segment", str(image), "-o", str(out), "--checkpoint", str(checkpoint))
    return out


def score(pred_path: Path, ref_path: Path, corrected) -> dict[str, float]:
    """Per-organ Dice of a written prediction against the reference, both read into canonical (z, y, x)."""
    from napari_medseg.io import read_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.retrain.protocol import untouched_dice

    pred, ref = read_volume(pred_path), read_volume(ref_path)
    if pred.array.shape != ref.array.shape or not np.allclose(pred.geometry.world_affine(), ref.geometry.world_affine(), atol=1e-3):
        raise SystemExit(f"{pred_path.name} and {ref_path.name} are not on one grid")
    return untouched_dice(pred.array.astype(np.uint8), ref.array.astype(np.uint8), corrected, SYNAPSE)


def row(rows, name, dice, run=None, note=""):
    from napari_medseg.labels import SYNAPSE

    mean = float(np.nanmean(list(dice.values())))
    organs = " ".join("  – " if np.isnan(dice[n]) else f"{dice[n]:.2f}" for n in SYNAPSE.organs.values())
    run = run or {}
    print(f"{name:46s} mean {mean:.3f}  [{organs}]  steps {run.get('steps', '-')!s:>5}  "
          f"{run.get('seconds', 0):6.1f} s  load {load()}  {note}", flush=True)
    rows.append(dict(name=name, mean_dice=mean, dice=dice, note=note, **run))
    return mean


def carry_over(rows, args, dicom: Path, b_labels: Path, work: Path) -> None:
    """Steps 1-3: A's model, B unseen, and B's 2 slices from A's model (+ replay) against from scratch."""
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS

    store = work / "store"  # the user's store in the commands: A's slices go in, B's run replays them
    print(f"\n1. patient A = the sample CT, slices {A_SLICES}, {args.a_budget:.0f} s")
    a = finetune(work / "a.safetensors", SAMPLE_CT, SAMPLE_LABELS, A_SLICES, args.a_budget, store)
    row(rows, "A, its untouched slices",
        score(segment(SAMPLE_CT, work / "a.safetensors", work / "a.nii.gz"), SAMPLE_LABELS, A_SLICES), a)
    print(f"\n2-3. patient B = {dicom} (DICOM)")
    unseen = row(rows, "B by A's model, unseen (target >= 0.40)",
                 score(segment(dicom, work / "a.safetensors", work / "b.nii.gz"), b_labels, []))
    scratch_run = finetune(work / "b0.safetensors", dicom, b_labels, B_SLICES, args.carry_budget, store, replay=False)
    scratch = row(rows, f"B, slices {B_SLICES}, from scratch",
                  score(segment(dicom, work / "b0.safetensors", work / "b0.nii.gz"), b_labels, B_SLICES), scratch_run)
    carry_run = finetune(work / "ab.safetensors", dicom, b_labels, B_SLICES, args.carry_budget, store,
                         checkpoint=work / "a.safetensors")
    carried = row(rows, f"B, slices {B_SLICES}, from A's model",
                  score(segment(dicom, work / "ab.safetensors", work / "ab.nii.gz"), b_labels, B_SLICES), carry_run,
                  carry_run["replay"])
    print(f"   unseen {unseen:.3f} (target >= 0.40); from A's model - from scratch: {carried - scratch:+.3f} "
          "(target >= +0.02)")


def within_volume(rows, name: str, image: Path, labels: Path, budget: float, stem: Path, target: bool) -> None:
    """Step 4: 5 evenly spaced slices of one volume, from scratch; Dice on its other slices."""
    from napari_medseg.io import read_volume
    from napari_medseg.retrain.loop import evenly_spaced_slices

    slices = evenly_spaced_slices(read_volume(image).array.shape[0], 5)
    print(f"\n4. within one volume: {name}, slices {slices}, {budget:.0f} s from scratch")
    run = finetune(stem.with_suffix(".safetensors"), image, labels, slices, budget, stem.parent / "store", replay=False)
    row(rows, f"{name.split(' (')[0]}, k=5, untouched slices" + (" (target >= 0.85)" if target else ""),
        score(segment(image, stem.with_suffix(".safetensors"), stem.with_suffix(".nii.gz")), labels, slices), run)


def transfer(rows, variants, seeds, steps, dicom, b_labels, work):
    """A (the sample, k = 5) learned by the scratch recipe and each variant; A's and B's (unseen) Dice."""
    import torch

    from cross_patient import segment as segment_in_process
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.retrain.protocol import run_protocol, untouched_dice

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    a, b = read_volume(SAMPLE_CT), read_volume(dicom)
    a_ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    b_ref = read_volume(b_labels).array.astype(np.uint8)
    for seed in seeds:
        for i, options in enumerate([{}] + variants):
            name = "recipe" if not options else json.dumps(options)
            t0 = time.monotonic()
            r = run_protocol(a.array, a_ref, 5, model_name="dcaunet", time_budget_s=None, device="cpu", seed=seed,
                             output_dir=work / f"t{seed}-{i}", spacing=a.geometry.spacing,
                             options=dict(options, steps=steps))
            row(rows, f"seed {seed}, A untouched: {name}", r.dice, dict(steps=r.steps, seconds=time.monotonic() - t0))
            pred = segment_in_process(b.array, r.checkpoint.path, b.geometry.spacing)
            row(rows, f"seed {seed}, B unseen:    {name}", untouched_dice(pred, b_ref, [], SYNAPSE))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a-budget", type=float, default=120.0, help="s of fine-tuning on patient A (the issue: 120)")
    parser.add_argument("--carry-budget", type=float, default=60.0, help="s on B's 2 slices (the issue: 60)")
    parser.add_argument("--budget", type=float, default=150.0, help="s of the within-volume runs, k = 5 (150)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: carry,within-b,within-mr")
    parser.add_argument("--dicom", default=str(DICOM), help="patient B's DICOM folder")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the CLI runs (default: all cores)")
    parser.add_argument("--transfer", help="JSON list of FinetuneConfig variants: run the transfer comparison only")
    parser.add_argument("--steps", type=int, default=900, help="--transfer: fixed optimiser steps per model")
    parser.add_argument("--seeds", default="0", help="--transfer: comma list of seeds")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', '-')}; "
          f"load average (1/5/15 min) {load()}")
    print("organs: aorta gallbladder kidney_L kidney_R liver pancreas spleen stomach (– : in neither)")
    work = Path(tempfile.mkdtemp(prefix="medseg-second-"))
    dicom = Path(args.dicom)
    b_labels = synapse_labels(DATA / "example_seg_dicom.nii.gz", "total", work / "b_labels.nii.gz")
    rows: list[dict] = []
    try:
        if args.transfer:
            transfer(rows, json.loads(args.transfer), [int(s) for s in args.seeds.split(",")], args.steps, dicom,
                     b_labels, work)
        else:
            if "carry" not in skip:
                carry_over(rows, args, dicom, b_labels, work)
            within = []
            if "within-b" not in skip:
                within.append(("B (DICOM CT, 0.98 mm, 512²)", dicom, b_labels))
            if "within-mr" not in skip:
                within.append(("MR (3 mm)", DATA / "example_mr_sm.nii.gz",
                               synapse_labels(DATA / "example_seg_mr.nii.gz", "total_mr", work / "mr_labels.nii.gz")))
            for i, (name, image, labels) in enumerate(within):
                within_volume(rows, name, image, labels, args.budget, work / f"w{i}", target=i == 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # checkpoints and predictions
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"second_patient-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(dict(machine=cpu_name(), cores=os.cpu_count(), args=vars(args), rows=rows),
                               indent=1, default=float))
    print(f"\nraw numbers: {path}; load average at the end {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
