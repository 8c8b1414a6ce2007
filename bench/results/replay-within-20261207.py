"""From scratch on one CT's 5 evenly spaced corrected slices, with and without replaying another CT's 5
(what ``medseg finetune`` does by default once the user's store holds another patient).  Fixed steps,
one model, one thread; Dice on the target's untouched slices.

    python bench/results/replay-within-20261207.py TARGET SEEDS [FRACTIONS]
    # TARGET: sample (replays B) or b (replays the sample); FRACTIONS: replay shares, 0 = none (default 0,0.5)
"""

import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/

import numpy as np
import torch

from effort import Case, _retrain, sample_case, slice_dice, untouched_dice  # noqa: E402


#: Seeds torch before each run: until 2026-12-07 a model from scratch drew its initial weights from torch's
#: global generator (random per process), so runs of one seed did not start from the same weights.  The
#: package now seeds them from the fine-tune's seed (``loop.prepare_model``), which overrides this.
INIT_SEED = 67280421310721


def b_case(work: Path) -> Case:
    from napari_medseg.io import read_volume
    from second_patient import DATA, DICOM, synapse_labels

    vol = read_volume(DICOM)
    labels = read_volume(synapse_labels(DATA / "example_seg_dicom.nii.gz", "total", work / "b_labels.nii.gz")).array
    if labels.shape != vol.array.shape:
        raise ValueError(f"B's labels {labels.shape} are not on its grid {vol.array.shape}")
    return Case("B (DICOM CT)", vol.array, labels.astype(np.uint8), tuple(float(s) for s in vol.geometry.spacing))


def main():
    target_name, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    fractions = [float(f) for f in (sys.argv[3] if len(sys.argv) > 3 else "0,0.5").split(",")]
    torch.set_num_threads(1)
    from napari_medseg.hashing import voxel_hash
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.loop import evenly_spaced_slices

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        cases = {"sample": sample_case(), "b": b_case(work)}
        target, other = cases[target_name], cases["b" if target_name == "sample" else "sample"]
        store = CorrectionStore(work / "store")
        other_slices = evenly_spaced_slices(other.image.shape[0], 5)
        store.add(other.image[other_slices], other.reference[other_slices], other_slices, spacing=other.spacing,
                  source=other.name, label_set=SYNAPSE.to_dict(), modality="ct", image_hash=voxel_hash(other.image))
        slices = evenly_spaced_slices(target.image.shape[0], 5)
        untouched = [z for z in range(target.image.shape[0]) if z not in slices]
        organs = [int(v) for v in sorted(set(target.reference[untouched].ravel()) - {0})]
        for seed in seeds:
            for fraction in fractions:
                torch.manual_seed(INIT_SEED)  # the same initial weights in every run of a seed
                with tempfile.TemporaryDirectory() as tmp:
                    result = _retrain(target, target.reference, slices, None, tmp, SimpleNamespace(budget=None),
                                      partial=False, options=dict(steps=900, seed=seed, replay_fraction=fraction or 0.5),
                                      store=store, replay=fraction > 0)
                per = [round(slice_dice(result.labels[untouched], target.reference[untouched], [v]), 2) for v in organs]
                print(f"ROW {target_name} seed {seed} replay share {fraction} ({result.replayed_slices} slices) steps "
                      f"{result.finetune.steps} {result.seconds:.0f}s dice "
                      f"{untouched_dice(result.labels, target.reference, untouched):.4f} {per}", flush=True)


if __name__ == "__main__":
    main()
