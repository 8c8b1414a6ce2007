"""Does training on the volume's uncorrected slices (every pixel unlabelled: the entropy and smoothness
terms only) help?  Fixed steps, one model, one thread; full slices and scribbles on k = 5 evenly spaced
slices; the default (no uncorrected slices) against each variant, per seed.  Not kept: the
``unlabelled_fraction`` option it sets is in ``unlabelled-slices-20261207.patch`` beside it (apply it
with ``git apply`` on 4dd7043 to rerun).

    python bench/results/unlabelled-slices-20261207.py CASE SEEDS ARMS VARIANTS_JSON [--skip-default]
    python bench/results/unlabelled-slices-20261207.py sample 0,1 full '[{"unlabelled_fraction": 0.25}]'
"""

import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/

import torch

from effort import CASES, _retrain, untouched_dice  # noqa: E402


def main():
    case_name, seeds, arms, variants = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    torch.set_num_threads(1)
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.scribbles import simulate_reviewer

    case = CASES[case_name]()
    slices = evenly_spaced_slices(case.image.shape[0], 5)
    untouched = [z for z in range(case.image.shape[0]) if z not in slices]
    partial, _ = simulate_reviewer(case.image, case.reference, slices, case.modality)
    args = SimpleNamespace(budget=None)
    for seed in (int(s) for s in seeds.split(",")):
        for arm in arms.split(","):
            labels = case.reference if arm == "full" else partial
            for variant in ([] if "--skip-default" in sys.argv else [{}]) + variants:
                with tempfile.TemporaryDirectory() as tmp:
                    result = _retrain(case, labels, slices, None, tmp, args, partial=arm != "full",
                                      options=dict(steps=900, seed=seed, **variant))
                dice = untouched_dice(result.labels, case.reference, untouched)
                organs = [int(v) for v in sorted(set(case.reference[untouched].ravel()) - {0})]
                from effort import slice_dice
                per = [round(slice_dice(result.labels[untouched], case.reference[untouched], [v]), 2) for v in organs]
                print(f"ROW {case_name} seed {seed} {arm} {json.dumps(variant)} steps {result.finetune.steps} "
                      f"{result.seconds:.0f}s dice {dice:.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
