"""Largest-component post-processing (``napari_medseg.postprocess``): Dice with and without it.

For each case and seed, the retrain protocol (k evenly spaced corrected slices,
DCAU-Net from scratch, fixed optimiser steps so the machine's load does not
matter) segments the volume; the same prediction is scored raw
(``largest_component=False``) and post-processed (only the largest 3D piece of
each organ; pieces touching a corrected slice kept), on the untouched slices.

Cases: ``sample`` (the bundled 3 mm CT), ``512`` (A': the sample resampled to
0.8 mm and padded to 512^2, bench/effort.py), and ``halves``: a model learned on
the inferior half (k = 3) segments the superior half unseen, the proxy for
"A's model on patient B".

``trunk``: the CT trunk rule (``postprocess.trunk_mask``).  On every labelled CT here
(the sample, A', the real second patient B: the DICOM series with TotalSegmentator's
labels, bench/data/totalsegmentator) it counts the reference's organ voxels the mask
leaves out (an organ is never outside the trunk, so this must stay 0) and the body
share it drops (arms, couch), and times it.  Then the sample's model (k = 5) segments B
unseen, scored raw, one piece per organ without the trunk rule, and with it.

    python bench/postprocess.py --threads 1                       # ~15 min on one idle core
    python bench/postprocess.py --cases trunk --seeds 0,1 --steps 900 --threads 1   # ~5 min
    python bench/postprocess.py --cases sample --seeds 0 --steps 100   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from _machine import cpu_name  # bench/_machine.py (scripts run as python bench/NAME.py)
from effort import Case, resampled_case, sample_case


def score(pred, case: Case, corrected, inside=None) -> tuple[float, float, dict]:
    """Mean untouched Dice raw and post-processed (``inside``: the trunk mask), and the voxels removed per organ."""
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.postprocess import largest_component_only
    from napari_medseg.retrain.protocol import untouched_dice

    post, removed = largest_component_only(pred, SYNAPSE.organs, protected=corrected, inside=inside)
    raw_d, post_d = (untouched_dice(p, case.reference, corrected, SYNAPSE) for p in (pred, post))
    mean = (float(np.nanmean(list(d.values()))) for d in (raw_d, post_d))
    return (*mean, {SYNAPSE.organs[v]: n for v, n in removed.items() if n})


def raw_prediction(image, spacing, checkpoint_path, locked=(), previous=None) -> np.ndarray:
    """``checkpoint_path``'s labels of ``image`` without post-processing (``locked`` slices from ``previous``)."""
    from napari_medseg.checkpoint import load_checkpoint
    from napari_medseg.inference import run_segmentation, segment_volume

    model, info = load_checkpoint(checkpoint_path)
    gen = segment_volume(image, [(model.eval(), info)], device="cpu", uncertainty=False, spacing=spacing,
                         locked=locked, previous=previous, largest_component=False)
    return run_segmentation(gen).labels


def raw_protocol(case: Case, k: int, steps: int, seed: int):
    """The retrain protocol on ``case``; ``(raw labels, corrected slices, checkpoint path)``.

    The protocol's own re-segmentation is post-processed; the raw labels come from its
    checkpoint again with ``largest_component=False`` (the corrected slices locked, as there).
    """
    from napari_medseg.retrain.protocol import run_protocol

    r = run_protocol(case.image, case.reference, k, time_budget_s=None, device="cpu", seed=seed,
                     spacing=case.spacing, options=dict(steps=steps))
    raw = raw_prediction(case.image, case.spacing, r.checkpoint.path, r.corrected, case.reference)
    return raw, r.corrected, r.checkpoint.path


def unseen_on_other_half(case: Case, k: int, steps: int, seed: int):
    """Learn on the inferior half (k slices), segment the superior half with no fine-tuning: raw labels."""
    from napari_medseg.retrain.protocol import run_protocol

    half = case.image.shape[0] // 2
    learned = run_protocol(case.image[:half], case.reference[:half], k, time_budget_s=None, device="cpu", seed=seed,
                           spacing=case.spacing, options=dict(steps=steps))
    upper = Case(case.name + ", superior half unseen", case.image[half:], case.reference[half:], case.spacing)
    return upper, raw_prediction(upper.image, case.spacing, learned.checkpoint.path)


def second_patient_case() -> Case:
    """Patient B: the DICOM series in ../shared with TotalSegmentator's labels, in Synapse values."""
    import tempfile

    from napari_medseg.io import read_volume
    from second_patient import DATA, DICOM, synapse_labels

    vol = read_volume(DICOM)
    with tempfile.TemporaryDirectory() as tmp:
        labels = read_volume(synapse_labels(DATA / "example_seg_dicom.nii.gz", "total", Path(tmp) / "b.nii.gz"))
        reference = labels.array.astype(np.uint8)
    return Case("patient B (DICOM, 0.98 mm)", vol.array, reference, tuple(float(v) for v in vol.geometry.spacing))


def trunk_check(base: Case, seeds, steps: int) -> list[dict]:
    """The trunk rule on every labelled CT (organ voxels left out, body dropped, time); then B unseen."""
    from napari_medseg.postprocess import trunk_mask
    from napari_medseg.retrain.protocol import run_protocol
    from napari_medseg.scribbles import CT_BODY_THRESHOLD_HU

    rows = []
    b = second_patient_case()
    for case in (base, resampled_case(base), b):
        t0 = time.perf_counter()
        mask = trunk_mask(case.image, case.spacing)
        ms = (time.perf_counter() - t0) * 1000 / case.image.shape[0]
        organ, body = case.reference > 0, case.image > CT_BODY_THRESHOLD_HU
        left_out, dropped = int((organ & ~mask).sum()), float((body & ~mask).sum() / body.sum())
        print(f"{case.name:36s} trunk rule: organ voxels left out {left_out} of {int(organ.sum())}, "
              f"body dropped {dropped:.1%}, {ms:.0f} ms per slice", flush=True)
        rows.append(dict(case=case.name, left_out=left_out, organ_voxels=int(organ.sum()), body_dropped=dropped,
                         ms_per_slice=ms))
    trunk = trunk_mask(b.image, b.spacing)
    for seed in seeds:
        learned = run_protocol(base.image, base.reference, 5, time_budget_s=None, device="cpu", seed=seed,
                               spacing=base.spacing, options=dict(steps=steps))
        pred = raw_prediction(b.image, b.spacing, learned.checkpoint.path)
        raw, piece, _ = score(pred, b, [])
        _, with_trunk, removed = score(pred, b, [], inside=trunk)
        print(f"{b.name + ', unseen':36s} seed {seed}: raw {raw:.3f}  one piece {piece:.3f}  "
              f"one piece + trunk rule {with_trunk:.3f}  removed voxels {removed}", flush=True)
        rows.append(dict(case=b.name + ", unseen", seed=seed, raw=raw, one_piece=piece, trunk=with_trunk,
                         removed=removed))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="sample,512,halves", help="comma list of sample, 512, halves, trunk")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--ks", default="5,2", help="corrected slices per protocol run (sample, 512)")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per fine-tune")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); load {os.getloadavg()[0]:.1f}; {args.steps} steps per fine-tune")
    cases = args.cases.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = sample_case()
    rows = []

    def report(name, k, seed, raw, post, removed):
        print(f"{name:36s} k={k} seed {seed}: raw {raw:.3f}  one piece {post:.3f}  ({post - raw:+.3f})  "
              f"removed voxels {removed}", flush=True)
        rows.append(dict(case=name, k=k, seed=seed, raw=raw, post=post, removed=removed))

    trunk_rows = trunk_check(base, seeds, args.steps) if "trunk" in cases else []
    for name in (c for c in cases if c != "trunk"):
        for seed in seeds:
            if name == "halves":
                upper, pred = unseen_on_other_half(base, 3, args.steps, seed)
                report(upper.name, 3, seed, *score(pred, upper, []))
                continue
            case = base if name == "sample" else resampled_case(base)
            for k in (int(v) for v in args.ks.split(",")):
                raw, corrected, _ = raw_protocol(case, k, args.steps, seed)
                report(case.name, k, seed, *score(raw, case, corrected))
    diffs = [r["post"] - r["raw"] for r in rows]
    if diffs:
        print(f"\none piece - raw: median {np.median(diffs):+.4f}, min {min(diffs):+.4f}, max {max(diffs):+.4f} "
              f"over {len(rows)} runs")
    rows += trunk_rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"postprocess-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(dict(machine=cpu_name(), args=vars(args), rows=rows), indent=1))
    print(f"raw numbers: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
