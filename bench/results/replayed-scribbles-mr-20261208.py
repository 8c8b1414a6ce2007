"""The rule "replay uses fully labelled slices only" on an MR (the trial of 2026-12-08).

Replay never crosses modalities, so the MR's check uses its own halves as two patients, as the sample's
did (``replayed-scribbles-carry-20261207.py``): TotalSegmentator's example abdominal MR (3 mm, 20 slices),
patient A = its superior half scribbled by the simulated reviewer on 3 evenly spaced slices (MR body mask),
learned from scratch; patient B = its inferior half, 3 full reference slices, fine-tuned from A's model with
A's stored strokes replayed (the entry named by id, as ``--replay-entry`` does) or under the rule, which
leaves them out.  360 steps each, one model, one torch thread.  Mean Dice on B's untouched slices (an organ
predicted where B has none counts 0); each seed pairs the arms.

    python bench/results/replayed-scribbles-mr-20261208.py SEEDS [A_STEPS B_STEPS]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


def main():
    seeds = [int(s) for s in sys.argv[1].split(",")]
    a_steps, b_steps = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (360, 360)
    torch.set_num_threads(1)
    from second_patient import DATA, synapse_labels

    from napari_medseg.io import read_volume
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.retrain.protocol import run_protocol
    from napari_medseg.scribbles import simulate_reviewer

    mr = read_volume(DATA / "example_mr_sm.nii.gz")
    with tempfile.TemporaryDirectory() as tmp:
        ref = read_volume(synapse_labels(DATA / "example_seg_mr.nii.gz", "total_mr", Path(tmp) / "mr.nii.gz")).array
    image, ref, spacing = mr.array, np.asarray(ref).astype(np.uint8), mr.geometry.spacing
    half = image.shape[0] // 2
    a_image, a_ref, b_image, b_ref = image[half:], ref[half:], image[:half], ref[:half]
    strokes = simulate_reviewer(a_image, a_ref, evenly_spaced_slices(a_image.shape[0], 3), modality="mr")[0]
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            store = CorrectionStore(Path(tmp) / "store")
            ra = run_protocol(a_image, a_ref, 3, time_budget_s=None, device="cpu", seed=seed, output_dir=Path(tmp) / "a",
                              spacing=spacing, store=store, source="MR superior half", training_labels=strokes,
                              modality="mr", options=dict(steps=a_steps))
            ids = [e.id for e in store.entries()]
            print(f"ROW A scribbles seed {seed} mean {ra.mean_dice:.4f} store entries {ids}", flush=True)
            for name, replay in (("A's scribbles replayed", ids), ("the rule (A's scribbles left out)", True)):
                said = []  # the fine-tune's first message names what it replays
                rb = run_protocol(b_image, b_ref, 3, time_budget_s=None, device="cpu", seed=seed,
                                  output_dir=Path(tmp) / f"b-{len(name)}", spacing=spacing,
                                  checkpoint=ra.checkpoint.path, store=store, replay=replay, source="MR inferior half",
                                  modality="mr", options=dict(steps=b_steps),
                                  callback=lambda p: said.append(p.message) if not said else None)
                per = [round(float(d), 2) for d in rb.dice.values()]
                print(f"ROW B full k=3 slices {rb.corrected} from A's model, {name} ({said[0] if said else ''}) "
                      f"seed {seed} mean {rb.mean_dice:.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
