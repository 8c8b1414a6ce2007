"""How much does smoothing probabilities across slices help, and at which sigma?  (``napari_medseg.zsmooth``)

For each training case (the sample CT, 3 mm; and A', the same CT at 0.8 mm in-plane
in 512^2 of air), DCAU-Net is fine-tuned from scratch on k = 5 evenly spaced
reference slices for ``--steps`` fixed optimiser steps (independent of the machine's
load), then its softmax is computed for every slice and smoothed along z with a
Gaussian of sigma (mm) before the argmax and the one-piece post-processing.
``anchor``: the corrected (locked) slices enter the mean as their reference labels,
one-hot, as ``segment_volume`` does.  The sample model is also evaluated on the
sample CT interpolated to 1.5 mm slices (a second slice thickness; untouched slices
are those more than one slice away from a training slice).

Prints mean organ Dice on the untouched slices per (train case, eval case, sigma,
anchor); raw rows go to ``bench/results/zsmooth-<time>-seed<S>.json``.

    python bench/zsmooth.py --seed 0 --steps 900      # ~8 min on one core
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import cpu_name  # bench/_machine.py (scripts run as python bench/NAME.py)
from effort import Case, _retrain, resampled_case, sample_case, untouched_dice

SIGMAS_MM = (0.0, 2.0, 3.0, 4.5, 6.0)


def z_resampled(base: Case, slice_mm: float) -> Case:
    """``base`` interpolated along z to ``slice_mm`` slices (linear; labels nearest)."""
    from scipy import ndimage

    zoom = (base.spacing[0] / slice_mm, 1, 1)
    return Case(f"{base.name}, {slice_mm} mm slices", ndimage.zoom(base.image.astype(np.float32), zoom, order=1)
                .astype(np.int16), ndimage.zoom(base.reference, zoom, order=0), (slice_mm, *base.spacing[1:]))


def all_probs(model, info, case: Case) -> np.ndarray:
    """Softmax ``(z, K, y, x)`` float32 of every slice, no smoothing."""
    import torch

    from napari_medseg.inference import _predict_probs, intensity_range

    ranges = [intensity_range(case.image, info.preprocessing)]
    return np.concatenate([_predict_probs([(model, info)], case.image[b:b + 8], ranges, torch.device("cpu"), "fp32",
                                          False, False, case.spacing).numpy()
                           for b in range(0, case.image.shape[0], 8)])


def smoothed_dice(probs, case: Case, touched, untouched, sigma: float, anchor: bool) -> float:
    from scipy import ndimage

    from napari_medseg.labels import SYNAPSE
    from napari_medseg.postprocess import largest_component_only, one_piece_organs
    from napari_medseg.zsmooth import TRUNCATE

    p = probs.copy()
    if anchor:
        for t in touched:
            p[t] = np.eye(p.shape[1], dtype=p.dtype)[case.reference[t]].transpose(2, 0, 1)
    if sigma:
        p = ndimage.gaussian_filter1d(p, sigma / case.spacing[0], axis=0, mode="nearest", truncate=TRUNCATE)
    labels, _ = largest_component_only(p.argmax(1).astype(np.uint8), one_piece_organs(SYNAPSE))
    return untouched_dice(labels, case.reference, untouched)


def main(argv=None) -> int:
    import torch

    from napari_medseg.retrain.loop import evenly_spaced_slices

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sample = sample_case()
    thin = z_resampled(sample, 1.5)
    rows = []
    print(f"machine: {cpu_name()}, {args.threads} thread(s); seed {args.seed}, {args.steps} steps", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for train in (sample, resampled_case(sample)):
            slices = evenly_spaced_slices(train.image.shape[0], 5)
            result = _retrain(train, train.reference, slices, None, tmp, args, partial=False,
                              options=dict(steps=args.steps, seed=args.seed, precision="fp32"))
            model, info = result.model.eval(), result.checkpoint
            evals = [(train, slices)]
            if train is sample:
                ratio = sample.spacing[0] / thin.spacing[0]
                evals.append((thin, [int(round(z * ratio)) for z in slices]))
            for case, touched in evals:
                untouched = [z for z in range(case.image.shape[0]) if all(abs(z - t) > (case is thin) for t in touched)]
                probs = all_probs(model, info, case)
                for anchor in (False, True):
                    for sigma in SIGMAS_MM:
                        dice = smoothed_dice(probs, case, touched, untouched, sigma, anchor)
                        rows.append(dict(train=train.name, case=case.name, sigma_mm=sigma, anchor=anchor,
                                         seed=args.seed, steps=args.steps, dice=dice))
                        print(f"{train.name} -> {case.name}: sigma {sigma:g} mm, anchor {anchor}: {dice:.4f}",
                              flush=True)
    out = Path(__file__).parent / "results" / f"zsmooth-{time.strftime('%Y%m%d-%H%M%S')}-seed{args.seed}.json"
    out.write_text(json.dumps(dict(machine=cpu_name(), argv=sys.argv[1:], rows=rows), indent=1))
    print(f"raw rows: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
