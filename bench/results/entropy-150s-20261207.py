"""Scribbles on 5 slices, 150 s, two models (issue 10's measure), with the entropy term off and at its default.

Same-day baselines for docs/retrain.md, "Deciding on the unlabelled pixels": the sample and the MR with the
term off (its default runs are effort-20261207-090421 / -091529), A' (0.8 mm, 512^2) both ways.
Run from the repository root:  python bench/results/entropy-150s-20261207.py
A second pair on the sample, off and on alternating (entropy-150s-sample-20261207.log):
    python bench/results/entropy-150s-20261207.py '[["sample", [0.0, 0.3, 0.0, 0.3]]]'
"""
import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
import torch

from effort import CASES, _retrain, untouched_dice  # noqa: E402
from napari_medseg.retrain.loop import evenly_spaced_slices
from napari_medseg.scribbles import simulate_reviewer

torch.set_num_threads(2)
print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
args = SimpleNamespace(budget=150.0)
runs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else [["sample", [0.0]], ["512", [0.0, 0.3]], ["mr", [0.0]]]
for name, weights in runs:
    case = CASES[name]()
    slices = evenly_spaced_slices(case.image.shape[0], 5)
    partial, _ = simulate_reviewer(case.image, case.reference, slices, case.modality)
    for weight in weights:
        with tempfile.TemporaryDirectory() as tmp:
            result = _retrain(case, partial, slices, None, tmp, args, partial=True,
                              options=dict(time_budget_s=150.0, entropy_weight=weight))
        untouched = [z for z in range(case.image.shape[0]) if z not in slices]
        print(f"{case.name}: entropy weight {weight}: scribbles k=5, 150 s: "
              f"{untouched_dice(result.labels, case.reference, untouched):.3f}", flush=True)
print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
