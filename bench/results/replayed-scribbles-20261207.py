"""A full-slice fine-tune that replays another patient's stored scribbles: does the whole-slice final phase
still pay?  Until this change any unlabelled pixel in the pool (replayed ones too) turned the phase off; now
the current patient's slices decide, and whole-slice batches replay fully labelled entries only.

The inferior half of the sample CT is the current patient (k = 3 full slices, 360 steps, one model, one torch
thread); the store holds the simulated reviewer's scribbles on 3 slices of the superior half (another
"patient"), replayed at the default share.  OPTIONS: ``FinetuneConfig`` fields over the recipe
(``{"final_whole_slices": 0}``: the behaviour before, crops to the end).

    python bench/results/replayed-scribbles-20261207.py SEEDS OPTIONS
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main():
    seeds, options = [int(s) for s in sys.argv[1].split(",")], json.loads(sys.argv[2])
    torch.set_num_threads(1)
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.hashing import voxel_hash
    from napari_medseg.io import read_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.retrain.protocol import run_protocol
    from napari_medseg.scribbles import simulate_reviewer

    sample = read_volume(SAMPLE_CT)
    image, ref = sample.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    half = image.shape[0] // 2
    other, other_ref = image[half:], ref[half:]
    z = evenly_spaced_slices(other.shape[0], 3)
    strokes = simulate_reviewer(other, other_ref, z)[0]
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            store = CorrectionStore(Path(tmp) / "store")
            store.add(other[z], strokes[z], z, spacing=sample.geometry.spacing, source="superior half",
                      label_set=SYNAPSE.to_dict(), modality="ct", image_hash=voxel_hash(other))
            r = run_protocol(image[:half], ref[:half], 3, model_name="dcaunet", time_budget_s=None, device="cpu",
                             seed=seed, output_dir=Path(tmp) / "run", spacing=sample.geometry.spacing, store=store,
                             replay=True, source="inferior half", options=dict(options, steps=360))
        per = [round(float(d), 2) for d in r.dice.values()]
        print(f"ROW inferior k=3 + replayed scribbles {json.dumps(options)} seed {seed} steps {r.steps} "
              f"{r.seconds:.0f}s mean {r.mean_dice:.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
