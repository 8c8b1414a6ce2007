"""The loss's two knobs not tried before, paired against the recipe (the trial of 2026-12-08).

* ``OPTIONS`` ``{"loss_weights": [ce, dice]}``: the CE / soft-Dice weights (DCAU-Net's paper: 0.4 / 0.6).
* ``MEDSEG_TRY_DICE_BG=0``: the soft Dice without the background class (nnU-Net's ``do_bg=False``;
  TransUNet, which the recipe follows, keeps it).

Fixed steps, one model, one torch thread, no replay, the harness of ``recipe-draws-20261207.py``:

    python bench/results/loss-terms-20261208.py sample 0,1,2,3 900 '{"loss_weights": [0.25, 0.75]}'
    MEDSEG_TRY_DICE_BG=0 python bench/results/loss-terms-20261208.py sample 0,1,2,3 900 '{}'
"""

import functools
import os
import runpy
from pathlib import Path


def patch():
    if os.environ.get("MEDSEG_TRY_DICE_BG") != "0":
        return
    from napari_medseg.retrain import losses

    original = losses.DiceCELoss.__init__

    @functools.wraps(original)
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.include_background = False

    losses.DiceCELoss.__init__ = init


if __name__ == "__main__":
    patch()
    print("# MEDSEG_TRY_DICE_BG =", os.environ.get("MEDSEG_TRY_DICE_BG", "(unset: background in the Dice)"), flush=True)
    here = Path(__file__).resolve().parent
    mod = runpy.run_path(str(here / "recipe-draws-20261207.py"), run_name="draws")
    mod["main"]()
