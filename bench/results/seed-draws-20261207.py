"""Is the seed-0 draw of initial weights (every default run from scratch since 2026-12-07) a weak one?
From scratch on the sample's 5 evenly spaced corrected slices, no replay, one model, one thread, fixed
steps; Dice on the untouched slices, per seed.  Since ``loop.prepare_model`` seeds the initial weights
with the fine-tune's seed, a seed fixes the weights, the crops and the augmentation together.

    python bench/results/seed-draws-20261207.py SEEDS [STEPS]      # e.g. 0,2,4 900
"""

import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/

import torch

from effort import _retrain, sample_case, slice_dice, untouched_dice  # noqa: E402


def main():
    seeds = [int(s) for s in sys.argv[1].split(",")]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 900
    torch.set_num_threads(1)
    from napari_medseg.retrain.loop import evenly_spaced_slices

    case = sample_case()
    slices = evenly_spaced_slices(case.image.shape[0], 5)
    untouched = [z for z in range(case.image.shape[0]) if z not in slices]
    organs = [int(v) for v in sorted(set(case.reference[untouched].ravel()) - {0})]
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            result = _retrain(case, case.reference, slices, None, tmp, SimpleNamespace(budget=None), partial=False,
                              options=dict(steps=steps, seed=seed))
        per = [round(slice_dice(result.labels[untouched], case.reference[untouched], [v]), 2) for v in organs]
        print(f"ROW seed {seed} steps {result.finetune.steps} {result.seconds:.0f}s dice "
              f"{untouched_dice(result.labels, case.reference, untouched):.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
