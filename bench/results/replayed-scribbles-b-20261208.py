"""The rule "replay uses fully labelled slices only" on a real second patient (the trial of 2026-12-08).

Patient A = the sample CT, scribbled by the simulated reviewer on 5 evenly spaced slices and learned
from scratch (900 steps, one model, one torch thread); its strokes go to a fresh store.  Patient B = the
DICOM series (``../shared/data/ct_dicom``: 0.98 mm, 512², portal venous where A is native phase) with
TotalSegmentator's labels, 2 evenly spaced full reference slices, fine-tuned from A's model for 360 steps:

* ``A's scribbles replayed``: the store's entry named by id (what ``--replay-entry`` does, and what the
  automatic replay did before 2026-12-07);
* ``the rule``: ``replay=True``, which leaves A's scribbled slices out (nothing else is stored, so nothing
  is replayed).

Mean Dice on B's untouched slices (an organ predicted where B has none counts 0); each seed pairs the arms.

    python bench/results/replayed-scribbles-b-20261208.py SEEDS [A_STEPS B_STEPS]
"""

import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


def compare_replay(seeds, a, b, a_steps: int, b_steps: int, modality: str = "ct") -> None:
    """Per seed: learn ``a`` from its strokes into a fresh store, then fine-tune ``b`` from that model twice.

    ``a`` / ``b``: namespaces of ``image``, ``ref`` (z, y, x), ``spacing`` (mm), ``source`` and ``k`` (slices,
    evenly spaced); ``a.strokes`` are A's partial labels.  Prints one ``ROW`` line per run: A, then B with A's
    entry replayed by id (``--replay-entry``) and B under the rule (``replay=True``).
    """
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.protocol import run_protocol

    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            store = CorrectionStore(Path(tmp) / "store")
            ra = run_protocol(a.image, a.ref, a.k, time_budget_s=None, device="cpu", seed=seed, output_dir=Path(tmp) / "a",
                              spacing=a.spacing, store=store, source=a.source, training_labels=a.strokes,
                              modality=modality, options=dict(steps=a_steps))
            ids = [e.id for e in store.entries()]
            print(f"ROW A scribbles seed {seed} mean {ra.mean_dice:.4f} store entries {ids}", flush=True)
            for name, replay in (("A's scribbles replayed", ids), ("the rule (A's scribbles left out)", True)):
                said = []  # the fine-tune's first message names what it replays
                rb = run_protocol(b.image, b.ref, b.k, time_budget_s=None, device="cpu", seed=seed,
                                  output_dir=Path(tmp) / f"b-{len(name)}", spacing=b.spacing,
                                  checkpoint=ra.checkpoint.path, store=store, replay=replay, source=b.source,
                                  modality=modality, options=dict(steps=b_steps),
                                  callback=lambda p: said.append(p.message) if not said else None)
                per = [round(float(d), 2) for d in rb.dice.values()]
                print(f"ROW B full k={b.k} slices {rb.corrected} from A's model, {name} ({said[0] if said else ''}) "
                      f"seed {seed} mean {rb.mean_dice:.4f} {per}", flush=True)


def main():
    seeds = [int(s) for s in sys.argv[1].split(",")]
    a_steps, b_steps = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (900, 360)
    torch.set_num_threads(1)
    from second_patient import DATA, DICOM, synapse_labels

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.scribbles import simulate_reviewer

    a, b = read_volume(SAMPLE_CT), read_volume(DICOM)
    a_ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        b_ref = read_volume(synapse_labels(DATA / "example_seg_dicom.nii.gz", "total", Path(tmp) / "b.nii.gz")).array
    strokes = simulate_reviewer(a.array, a_ref, evenly_spaced_slices(a.array.shape[0], 5))[0]
    compare_replay(seeds, SimpleNamespace(image=a.array, ref=a_ref, spacing=a.geometry.spacing, source="sample CT",
                                          k=5, strokes=strokes),
                   SimpleNamespace(image=b.array, ref=np.asarray(b_ref).astype(np.uint8), spacing=b.geometry.spacing,
                                   source="DICOM patient", k=2), a_steps, b_steps)


if __name__ == "__main__":
    main()
