"""One model against several trained at once (an averaged ``Ensemble``), at equal wall time.

For each budget and seed, the sample CT's k = 5 protocol (``retrain.protocol``: fine-tune
from scratch on 5 evenly spaced reference slices, segment the rest, Dice on the untouched
slices) runs once per arm (``--arms``, members per model: default one model against two), in
rotating order so that a change of load hits every arm.  ``--unseen`` also segments patient B (the real
DICOM series, 0.98 mm; TotalSegmentator's labels) with each model, unseen.

    python bench/ensemble.py                                # budgets 60,150; seeds 0,1,2; about 25 min
    python bench/ensemble.py --budgets 150 --seeds 0,1,2,3,4 --unseen
    python bench/ensemble.py --budgets 150 --arms 2,3                # two members against three
    python bench/ensemble.py --case b --budgets 150                   # patient B at 0.98 mm (a second case)
    python bench/ensemble.py --labels scribbles --budgets 150         # the simulated reviewer's strokes (issue 10)

Prints one line per run, then per budget and arm: its mean, and its mean paired difference
from the first arm and in how many pairs it was higher.  Writes ``results/ensemble-STAMP.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import cpu_name, load_average  # bench/_machine.py (scripts run as python bench/NAME.py)


def unseen_scorer():
    """``score(checkpoint) -> mean Dice on patient B, all slices`` (B's labels mapped to Synapse values)."""
    from second_patient import DATA, DICOM, synapse_labels

    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume
    from napari_medseg.io import read_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.retrain.protocol import untouched_dice

    b = read_volume(DICOM)
    ref_path = synapse_labels(DATA / "example_seg_dicom.nii.gz", "total", Path(tempfile.mkdtemp()) / "b.nii.gz")
    ref = read_volume(ref_path).array.astype(np.uint8)

    def score(checkpoint) -> float:
        gen = segment_volume(b.array, load_checkpoints([checkpoint.path]), device="cpu", spacing=b.geometry.spacing)
        return float(np.nanmean(list(untouched_dice(run_segmentation(gen).labels, ref, [], SYNAPSE).values())))

    return score


def load_case(case: str):
    """``(volume, reference uint8 (z, y, x), modality)`` of ``"sample"``, ``"b"`` or ``"mr"`` (Synapse values)."""
    from second_patient import DATA, DICOM, synapse_labels

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume

    if case == "sample":
        return read_volume(SAMPLE_CT), read_volume(SAMPLE_LABELS).array.astype(np.uint8), "ct"
    image, seg, task = {"b": (DICOM, "example_seg_dicom.nii.gz", "total"),
                        "mr": (DATA / "example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "total_mr")}[case]
    labels = synapse_labels(DATA / seg, task, Path(tempfile.mkdtemp()) / "labels.nii.gz")
    volume, reference = read_volume(image), read_volume(labels)
    if reference.array.shape != volume.array.shape:
        raise SystemExit(f"{case}: labels {reference.array.shape} are not on the image's grid {volume.array.shape}")
    return volume, reference.array.astype(np.uint8), "ct" if case == "b" else "mr"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="60,150", help="comma-separated fine-tuning seconds")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (one pair each)")
    parser.add_argument("--arms", default="1,2", help="comma-separated member counts; the first is the baseline")
    parser.add_argument("--k", type=int, default=5, help="evenly spaced reference slices")
    parser.add_argument("--unseen", action="store_true", help="also segment patient B unseen with each model")
    parser.add_argument("--case", choices=["sample", "b", "mr"], default="sample",
                        help="the volume of the protocol: the sample CT, patient B's DICOM CT (0.98 mm, 512²) or "
                             "TotalSegmentator's example MR, with their reference labels")
    parser.add_argument("--labels", choices=["full", "scribbles"], default="full",
                        help="what the k slices are corrected with: the reference's full slices, or the simulated "
                             "reviewer's strokes (scribbles.simulate_reviewer, fine-tuned as partial labels)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)

    import torch

    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.retrain.protocol import run_protocol
    from napari_medseg.scribbles import simulate_reviewer

    volume, reference, modality = load_case(args.case)
    strokes = None
    if args.labels == "scribbles":
        slices = evenly_spaced_slices(volume.array.shape[0], args.k)
        strokes, effort = simulate_reviewer(volume.array, reference, slices, modality)
        print(f"scribbles on {slices}: effort {effort:.3f} of full slices")
    score_b = unseen_scorer() if args.unseen else None
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    arms = [int(a) for a in args.arms.split(",")]
    rows = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
            for members in arms[i % len(arms):] + arms[:i % len(arms)]:
                load = load_average()
                with tempfile.TemporaryDirectory() as work:
                    r = run_protocol(volume.array, reference, args.k, time_budget_s=budget, device="cpu", seed=seed,
                                     spacing=volume.geometry.spacing, output_dir=work, members=members,
                                     modality=modality, source=f"{args.case} case", training_labels=strokes)
                    unseen = score_b(r.checkpoint) if score_b is not None else float("nan")
                member_steps = [m["steps"] for m in r.checkpoint.provenance.get("members", [])] or [r.steps]
                rows.append(dict(budget=budget, seed=seed, members=members, dice=r.mean_dice, unseen=unseen,
                                 steps=member_steps, seconds=r.seconds, load=load))
                print(f"budget {budget:4.0f} s  seed {seed}  members {members}: Dice {r.mean_dice:.4f}  "
                      f"B unseen {unseen:.4f}  steps {'+'.join(map(str, member_steps))}  {r.seconds:.0f} s  "
                      f"(load {load})", flush=True)
    print()
    for budget in sorted({r["budget"] for r in rows}):
        for key in ("dice", "unseen") if args.unseen else ("dice",):
            by_arm = {a: {r["seed"]: r[key] for r in rows if r["budget"] == budget and r["members"] == a} for a in arms}
            base = by_arm[arms[0]]
            text = [f"{arms[0]} member(s) {np.mean(list(base.values())):.4f}"]
            for arm in arms[1:]:
                diff = [by_arm[arm][s] - base[s] for s in base if s in by_arm[arm]]
                text.append(f"{arm} members {np.mean(list(by_arm[arm].values())):.4f} (paired {np.mean(diff):+.4f}, "
                            f"higher in {sum(d > 0 for d in diff)} of {len(diff)})")
            print(f"budget {budget:.0f} s, {f'{args.case} untouched ({args.labels})' if key == 'dice' else 'B unseen'}: " + "; ".join(text))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ensemble-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(dict(machine=cpu_name(), cores=os.cpu_count(), torch=torch.__version__,
                                    argv=sys.argv[1:], rows=rows), indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
