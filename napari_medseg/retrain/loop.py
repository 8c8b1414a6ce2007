"""The correct-and-retrain loop, Qt-free: fine-tune on corrected slices, save a new version, re-segment.

One generator, :func:`retrain_volume`, serves the Retrain dock widget (inside a
``thread_worker``), ``medseg finetune``, ``medseg demo`` and the benchmark::

    gen = retrain_volume(image, labels, corrected, start=StartFrom(checkpoint="base.safetensors"),
                         spacing=(3, 3, 3), source="case-12")
    for progress in gen:        # RetrainProgress(phase, fraction, message, loss, step)
        ...                     # close() cancels; the best weights so far are kept
    result = stop.value         # RetrainResult (or drive(gen))

Steps: (1) the base model is loaded, or built from a scratch preset; (2) it is
fine-tuned (``napari_medseg.retrain.finetune``) on the corrected slices of this volume plus
earlier corrections replayed from the :class:`CorrectionStore`; (3) the
result is saved as a **new checkpoint version** next to its parent (never
overwriting it), with provenance; (4) the corrections are added to the store;
(5) the unlocked slices are re-segmented, the corrected ones copied unchanged.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from napari_medseg.labels import LabelSet, get_label_set
from napari_medseg.preprocess import (DEFAULT_TARGET_SPACING, Preprocessing, guess_modality, inplane_spacing,
                                     modality_mismatch)
from napari_medseg.hashing import voxel_hash
from napari_medseg.retrain.datastore import UNLABELLED, CorrectionStore, ReplayPlan
from napari_medseg.userdirs import data_dir

#: Fine-tuning seconds of a retrain run given neither ``steps`` nor ``time_budget_s``.
DEFAULT_TIME_BUDGET_S = 60.0
#: From this many seconds of fine-tuning, a model from scratch is trained as the family's
#: ``scratch_members`` at once (:func:`default_members`).  Measured on the sample CT, k = 5, paired
#: seeds (bench/ensemble.py, docs/retrain.md "Two models at once"): two members were level with one
#: model at 60 s (+0.000, 6 pairs) and higher at 120 s (+0.008, 4 of 4) and 150 s (+0.011, 7 of 8).
ENSEMBLE_MIN_BUDGET_S = 120.0
#: Tag of the initial weights' random stream (:func:`init_seed`): any constant other than the crops' stream works.
INIT_STREAM = 1


@dataclass(frozen=True)
class StartFrom:
    """Where fine-tuning starts: a checkpoint, or a fresh model.

    Args:
        checkpoint: path of a medseg ``.safetensors`` checkpoint (the parent).
        model_name: ``"dcaunet"`` or ``"udfa"`` when starting from scratch.
        label_set: label set name or :class:`LabelSet` when starting from scratch.
        modality: ``"ct" | "mr"``; ``None`` guesses from the image (HU -> CT).  From a checkpoint, the
            image's modality, checked against the checkpoint's (a mismatch warns).
        model_config: overrides of the family's scratch preset (``FamilySpec.scratch``; e.g. a tiny config in tests).
        backbone_weights: U-DFA from scratch: DINOv2 weights (path, ``"hub"``,
            ``"auto"``: ``$MEDSEG_DINOV2_WEIGHTS`` or the cache, or ``None`` = random init).
        target_spacing: from scratch with the ``"spacing"`` policy: pixel size in mm
            (``None`` = ``DEFAULT_TARGET_SPACING``; bench/spacing_target.py sweeps it).
        members: from scratch: how many models to train at once and average (an ``Ensemble``);
            ``None`` = :func:`default_members`.  From a checkpoint: ``None`` or the checkpoint's own count.
    """

    checkpoint: str | Path | None = None
    model_name: str | None = None
    label_set: str | LabelSet | None = None
    modality: str | None = None
    model_config: dict | None = None
    backbone_weights: str | None = "auto"
    target_spacing: float | None = None
    members: int | None = None

    def __post_init__(self):
        if self.checkpoint is None and (self.model_name is None or self.label_set is None):
            raise ValueError("start from a checkpoint, or name a model and a label set to start from scratch")
        if self.members is not None:
            from napari_medseg.checkpoint import MAX_MEMBERS

            if isinstance(self.members, bool) or not isinstance(self.members, int) or not 1 <= self.members <= MAX_MEMBERS:
                raise ValueError(f"members must be an integer in 1..{MAX_MEMBERS}, got {self.members!r}")


@dataclass(frozen=True)
class RetrainProgress:
    """``phase`` is ``"fine-tune"`` or ``"segment"``; ``fraction`` in [0, 1] of that phase."""

    phase: str
    fraction: float
    message: str
    loss: float | None = None
    step: int | None = None


@dataclass
class RetrainResult:
    """What :func:`retrain_volume` returns.

    Attributes:
        checkpoint: :class:`CheckpointInfo` of the new version (``None`` if cancelled before saving).
        model: the fine-tuned model (best weights).
        finetune: ``napari_medseg.retrain.finetune.FinetuneResult`` (losses, Dice before/after, steps, seconds).
        labels: uint8 ``(z, y, x)``: corrected slices unchanged, the rest re-segmented.
        uncertainty: float16 ``(z, y, x)`` (0 on corrected slices).
        slice_uncertainty: float64 ``(z,)``: its mean per slice (:func:`slice_uncertainty`), computed
            in the worker so that ranking slices costs the GUI thread nothing.
        organs: ``organ_stats.OrganStat`` rows of the new labels with their mean uncertainty (which organ
            to check next), computed in the worker too; None without the volume's ``(sz, sy, sx)`` spacing.
        corrected: the slice indices trained on (and kept).
        replayed_slices: how many earlier corrected slices were replayed.
        replay_plan: :class:`ReplayPlan`: the store in use, the entries replayed (slices, patients), what was skipped.
        image_hash: voxel hash of the image (its key in the store).
        seconds: wall time of the whole loop.
    """

    checkpoint: object = None
    model: object = None
    finetune: object = None
    labels: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    slice_uncertainty: np.ndarray | None = None
    organs: list | None = None
    corrected: list[int] = field(default_factory=list)
    replayed_slices: int = 0
    replay_plan: ReplayPlan | None = None
    image_hash: str | None = None
    seconds: float = 0.0


def evenly_spaced_slices(depth: int, k: int) -> list[int]:
    """``k`` interior slice indices spread evenly over ``depth`` slices (the demo's "corrections")."""
    if k <= 0:
        return []
    if k > depth:
        raise ValueError(f"cannot pick {k} slices from a volume of {depth}")
    return sorted({int(round(v)) for v in np.linspace(0, depth - 1, k + 2)[1:-1]})


def next_version_path(parent: str | Path | None, directory: str | Path | None = None, stem: str = "model") -> Path:
    """A new, unused checkpoint path: ``name.v2.safetensors`` after ``name.safetensors``.

    With a parent, the version goes beside it; otherwise into ``directory``
    (default ``<data dir>/checkpoints``) as ``<stem>.v1.safetensors``.
    """
    if parent is not None:
        parent = Path(parent)
        directory = parent.parent
        name = parent.name[: -len(".safetensors")] if parent.name.endswith(".safetensors") else parent.stem
        match = re.fullmatch(r"(.*)\.v(\d+)", name)
        stem, version = (match.group(1), int(match.group(2)) + 1) if match else (name, 2)
    else:
        directory = Path(directory) if directory is not None else data_dir() / "checkpoints"
        version = 1
    directory = Path(directory)
    while (directory / f"{stem}.v{version}.safetensors").exists():
        version += 1
    return directory / f"{stem}.v{version}.safetensors"


def default_members(model_name: str, device="auto", time_budget_s: float | None = None) -> int:
    """Models a fine-tune from scratch trains at once: the family's ``scratch_members`` when ``device``
    is a CPU with two or more torch threads (one model leaves the second core half idle) and the
    fine-tune has a time budget of at least :data:`ENSEMBLE_MIN_BUDGET_S`; else 1 (a shorter budget
    or a step budget; a GPU or a single core: not measured)."""
    import torch

    from napari_medseg.device import pick_device
    from napari_medseg.models import family_spec
    from napari_medseg.retrain.members import cpu_threads

    if time_budget_s is None or time_budget_s < ENSEMBLE_MIN_BUDGET_S:
        return 1
    dev = device if isinstance(device, torch.device) else pick_device(str(device))
    threads = cpu_threads() if dev.type == "cpu" else 0
    return family_spec(model_name).scratch_members if threads >= 2 else 1


def init_seed(seed: int) -> int:
    """The seed of a new model's initial weights, derived from the fine-tune's ``seed`` but not equal to it.

    The crops and augmentation draw from a generator seeded with ``seed`` itself (``finetune._prepare``); seeding
    the weights with it too made their random numbers the same sequence as the crops', so each seed gave one fixed
    pairing of the two.  A separate stream (``SeedSequence`` of ``seed`` and a stream tag) keeps them independent."""
    return int(np.random.SeedSequence([int(seed), INIT_STREAM]).generate_state(1)[0])


def prepare_model(start: StartFrom, image: np.ndarray, options: Mapping | None = None):
    """``(model, label_set, preprocessing, parent_info)`` for a :class:`StartFrom`; from scratch, the
    fine-tune's device and time budget (:func:`finetune_config` of ``options``) set
    :func:`default_members`, and its ``seed`` the initial weights (torch's own seed is random per
    process).  Several members give an ``Ensemble`` (each member its own initial weights)."""
    from napari_medseg.checkpoint import load_checkpoint
    from napari_medseg.models import build_model, family_spec

    if start.checkpoint is not None:
        label_set = start.label_set
        model, info = load_checkpoint(start.checkpoint, label_set=label_set, model_name=start.model_name)
        if start.members is not None and start.members != info.members:
            raise ValueError(f"{Path(start.checkpoint).name} holds {info.members} member(s), not {start.members}; "
                             "a fine-tune keeps its checkpoint's members (start from scratch to choose)")
        mismatch = modality_mismatch(Path(start.checkpoint).name, info.preprocessing.modality,
                                     start.modality or guess_modality(image))
        if mismatch:  # a warning, not an error: the modality of a file without a DICOM tag is a guess
            warnings.warn(mismatch, UserWarning, stacklevel=2)
        return model, info.label_set, info.preprocessing, info
    label_set = start.label_set if isinstance(start.label_set, LabelSet) else get_label_set(start.label_set)
    spec = family_spec(start.model_name)
    modality = start.modality or guess_modality(image)
    policy = spec.scratch_resize_policy
    prep = Preprocessing(modality=modality, resize_policy=policy,
                         target_spacing=(start.target_spacing or DEFAULT_TARGET_SPACING) if policy == "spacing" else None)
    config = spec.scratch_config()
    config.update(start.model_config or {})
    if spec.external_weights:
        config.setdefault(spec.external_weights, start.backbone_weights)
    tune = finetune_config(start.model_name, from_scratch=True, options=options)
    members = start.members if start.members is not None else default_members(start.model_name, tune.device,
                                                                                tune.time_budget_s)
    import torch

    torch.manual_seed(init_seed(tune.seed))  # the initial weights follow the fine-tune's seed: a run from scratch repeats
    models = [build_model(start.model_name, label_set.num_classes, **config) for _ in range(members)]
    for model in models:
        if spec.external_weights:
            model.config[spec.external_weights] = None  # the checkpoint carries those weights itself
    from napari_medseg.models.ensemble import combine

    return combine(models), label_set, prep, None


def _check_inputs(image: np.ndarray, labels: np.ndarray, corrected: Sequence[int], label_set: LabelSet,
                  partial: bool = False):
    if image.ndim != 3:
        raise ValueError(f"fine-tuning needs a 3D (z, y, x) image, got shape {image.shape}")
    if labels.shape != image.shape:
        raise ValueError(f"labels shape {labels.shape} differs from the image's {image.shape}; they must share one grid")
    if not corrected:
        raise ValueError("no corrected or reviewed slices: paint corrections (or mark slices reviewed) first")
    bad = [z for z in corrected if not 0 <= z < image.shape[0]]
    if bad:
        raise ValueError(f"slice indices {bad} are outside 0..{image.shape[0] - 1}")
    if partial:
        from napari_medseg.scribbles import validate_partial

        validate_partial(labels[corrected], label_set.num_classes - 1, name="partial labels of the chosen slices")
        return
    top = int(max(labels[z].max() for z in corrected))
    if top >= label_set.num_classes:
        raise ValueError(
            f"corrected slices contain label {top}, but label set {label_set.name!r} only has 0..{label_set.num_classes - 1}"
        )


def _complete_slices(labels: np.ndarray, slices) -> list[int]:
    """The ``slices`` with no unlabelled (255) pixel: full corrections, which re-segmenting must keep."""
    return [z for z in slices if not (labels[z] == UNLABELLED).any()]


def retrain_volume(
    image: np.ndarray,
    labels: np.ndarray,
    corrected: Sequence[int],
    *,
    start: StartFrom,
    spacing: Sequence[float] | None = None,
    source: str = "",
    options: Mapping | None = None,
    store: CorrectionStore | None = None,
    replay: bool | Sequence[str] = True,
    output: str | Path | None = None,
    resegment: bool = True,
    should_stop=None,
    on_model=None,
    partial: bool = False,
) -> Iterator[RetrainProgress]:
    """Fine-tune on ``corrected`` slices, save a new version and re-segment the rest.

    Args:
        image: raw ``(z, y, x)`` volume (HU for CT), canonical order.
        labels: ``(z, y, x)`` current labels; only the ``corrected`` slices are read as truth.
        corrected: axial indices of edited + reviewed slices (locked, never overwritten).
        start: :class:`StartFrom` (base checkpoint, or model + label set from scratch).
        spacing: ``(sz, sy, sx)`` mm: resamples the slices when the model's resize policy is
            ``"spacing"`` (then required: one-line error without a usable one) and is stored
            with the corrections (NaN when unknown).
        source: identity of the image (path, name) for provenance and the store.
        options: :class:`~napari_medseg.retrain.config.FinetuneConfig` fields (``scope``, ``steps``,
            ``time_budget_s``, ``lr``, ``device``, ...) over the family's recipe
            (``FamilySpec.recipe(from_scratch)``; from scratch its ``scratch_scope``) and a
            60 s time budget; unknown keys raise.
        store: corrections datastore (``None`` = the default one); the corrected slices are added to it,
            keyed by the image's voxel hash (a re-run replaces, never duplicates).
        replay: mix the store's entries of the same label set and modality, from other images, into
            training (``CorrectionStore.plan_replay``); ``False`` = none; a list of entry ids = exactly
            those (one of another label set or modality is an error).
        output: path of the new checkpoint; default :func:`next_version_path`.
            Never overwrites an existing file.
        resegment: re-segment unlocked slices afterwards (with ``options``' device and precision).
        should_stop: callable polled every step; when it returns True, fine-tuning
            stops early and the best weights so far are saved and used (a
            "stop now" button).  Closing the generator instead aborts everything.
        on_model: optional ``on_model(model, label_set, preprocessing)`` called once before
            fine-tuning (e.g. a live preview that predicts with the weights being trained).
        partial: ``labels`` on ``corrected`` may be partial (255 not labelled, 0 background,
            1..K organs): unlabelled pixels are ignored, slices holding 255 are not locked
            (re-segmenting fills them in around their strokes, which it keeps; fully labelled ones stay
            locked) and the store keeps the 255s.
    """
    t0 = time.monotonic()
    image, labels = np.asarray(image), np.asarray(labels)
    corrected = sorted({int(z) for z in corrected})
    model, label_set, prep, parent = prepare_model(start, image, options)
    _check_inputs(image, labels, corrected, label_set, partial)
    inplane_spacing(spacing, prep)  # a spacing-aware model needs the volume's spacing: fail before any work
    if on_model is not None:
        on_model(model, label_set, prep)
    config = finetune_config(model.model_name, from_scratch=parent is None, options=options)
    store = store if store is not None else CorrectionStore()
    image_hash = voxel_hash(image)
    plan = store.plan_replay(label_set.to_dict(), prep.modality, exclude_hash=image_hash, exclude_source=source,
                             ids=None if isinstance(replay, bool) else replay) if replay is not False else ReplayPlan(store.root)
    replayed = store.replay(plan)
    if replay is True:  # the automatic plan replays fully labelled slices; entries named by id: as they are
        replayed = plan.keep_fully_labelled(replayed)
    result = RetrainResult(corrected=corrected, replayed_slices=sum(len(images) for images, _, _ in replayed), model=model,
                           replay_plan=plan, image_hash=image_hash)
    yield from _fine_tune(model, image, labels, prep, config, replayed, result, should_stop, spacing)
    path = Path(output) if output is not None else next_version_path(
        start.checkpoint, stem=f"{start.model_name or model.model_name}-{label_set.name}"
    )
    _save(path, model, image, labels, label_set, prep, parent, source, spacing, store, result)
    if resegment:
        locked = _complete_slices(labels, corrected) if partial else corrected
        strokes = {z: labels[z] for z in corrected if z not in set(locked)}  # scribbled slices: filled, strokes kept
        yield from _resegment(model, image, labels, config, result, locked=locked, spacing=spacing, strokes=strokes)
    result.seconds = time.monotonic() - t0
    return result


def finetune_config(model_name: str, *, from_scratch: bool, options: Mapping | None = None):
    """The :class:`FinetuneConfig` of a retrain run: family recipe, 60 s budget, then ``options``."""
    from napari_medseg.models import family_spec
    from napari_medseg.retrain.config import FinetuneConfig

    spec = family_spec(model_name)
    options = dict(options or {})
    defaults = spec.recipe(from_scratch)
    if from_scratch:
        defaults["scope"] = spec.scratch_scope
    if options.get("steps") is None and options.get("time_budget_s") is None:
        defaults["time_budget_s"] = DEFAULT_TIME_BUDGET_S
    defaults.update({k: v for k, v in options.items() if v is not None or k not in defaults})
    return FinetuneConfig.from_dict(defaults)


def _fine_tune(model, image, labels, prep, config, replayed, result, should_stop, spacing) -> Iterator[RetrainProgress]:
    """Phase 1: fine-tune on the corrected slices (+ replay); ``result.finetune`` fills as it runs."""
    from napari_medseg.models.ensemble import member_count
    from napari_medseg.retrain.finetune import FinetuneData, FinetuneResult, finetune
    from napari_medseg.retrain.members import finetune_members

    corrected = result.corrected
    value_range = None
    if prep.modality == "mr":
        from napari_medseg.preprocess import intensity_range

        value_range = intensity_range(image, prep)
    data = FinetuneData(images=list(image[corrected]), labels=list(labels[corrected]), preprocessing=prep,
                        replay=replayed or (), value_range=value_range, spacing=spacing)
    result.finetune = FinetuneResult()
    n = result.replayed_slices
    patients = result.replay_plan.patients if result.replay_plan is not None else 0
    members = member_count(model)
    yield RetrainProgress("fine-tune", 0.0, f"fine-tuning {f'{members} models at once ' if members > 1 else ''}"
                          f"on {len(corrected)} slices" + (f" + {n} replayed from {patients} patient(s)" if n else ""))
    tune = finetune_members if members > 1 else finetune
    gen = tune(model, data, config, result=result.finetune)
    try:
        for p in gen:
            yield RetrainProgress("fine-tune", p.fraction, f"step {p.step}, loss {p.loss:.3f}", loss=p.loss, step=p.step)
            if should_stop is not None and should_stop():
                break
    finally:
        gen.close()  # early stop or abort: the best weights so far are loaded into the model


def _save(path, model, image, labels, label_set, prep, parent, source, spacing, store, result) -> None:
    """Phase 2: save the new checkpoint version with provenance; add the corrections to the store."""
    from napari_medseg.checkpoint import save_checkpoint

    ft, corrected, n = result.finetune, result.corrected, result.replayed_slices
    provenance = {
        "data": f"{len(corrected)} corrected slices of {source or 'an unnamed image'}"
        + (f" + {n} replayed slices" if n else ""),
        "image": source,
        "slices": corrected,
        "steps": ft.steps,
        "weights_from_step": ft.best_step,
        "seconds": round(ft.seconds, 2),
        "final_loss": ft.final_loss,
        "scope": ft.scope,
        "dice_before": ft.dice_before,
        "dice_after": ft.dice_after,
        "dice_on": ft.dice_on,
        "stopped_by": ft.stopped_by,
        "from_scratch": parent is None,
        "augment": ft.augment,
    }
    if ft.members:  # an ensemble: each member's own run
        provenance["members"] = [{"steps": m.steps, "weights_from_step": m.best_step, "dice_before": m.dice_before,
                                  "dice_after": m.dice_after, "stopped_by": m.stopped_by} for m in ft.members]
    result.checkpoint = save_checkpoint(path, model, label_set=label_set, preprocessing=prep,
                                        provenance=provenance, parent=parent)
    known = spacing if spacing is not None else (float("nan"),) * 3  # replay by a spacing-aware model refuses NaN
    store.add(image[corrected], labels[corrected], corrected, spacing=known, source=source,
              label_set=label_set.to_dict(), checkpoint=result.checkpoint.sha256, modality=prep.modality,
              image_hash=result.image_hash)


def _resegment(model, image, labels, config, result, locked, spacing=None, strokes=None) -> Iterator[RetrainProgress]:
    """Phase 3: re-segment the unlocked slices (on the fine-tuning device and precision); the corrected ones are
    copied, and the scribbled ones (``strokes``) keep their strokes."""
    from napari_medseg.inference import segment_volume

    seg = segment_volume(image, [(model, result.checkpoint)], device=config.device, precision=config.precision,
                         locked=locked, previous=labels.astype(np.uint8, copy=False), spacing=spacing,
                         strokes=strokes)
    try:
        while True:
            p = next(seg)
            yield RetrainProgress("segment", p.done / max(p.total, 1), f"segmenting: {p.done}/{p.total} slices")
    except StopIteration as stop:
        result.labels = stop.value.labels
        result.uncertainty = stop.value.uncertainty
        result.slice_uncertainty = slice_uncertainty(result.uncertainty)
    if spacing is not None and np.size(spacing) == 3:
        from napari_medseg.organ_stats import organ_stats

        result.organs = organ_stats(result.labels, spacing, result.checkpoint.label_set, image,
                                    uncertainty=result.uncertainty)


def slice_uncertainty(uncertainty: np.ndarray | None) -> np.ndarray | None:
    """Mean uncertainty per slice, float64 ``(z,)``, of a ``(z, y, x)`` map (None passes through).

    About 0.3 ms per 512² slice (0.2 s for 600 slices): done once, off the GUI thread.
    """
    if uncertainty is None:
        return None
    return np.asarray(uncertainty).mean(axis=(1, 2), dtype=np.float64)  # float64 sums of the float16 map, no copy


def rank_uncertain_slices(uncertainty: np.ndarray, candidates: Sequence[int]) -> list[int]:
    """Candidate slices sorted by mean uncertainty, most uncertain first (active learning).

    Args:
        uncertainty: ``(z, y, x)`` per-voxel uncertainty (e.g. normalised entropy), or its
            per-slice means ``(z,)`` (:func:`slice_uncertainty`).
        candidates: slice indices to rank (usually the unlocked ones).
    """
    per_slice = uncertainty if np.ndim(uncertainty) == 1 else slice_uncertainty(uncertainty)
    scores = {int(z): float(per_slice[z]) for z in candidates}
    return sorted(scores, key=lambda z: (-scores[z], z))


#: Suggested slices keep this far (mm along z) from each other and from the corrected slices:
#: neighbours within about a centimetre show mostly the same anatomy, so a correction there teaches
#: little more.  A heuristic, not tuned: bench/effort.py compares suggested and evenly spaced slices.
SUGGESTION_GAP_MM = 10.0


def describe_suggestion(z: int, corrected: Sequence[int], slice_mm: float | None = None) -> str:
    """One sentence on why slice ``z`` was suggested, with its true distance to the nearest corrected slice."""
    if not len(corrected):
        return "the most uncertain unlocked slice."
    nearest = min(abs(int(z) - int(c)) for c in corrected)
    distance = f"{nearest * slice_mm:.0f} mm" if slice_mm and slice_mm > 0 else f"{nearest} slices"
    kept = "" if slice_mm and nearest * slice_mm >= SUGGESTION_GAP_MM - 1e-6 else (
        f" (no unlocked slice is {SUGGESTION_GAP_MM:.0f} mm from every corrected one)" if slice_mm else "")
    return f"the most uncertain unlocked slice, {distance} from the nearest corrected one{kept}."


def suggest_slices(uncertainty: np.ndarray, candidates: Sequence[int], n: int, *, corrected: Sequence[int] = (),
                   slice_mm: float | None = None, gap_mm: float = SUGGESTION_GAP_MM) -> list[int]:
    """Up to ``n`` slices to correct next: the most uncertain first, each at least ``gap_mm`` from the
    others and from ``corrected`` (greedy).  When too few candidates are that far (later rounds,
    many slices corrected), the gap shrinks one slice at a time for the rest, so the picks stay as
    far apart as they can rather than landing on neighbours; never fewer than ``n`` when there are
    that many candidates.

    Args:
        uncertainty: ``(z, y, x)`` per-voxel uncertainty or its per-slice means ``(z,)``;
            candidates: unlocked slice indices;
        slice_mm: slice spacing in mm (None: 3 slices stand for the gap).
    """
    ranked = rank_uncertain_slices(uncertainty, candidates)
    gap = 3 if not slice_mm or slice_mm <= 0 else max(1, int(np.ceil(gap_mm / slice_mm - 1e-9)))
    chosen: list[int] = []
    for min_gap in range(gap, 0, -1):
        for z in ranked:
            if len(chosen) < n and z not in chosen and all(
                    abs(z - c) >= min_gap for c in chosen + [int(c) for c in corrected]):
                chosen.append(z)
    return chosen

