"""The next patient's full-slice fine-tune from a model learned on scribbles: replay those scribbles or not?

Patient A = the superior half of the sample CT, scribbled by the simulated reviewer on 3 evenly spaced slices,
learned from scratch (360 steps, one model, one torch thread; its strokes go to a fresh store).  Patient B =
the inferior half, 3 full reference slices, fine-tuned from A's model for 360 steps with A's stored scribbles
replayed at the default share, or without replay.  Mean Dice on B's untouched slices; each seed pairs the arms.

    python bench/results/replayed-scribbles-carry-20261207.py SEEDS [full|scribbles]

``scribbles``: patient B is scribbled by the reviewer on its 3 slices instead of corrected in full.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main():
    seeds, b_kind = [int(s) for s in sys.argv[1].split(",")], (sys.argv[2:] or ["full"])[0]
    torch.set_num_threads(1)
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.retrain.protocol import run_protocol
    from napari_medseg.scribbles import simulate_reviewer

    sample = read_volume(SAMPLE_CT)
    image, ref = sample.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    half, spacing = image.shape[0] // 2, sample.geometry.spacing
    a_image, a_ref, b_image, b_ref = image[half:], ref[half:], image[:half], ref[:half]
    strokes = simulate_reviewer(a_image, a_ref, evenly_spaced_slices(a_image.shape[0], 3))[0]
    b_strokes = simulate_reviewer(b_image, b_ref, evenly_spaced_slices(b_image.shape[0], 3))[0] \
        if b_kind == "scribbles" else None
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            store = CorrectionStore(Path(tmp) / "store")
            a = run_protocol(a_image, a_ref, 3, time_budget_s=None, device="cpu", seed=seed, output_dir=Path(tmp) / "a",
                             spacing=spacing, store=store, source="superior half", training_labels=strokes,
                             options=dict(steps=360))
            print(f"ROW A scribbles seed {seed} mean {a.mean_dice:.4f}", flush=True)
            for replay in (True, False):
                b = run_protocol(b_image, b_ref, 3, time_budget_s=None, device="cpu", seed=seed,
                                 output_dir=Path(tmp) / f"b{int(replay)}", spacing=spacing, checkpoint=a.checkpoint.path,
                                 store=store, replay=replay, source="inferior half", options=dict(steps=360),
                                 training_labels=b_strokes)
                per = [round(float(d), 2) for d in b.dice.values()]
                print(f"ROW B {b_kind} from A's model, replay {'A scribbles' if replay else 'none'} seed {seed} "
                      f"mean {b.mean_dice:.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
