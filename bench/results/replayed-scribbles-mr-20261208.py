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

import runpy
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

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
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.scribbles import simulate_reviewer

    compare_replay = runpy.run_path(str(Path(__file__).with_name("replayed-scribbles-b-20261208.py")),
                                    run_name="replay_pairs")["compare_replay"]
    mr = read_volume(DATA / "example_mr_sm.nii.gz")
    with tempfile.TemporaryDirectory() as tmp:
        ref = read_volume(synapse_labels(DATA / "example_seg_mr.nii.gz", "total_mr", Path(tmp) / "mr.nii.gz")).array
    image, ref, spacing = mr.array, np.asarray(ref).astype(np.uint8), mr.geometry.spacing
    half = image.shape[0] // 2
    strokes = simulate_reviewer(image[half:], ref[half:], evenly_spaced_slices(image.shape[0] - half, 3), modality="mr")[0]
    compare_replay(seeds, SimpleNamespace(image=image[half:], ref=ref[half:], spacing=spacing, source="MR superior half",
                                          k=3, strokes=strokes),
                   SimpleNamespace(image=image[:half], ref=ref[:half], spacing=spacing, source="MR inferior half", k=3),
                   a_steps, b_steps, modality="mr")


if __name__ == "__main__":
    main()
