"""The sample-CT retrain protocol shared by ``medseg demo`` and ``bench/retrain_curve.py``.

k evenly spaced slices of the reference labels play the user's corrections;
a model is fine-tuned on them (from scratch unless a checkpoint is given)
and segments the rest; Dice is measured on the slices it never saw.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_medseg.labels import LabelSet


@dataclass
class ProtocolResult:
    """Per-organ Dice on the untouched slices, and what the run cost."""

    model: str
    k: int
    corrected: list[int]
    dice: dict[str, float]
    seconds: float
    steps: int
    labels: np.ndarray | None = field(default=None, repr=False)
    checkpoint: object = field(default=None, repr=False)
    finetune: object = field(default=None, repr=False)  # its FinetuneResult (None for k = 0)

    @property
    def mean_dice(self) -> float:
        return float(np.nanmean(list(self.dice.values())))


def untouched_dice(pred: np.ndarray, ref: np.ndarray, corrected, label_set: LabelSet) -> dict[str, float]:
    """Per-organ Dice over the slices not in ``corrected`` (z, y, x arrays)."""
    from napari_medseg.retrain.dice import dice

    rest = [z for z in range(ref.shape[0]) if z not in set(corrected)]
    return {name: dice(pred[rest] == value, ref[rest] == value) for value, name in label_set.organs.items()}


def run_protocol(
    image: np.ndarray,
    reference: np.ndarray,
    k: int,
    *,
    model_name: str = "dcaunet",
    time_budget_s: float = 120.0,
    model_config: dict | None = None,
    device: str = "auto",
    seed: int = 0,
    output_dir: str | Path | None = None,
    callback=None,
    options: dict | None = None,
    spacing=None,
    checkpoint=None,
    target_spacing: float | None = None,
    store=None,
    replay: bool = False,
    members: int | None = None,
    modality: str = "ct",
    source: str = "sample CT",
    training_labels: np.ndarray | None = None,
) -> ProtocolResult:
    """Run the protocol on ``image`` (raw ``(z, y, x)``) with ``reference`` labels (Synapse order).

    ``output_dir``: where the checkpoint and the store go (default: a new temporary folder that the caller
    owns and should remove, since ``checkpoint`` points into it).
    ``options``: more ``FinetuneConfig`` fields over the family's recipe.
    ``spacing``: the volume's ``(sz, sy, sx)`` mm (needed by spacing-aware models, the scratch default).
    ``checkpoint``: start from this checkpoint instead of from scratch.
    ``target_spacing``: from scratch, the ``"spacing"`` policy's pixel size (mm; default: the package's).
    ``store``: the :class:`CorrectionStore` the corrected slices go to (default: a fresh one under
    ``output_dir``); ``replay``: also train on that store's earlier entries, as the CLI does by default.
    ``members``: from scratch, models trained at once and averaged (``None``: the package's default).
    ``modality``: from scratch, ``"ct"`` or ``"mr"`` (its intensity normalisation); ``source``: the image's name
    in the provenance and the store.
    ``training_labels``: partial labels (255 = not labelled, e.g. ``scribbles.simulate_reviewer``'s strokes) to
    fine-tune on instead of ``reference``'s full slices; the score is still against ``reference``.

    With ``k = 0`` nothing is trained: an untrained model segments everything
    (the floor the curve starts from).
    """
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.progress import drive
    from napari_medseg.retrain.loop import StartFrom, evenly_spaced_slices, retrain_volume

    t0 = time.monotonic()
    corrected = evenly_spaced_slices(image.shape[0], k)
    if checkpoint is not None:
        start = StartFrom(checkpoint=checkpoint)
    else:
        start = StartFrom(model_name=model_name, label_set="synapse", modality=modality, model_config=model_config,
                          backbone_weights=None if model_name == "udfa" else "auto", target_spacing=target_spacing,
                          members=members)
    if k == 0:  # the untrained model: its random initial weights follow the seed
        labels, steps, checkpoint, finetuned = _untrained_labels(start, image, device, spacing, seed), 0, None, None
    else:
        work = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="medseg-protocol-"))
        work.mkdir(parents=True, exist_ok=True)
        options = dict(time_budget_s=time_budget_s, device=device, seed=seed, **(options or {}))
        partial = training_labels is not None
        gen = retrain_volume(image, training_labels if partial else reference, corrected, partial=partial,
                             start=start, spacing=spacing, source=f"{source}, {k} slices", options=options,
                             store=store if store is not None else CorrectionStore(work / "corrections"),
                             replay=replay, output=unused_path(work / f"{model_name}-k{k}.safetensors"))
        result = drive(gen, callback)
        labels, steps, checkpoint, finetuned = result.labels, result.finetune.steps, result.checkpoint, result.finetune
    scores = untouched_dice(labels, reference, corrected, SYNAPSE)
    return ProtocolResult(model_name, k, corrected, scores, time.monotonic() - t0, steps, labels, checkpoint, finetuned)


def _untrained_labels(start, image, device, spacing=None, seed: int = 0):
    from types import SimpleNamespace

    from napari_medseg.inference import run_segmentation, segment_volume
    from napari_medseg.retrain.loop import prepare_model

    model, label_set, prep, _ = prepare_model(start, image, options=dict(seed=seed, device=device))
    info = SimpleNamespace(label_set=label_set, preprocessing=prep, model_name=model.model_name, path="untrained")
    gen = segment_volume(image, [(model.eval(), info)], device=device, uncertainty=False, spacing=spacing)
    return run_segmentation(gen).labels


def unused_path(path: Path) -> Path:
    """``path``, or ``path`` with a counter before its suffix (``.nii.gz`` counts as one), never an existing file."""
    from napari_medseg.io.nifti import nifti_stem

    if not path.exists():
        return path
    stem = nifti_stem(path)
    suffix = path.name[len(stem):]
    i = 2
    while path.with_name(f"{stem}-{i}{suffix}").exists():
        i += 1
    return path.with_name(f"{stem}-{i}{suffix}")
