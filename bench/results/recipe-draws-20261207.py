"""Do the weak draws (about one seed in eight, docs/retrain.md "Weak draws") come from the first steps?
Seeds 0-7 with a recipe change against the recipe, at fixed steps, one model, one torch thread, no replay:
the sample at k = 5 (900 steps; Dice on its 25 untouched slices) or the inferior half at k = 3 (360 steps;
the first step of ``bench/cross_patient.py``'s carry-over proxy).  OPTIONS is JSON of ``FinetuneConfig``
fields over the family's scratch recipe (``{}``: the recipe itself).

    python bench/results/recipe-draws-20261207.py sample|inferior SEEDS STEPS OPTIONS
    python bench/results/recipe-draws-20261207.py inferior 0,1,2,3 360 '{"warmup_fraction": 0.15}'

``MEDSEG_TRY_INIT=linear`` re-initialises DCAU-Net's linear layers as ViT codebases do (truncated normal,
std 0.02, zero bias) right after the model is built; ``=linear+conv`` also its convolutions (normal with
std sqrt(2 / fan_out), zero bias: SegFormer's and PVT's); the trial of 2026-12-07 evening.
"""

import functools
import json
import sys
import tempfile
from pathlib import Path

import os

import numpy as np
import torch
from torch import nn


def try_init():
    """Patch ``DCAUNet.__init__`` to re-initialise the weights (``MEDSEG_TRY_INIT``; unset: the model as it is)."""
    kind = os.environ.get("MEDSEG_TRY_INIT")
    if not kind:
        return
    from napari_medseg.models import dcaunet

    original = dcaunet.DCAUNet.__init__

    @functools.wraps(original)  # the registry reads the signature
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d) and kind == "linear+conv":
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    dcaunet.DCAUNet.__init__ = init


def main():
    case, seeds, steps, options = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]), \
        json.loads(sys.argv[4])
    torch.set_num_threads(1)
    try_init()
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.retrain.protocol import run_protocol

    sample = read_volume(SAMPLE_CT)
    image, ref = sample.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    part, k = (slice(0, image.shape[0] // 2), 3) if case == "inferior" else (slice(None), 5)
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_protocol(image[part], ref[part], k, model_name="dcaunet", time_budget_s=None, device="cpu",
                             seed=seed, output_dir=Path(tmp), spacing=sample.geometry.spacing,
                             options=dict(options, steps=steps))
        per = [round(float(d), 2) for d in r.dice.values()]
        print(f"ROW {case} k={k} {json.dumps(options)} init {os.environ.get('MEDSEG_TRY_INIT') or 'as built'} seed {seed} steps {r.steps} {r.seconds:.0f}s "
              f"mean {r.mean_dice:.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
