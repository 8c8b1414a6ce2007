"""Fine-tuning steps per second: the layout and optimiser in use against the plain ones, in one run.

DCAU-Net from scratch with its recipe on the sample CT's 5 evenly spaced reference slices
(64^2 crops, batch 8), ``--steps`` optimiser steps per repeat, on the CPU.  Two settings,
alternated ``--repeats`` times so that both see the same load:

* ``plain``: the default memory layout, AdamW's per-tensor loop, the CBAM spatial attention's
  conv in the default layout (the code before 2026-12-06);
* ``now``: what ``finetune`` does (``CHANNELS_LAST_DEVICES``, ``FUSED_ADAMW_DEVICES`` and
  ``SpatialAttention``'s channels-last conv).

It prints the median steps per second of each and their ratio (the seconds of the
before/after Dice are left out: ``FinetuneProgress.elapsed_s`` of the last step).

    python bench/train_speed.py                  # about 3 min on 2 cores
    python bench/train_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import contextmanager

from _machine import cpu_name, load_average  # bench/_machine.py (scripts run as python bench/NAME.py)


@contextmanager
def plain_settings():
    """The default layout everywhere and AdamW without ``fused`` (restored on exit)."""
    import torch

    from napari_medseg.models import blocks
    from napari_medseg.retrain import finetune as finetune_module

    def cbam_default_layout(self, x):
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))

    saved = (finetune_module.CHANNELS_LAST_DEVICES, finetune_module.FUSED_ADAMW_DEVICES, blocks.SpatialAttention.forward)
    finetune_module.CHANNELS_LAST_DEVICES, finetune_module.FUSED_ADAMW_DEVICES = (), ()
    blocks.SpatialAttention.forward = cbam_default_layout
    try:
        yield
    finally:
        finetune_module.CHANNELS_LAST_DEVICES, finetune_module.FUSED_ADAMW_DEVICES, blocks.SpatialAttention.forward = saved


def steps_per_second(image, labels, slices, spacing, steps: int, seed: int) -> float:
    """Optimiser steps per second of one fine-tune from scratch (training loop only)."""
    import torch

    from napari_medseg.models import family_spec
    from napari_medseg.retrain.config import FinetuneConfig
    from napari_medseg.retrain.finetune import FinetuneData, finetune
    from napari_medseg.retrain.loop import StartFrom, prepare_model

    torch.manual_seed(seed)
    model, _, prep, _ = prepare_model(StartFrom(model_name="dcaunet", label_set="synapse", modality="ct"), image)
    data = FinetuneData([image[z] for z in slices], [labels[z] for z in slices], prep, spacing=spacing)
    config = FinetuneConfig(**{**family_spec("dcaunet").recipe(True), "steps": steps, "device": "cpu", "seed": seed})
    last = None
    for last in finetune(model, data, config):
        pass
    return last.step / last.elapsed_s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats of each setting")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, all cores)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.retrain.loop import evenly_spaced_slices

    if args.threads:
        torch.set_num_threads(args.threads)
    ct, ref = read_volume(SAMPLE_CT), read_volume(SAMPLE_LABELS)
    image, labels = ct.array, ref.array.astype(np.uint8)
    slices = evenly_spaced_slices(image.shape[0], 5)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, load {load_average()}")
    print(f"DCAU-Net from scratch, sample CT slices {slices}, {args.steps} steps x {args.repeats} repeats per setting")
    rates = {"plain": [], "now": []}
    for repeat in range(args.repeats):
        with plain_settings():
            rates["plain"].append(steps_per_second(image, labels, slices, ct.geometry.spacing, args.steps, repeat))
        rates["now"].append(steps_per_second(image, labels, slices, ct.geometry.spacing, args.steps, repeat))
        print(f"  repeat {repeat}: plain {rates['plain'][-1]:.2f}, now {rates['now'][-1]:.2f} steps/s", flush=True)
    plain, now = (statistics.median(rates[k]) for k in ("plain", "now"))
    print(f"median steps/s: plain {plain:.2f}, now {now:.2f}; ratio {now / plain:.3f}  (load {load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
