"""A fine-tune on scribbles that replays another patient's stored scribbles: does it help or hurt?

The complement of ``replayed-scribbles-20261207.py`` (full slices there).  The inferior half of the sample CT is
the current patient, scribbled by the simulated reviewer on 3 evenly spaced slices (360 steps, one model, one
torch thread, from scratch); the store holds the reviewer's strokes on 3 slices of the superior half, replayed at
the default share, or nothing is replayed.  Mean Dice on the inferior half's untouched slices.

    python bench/results/replayed-scribbles-on-scribbles-20261207.py SEEDS replay|none
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main():
    seeds, arm = [int(s) for s in sys.argv[1].split(",")], sys.argv[2]
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
    strokes = {}
    for name, part in (("inferior", slice(0, half)), ("superior", slice(half, None))):
        z = evenly_spaced_slices(image[part].shape[0], 3)
        strokes[name] = (z, simulate_reviewer(image[part], ref[part], z)[0])
    other = image[half:]
    z, other_strokes = strokes["superior"]
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            store = CorrectionStore(Path(tmp) / "store")
            store.add(other[z], other_strokes[z], z, spacing=sample.geometry.spacing, source="superior half",
                      label_set=SYNAPSE.to_dict(), modality="ct", image_hash=voxel_hash(other))
            r = run_protocol(image[:half], ref[:half], 3, time_budget_s=None, device="cpu", seed=seed,
                             output_dir=Path(tmp) / "run", spacing=sample.geometry.spacing, store=store,
                             replay=arm == "replay", source="inferior half", training_labels=strokes["inferior"][1],
                             options=dict(steps=360))
        per = [round(float(d), 2) for d in r.dice.values()]
        print(f"ROW inferior k=3 scribbles, replay {arm} seed {seed} steps {r.steps} {r.seconds:.0f}s "
              f"mean {r.mean_dice:.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
