"""Deep supervision for DCAU-Net fine-tuning (the trial of 2026-12-07 night).

Auxiliary 1x1 heads read the CSFF decoder's 1/8 and 1/4 outputs; their logits, upsampled bilinearly
to the input size, add DiceCE terms of weight ``w8`` and ``w4`` (nnU-Net's halving: 0.25, 0.5 of the
main term before its normalisation; here added to the main term, which keeps weight 1).  The heads are
trained with the model and ignored at inference.  Paired against the recipe at fixed steps, one model, one
torch thread, no replay, the harness of ``recipe-draws-20261207.py``:

    MEDSEG_TRY_DS=0.5,0.25 python bench/results/deep-supervision-20261207.py sample 0,1,2,3 900 '{}'
"""

import functools
import os
import runpy
from pathlib import Path

import torch.nn.functional as F
from torch import nn


def patch():
    weights = os.environ.get("MEDSEG_TRY_DS")
    if not weights:
        return
    w4, w8 = (float(w) for w in weights.split(","))
    from napari_medseg.models import dcaunet
    from napari_medseg.retrain import losses

    init0, loss0 = dcaunet.DCAUNet.__init__, losses.DiceCELoss.forward
    stash = {}

    @functools.wraps(init0)
    def init(self, *args, **kwargs):
        init0(self, *args, **kwargs)
        d16, d8, d4, _ = self.config["decoder_channels"]
        k = self.config["num_classes"]
        self.aux_heads = nn.ModuleList([nn.Conv2d(2 * d8, k, 1), nn.Conv2d(2 * d4, k, 1)])
        hooks = []
        for i, fuse in ((0, self.fuse[1]), (1, self.fuse[2])):
            def hook(module, args, out, i=i, model=self):
                if model.training:
                    stash[i] = model.aux_heads[i](out)
            hooks.append(fuse.register_forward_hook(hook))

    def loss(self, logits, target, images=None):
        total = loss0(self, logits, target, images)
        if stash:
            for i, w in ((0, w8), (1, w4)):
                aux = F.interpolate(stash.pop(i).float(), size=logits.shape[-2:], mode="bilinear", align_corners=False)
                total = total + w * loss0(self, aux, target, images)
        return total

    dcaunet.DCAUNet.__init__ = init
    losses.DiceCELoss.forward = loss


if __name__ == "__main__":
    patch()
    here = Path(__file__).resolve().parent
    mod = runpy.run_path(str(here / "recipe-draws-20261207.py"), run_name="draws")
    mod["main"]()
