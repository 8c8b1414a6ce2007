"""Soft Dice with a linear denominator (sum p + sum g, nnU-Net's) against the squared one (sum p^2 + sum g,
TransUNet's, the recipe's).  Fixed steps, one model, one thread; full slices on k = 5 evenly spaced slices.

    python bench/results/dice-denominator-20261207.py CASE SEEDS [squared,linear]
"""

import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/

import torch
import torch.nn.functional as F

from effort import CASES, _retrain, slice_dice, untouched_dice  # noqa: E402
from napari_medseg.retrain import losses  # noqa: E402

SQUARED = losses.soft_dice_loss


def linear_dice_loss(logits, target, include_background=True, smooth=1e-5, labelled=None):
    """As ``losses.soft_dice_loss`` (pooled over the batch), with ``sum p`` in place of ``sum p^2``."""
    keep = labelled if labelled is not None else torch.ones_like(target, dtype=torch.bool)
    weight = keep[:, None].float()
    probs = logits.softmax(dim=1) * weight
    onehot = F.one_hot(torch.where(keep, target, 0), logits.shape[1]).permute(0, 3, 1, 2).float() * weight
    inter, denom = (probs * onehot).sum((0, 2, 3)), probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    per_class = (2 * inter + smooth) / (denom + smooth)
    return 1.0 - per_class[0 if include_background else 1:].mean()


def main():
    case_name, seeds = sys.argv[1], sys.argv[2]
    variants = sys.argv[3].split(",") if len(sys.argv) > 3 else ["squared", "linear"]
    torch.set_num_threads(1)
    from napari_medseg.retrain.loop import evenly_spaced_slices

    case = CASES[case_name]()
    slices = evenly_spaced_slices(case.image.shape[0], 5)
    untouched = [z for z in range(case.image.shape[0]) if z not in slices]
    organs = [int(v) for v in sorted(set(case.reference[untouched].ravel()) - {0})]
    for seed in (int(s) for s in seeds.split(",")):
        for variant in variants:
            losses.soft_dice_loss = linear_dice_loss if variant == "linear" else SQUARED
            with tempfile.TemporaryDirectory() as tmp:
                result = _retrain(case, case.reference, slices, None, tmp, SimpleNamespace(budget=None),
                                  partial=False, options=dict(steps=900, seed=seed))
            per = [round(slice_dice(result.labels[untouched], case.reference[untouched], [v]), 2) for v in organs]
            print(f"ROW {case_name} seed {seed} {variant} steps {result.finetune.steps} {result.seconds:.0f}s "
                  f"dice {untouched_dice(result.labels, case.reference, untouched):.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
