"""The user's effort against Dice (issue 10's benchmark), first half: scribble -> fill -> accept.

The simulated reviewer (``napari_medseg.scribbles.simulate_scribbles``, the
issue's definition) scribbles k evenly spaced slices; each slice is filled
from its strokes (seeded watershed, no model); the table gives, per slice:

* ``scribble``: effort of the strokes (stroked pixels / body pixels);
* ``fill Dice``: mean organ Dice of the filled slice against the reference,
  i.e. what "accept" without touching up gives;
* ``fix``: effort of then correcting the fill to the reference (changed / body);
* ``total``: (stroked or changed) / body: scribble, fill, touch up to the reference;
* ``fill s``: seconds of the fill (median over ``--repeats``);
* ``guided s``: the same, guided by a ``(K+1, y, x)`` probability map (a random
  softmax here: this column measures the cost of guidance, not its benefit).

A full-slice correction costs 1 by definition.  Cases: ``sample``, the sample CT
(3 mm, 122x101); ``512``, the same CT resampled to 0.8 mm in-plane and padded to
512x512 (the size and pixel pitch of a clinical CT slice); ``mr``, TotalSegmentator's
example abdominal MR (3 mm, ``bench/data/totalsegmentator``; body mask by Otsu on log intensity).

    python bench/effort.py                      # the sample and 512 cases, k = 5
    python bench/effort.py --cases sample --k 10

Each comparison is one function ``experiment(case, args) -> list[dict]`` in
``EXPERIMENTS``.  ``finetune`` (issue 10 point 4) fine-tunes DCAU-Net from no
checkpoint, ``--budget`` seconds per fine-tune, and prints, per arm, the mean
organ Dice on the slices nobody touched against cumulative effort and wall time:

* ``full k``: the reference on k evenly spaced slices (effort 1);
* ``scribbles``: the simulated reviewer on the same k slices (``--partial``);
* ``+ round 1, suggested``: then the reviewer corrects the model's output on the
  ``--round-slices`` slices ``suggest_slices`` proposes (most uncertain, kept apart), and fine-tunes
  again from the new version on scribbles + corrected slices;
* ``+ round 2, suggested``: once more, from that version (``--rounds``, default 2);
* ``+ round 1 / 2, even``: the same rounds on the middles of the widest gaps between the
  corrected slices (``_pick_even``: what a user does without suggestions).

    python bench/effort.py --experiments finetune --cases sample --budget 150
    python bench/effort.py --experiments finetune --cases sample --budget 150 --threads 2 --full-only

``smoothness`` fine-tunes on the scribbles alone at ``--steps`` fixed optimiser steps
(quality independent of the machine's load) for each ``--smoothness-weights`` value and
``--seeds`` seed: the choice of ``FinetuneConfig.smoothness_weight``.

    python bench/effort.py --experiments smoothness --cases sample,512 --steps 900 --threads 1

``strokes``: the same, one model per seed, re-segmented with and without
``segment_volume(strokes=...)`` (the scribbled slices keep their strokes): Dice on the
untouched slices and the share of stroked pixels that keep their label.

    python bench/effort.py --experiments strokes --cases sample --steps 900 --seeds 0,1 --threads 1

``carry``: the halves of a scan as two patients: A's full corrections (3 slices), then B's
scribbles (``--carry-k`` slices) from scratch or from A's model with A replayed, both ways.

    python bench/effort.py --experiments carry --cases sample --steps 360 --seeds 0,1,2 --threads 1

``picks``: which slices a round should correct.  One scribbled model per seed (``--steps``), then a round
on ``suggest_slices``'s picks and one in the widest gaps (``_pick_even``), both scored on the slices neither touched.

    python bench/effort.py --experiments picks --cases sample --steps 900 --seeds 0,2 --threads 1

``variants``: scribbles only, fixed steps, the defaults against each ``--variants``
entry (FinetuneConfig fields), per seed: mean Dice, organ voxels / reference voxels,
and per-organ precision and recall.

    python bench/effort.py --experiments variants --cases sample,512 --steps 900 --seeds 0,1,2 --threads 1 \
        --variants '[{"smoothness_radius": 3}]'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _machine import cpu_name  # bench/_machine.py (scripts run as python bench/NAME.py)


@dataclass
class Case:
    """A scan with reference labels, both ``(z, y, x)``; spacing in mm (z, y, x)."""

    name: str
    image: np.ndarray
    reference: np.ndarray
    spacing: tuple[float, float, float]
    modality: str = "ct"


def sample_case() -> Case:
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume

    vol = read_volume(SAMPLE_CT)
    return Case("sample CT 3 mm", vol.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8),
                tuple(float(s) for s in vol.geometry.spacing))


def resampled_case(base: Case, pixel_mm: float = 0.8, side: int = 512) -> Case:
    """``base`` resampled in-plane to ``pixel_mm`` (linear / nearest for labels), centred in ``side``^2 of air."""
    from scipy import ndimage

    zoom = (1.0, base.spacing[1] / pixel_mm, base.spacing[2] / pixel_mm)
    image = ndimage.zoom(base.image.astype(np.float32), zoom, order=1)
    labels = ndimage.zoom(base.reference, zoom, order=0)
    if max(image.shape[1:]) > side:
        raise ValueError(f"resampled slice {image.shape[1:]} does not fit in {side}^2")
    pad = [(0, 0)] + [((side - n) // 2, side - n - (side - n) // 2) for n in image.shape[1:]]
    return Case(f"sample CT {pixel_mm} mm, {side}^2", np.pad(image, pad, constant_values=-1000.0).astype(np.int16),
                np.pad(labels, pad), (base.spacing[0], pixel_mm, pixel_mm))


def mr_case() -> Case:
    """TotalSegmentator's example abdominal MR (3 mm) with its labels in the Synapse order (a scan nobody tuned on)."""
    from napari_medseg.io import read_volume
    from second_patient import DATA, to_synapse  # bench/second_patient.py

    vol = read_volume(DATA / "example_mr_sm.nii.gz")
    ids = read_volume(DATA / "example_seg_mr.nii.gz").array
    if ids.shape != vol.array.shape:
        raise ValueError(f"MR labels {ids.shape} are not on the MR's grid {vol.array.shape}")
    return Case("MR 3 mm", vol.array.astype(np.float32), to_synapse(ids, "total_mr"),
                tuple(float(s) for s in vol.geometry.spacing), "mr")


CASES = {"sample": lambda: sample_case(), "512": lambda: resampled_case(sample_case()), "mr": lambda: mr_case()}


def slice_dice(pred: np.ndarray, ref: np.ndarray, organs) -> float:
    """Mean Dice over the organs present in ``pred`` or ``ref`` on one slice (nan when none)."""
    from training.metrics import dice

    scores = [dice(pred == v, ref == v) for v in organs]
    scores = [s for s in scores if not np.isnan(s)]
    return float(np.mean(scores)) if scores else float("nan")


def fill_experiment(case: Case, args) -> list[dict]:
    """Per slice: scribble -> fill -> accept (and touch up to the reference)."""
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.scribbles import UNLABELLED, body_mask, effort, simulate_scribbles

    organs = [int(v) for v in np.unique(case.reference) if v > 0]
    body = body_mask(case.image, case.modality)
    rng = np.random.default_rng(0)
    rows = []
    for z in evenly_spaced_slices(case.image.shape[0], args.k):
        strokes = simulate_scribbles(case.reference[z], body[z])
        filled, seconds = _timed_fill(case.image[z], strokes.partial, case.modality, None, args.repeats)
        logits = rng.normal(size=(int(case.reference.max()) + 1, *filled.shape)).astype(np.float32)  # (K+1, y, x)
        _, guided_seconds = _timed_fill(case.image[z], strokes.partial, case.modality,
                                        np.exp(logits) / np.exp(logits).sum(0), args.repeats)
        stroked = strokes.partial != UNLABELLED
        changed = filled != case.reference[z]
        n_body = int(body[z].sum())
        rows.append(dict(case=case.name, slice=z, scribble=strokes.effort, fill_dice=slice_dice(filled, case.reference[z], organs),
                         fix=effort(int(changed.sum()), n_body), total=effort(int((stroked | changed).sum()), n_body),
                         fill_s=seconds, guided_s=guided_seconds, shape=list(filled.shape), body_pixels=n_body,
                         stroked=int(stroked.sum())))
    return rows


def _timed_fill(image, partial, modality, probabilities, repeats: int):
    """The fill of one slice and its median seconds over ``repeats`` runs."""
    from napari_medseg.scribbles import fill_from_scribbles

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        filled = fill_from_scribbles(image, partial, modality=modality, probabilities=probabilities)
        times.append(time.perf_counter() - t0)
    return filled, float(np.median(times))


def finetune_experiment(case: Case, args) -> list[dict]:
    """Full slices vs scribbles vs scribbles + ``--rounds`` rounds of corrections (suggested / evenly spaced).

    Each round corrects the newest model's output on ``--round-slices`` more slices and fine-tunes
    again from that model; effort and wall time are cumulative.  Each arm is scored on the slices
    it left untouched and, so that arms compare like for like, on the slices no arm touched."""
    import tempfile

    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.scribbles import UNLABELLED, body_mask, simulate_reviewer

    body = body_mask(case.image, case.modality)
    depth = case.image.shape[0]
    slices = evenly_spaced_slices(depth, args.k)
    partial, _ = simulate_reviewer(case.image, case.reference, slices, case.modality)
    stroked = int((partial != UNLABELLED).sum())
    with tempfile.TemporaryDirectory() as tmp:
        def row(arm, touched, effort_px, labels, runs):
            untouched = [z for z in range(depth) if z not in touched]
            print(f"  row: {arm}", flush=True)
            predictions.append(labels)
            return dict(case=case.name, arm=arm, touched=sorted(touched), effort=effort_px / int(body[touched].sum()),
                        effort_pixels=int(effort_px), dice=untouched_dice(labels, case.reference, untouched),
                        seconds=sum(r.seconds for r in runs), steps=[r.finetune.steps for r in runs])

        predictions: list[np.ndarray] = []  # per row, to score every arm on the slices no arm touched

        full = _retrain(case, case.reference, slices, None, tmp, args, partial=False)
        rows = [row(f"full slices k={args.k}", slices, int(body[slices].sum()), full.labels, [full])]
        if not args.full_only:
            scribbled = _retrain(case, partial, slices, None, tmp, args, partial=True)
            rows.append(row(f"scribbles k={args.k}", slices, stroked, scribbled.labels, [scribbled]))
            for how, pick in (("suggested", _pick_suggested), ("even", _pick_even)):
                model, labels, touched, effort_px, runs = scribbled, partial, list(slices), stroked, [scribbled]
                for round_number in range(1, args.rounds + 1):
                    candidates = [z for z in range(depth) if z not in touched]
                    chosen = pick(model, candidates, touched, args.round_slices, case.spacing[0])
                    labels, changed = _round_of_corrections(case, labels, model.labels, chosen, body)
                    model = _retrain(case, labels, touched + chosen, model.checkpoint.path, tmp, args, partial=True)
                    touched, effort_px, runs = touched + chosen, effort_px + changed, runs + [model]
                    rows.append(row(f"scribbles + round {round_number} on {len(chosen)} {how} slices {chosen}", touched,
                                    effort_px, model.labels, runs))
        common = [z for z in range(depth) if not any(z in r["touched"] for r in rows)]
        for r, labels in zip(rows, predictions):
            r["dice_common"] = untouched_dice(labels, case.reference, common)
            r["common_slices"] = len(common)
    return rows


def _scribble_runs(case: Case, args, variants):
    """Scribbles only on ``args.k`` evenly spaced slices, ``args.steps`` fixed steps, per seed and variant.

    ``variants``: ``[(name, FinetuneConfig overrides), ...]``.  Yields ``(seed, name, partial, slices,
    untouched, RetrainResult)``; the models live in one temporary folder for the whole loop.
    """
    import tempfile

    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.scribbles import simulate_reviewer

    slices = evenly_spaced_slices(case.image.shape[0], args.k)
    partial, _ = simulate_reviewer(case.image, case.reference, slices, case.modality)
    untouched = [z for z in range(case.image.shape[0]) if z not in slices]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(v) for v in args.seeds.split(",")):
            for name, overrides in variants:
                options = dict(steps=args.steps, seed=seed, precision="fp32", **overrides)
                yield seed, name, partial, slices, untouched, _retrain(case, partial, slices, None, tmp, args,
                                                                        partial=True, options=options)


def smoothness_experiment(case: Case, args) -> list[dict]:
    """Scribbles only, fixed steps: Dice on the untouched slices per smoothness weight, sigma and seed."""
    pairs = [token.split("@") if "@" in token else (token, sigma)  # "200@x0.5": one weight with one sigma
             for token in args.smoothness_weights.split(",") for sigma in args.smoothness_sigmas.split(",")]
    variants = [((float(w), sigma), dict(smoothness_weight=float(w), **_sigma_options(sigma)))
                for w, sigma in dict.fromkeys(tuple(pair) for pair in pairs)]
    return [dict(case=case.name, weight=weight, sigma=sigma, seed=seed, steps=[result.finetune.steps],
                 dice=untouched_dice(result.labels, case.reference, untouched), seconds=result.seconds)
            for seed, (weight, sigma), _, _, untouched, result in _scribble_runs(case, args, variants)]


def _sigma_options(token: str) -> dict:
    """``"0.05"``: that sigma (image units); ``"x0.5"``: 0.5 x the slices' typical intensity step."""
    if token.startswith("x"):
        return dict(smoothness_sigma=None, smoothness_sigma_per_step=float(token[1:]))
    return dict(smoothness_sigma=float(token))


def strokes_experiment(case: Case, args) -> list[dict]:
    """Scribbles only, fixed steps: the same model re-segments with and without keeping the strokes."""
    from napari_medseg.inference import run_segmentation, segment_volume
    from napari_medseg.scribbles import UNLABELLED

    rows = []
    for seed, _, partial, slices, untouched, result in _scribble_runs(case, args, [("default", {})]):
        for keep in (False, True):
            strokes = {z: partial[z] for z in slices} if keep else None
            labels = run_segmentation(segment_volume(case.image, [(result.model.eval(), result.checkpoint)],
                                                     device="cpu", precision="fp32", uncertainty=False,
                                                     spacing=case.spacing, strokes=strokes)).labels
            kept = float(np.mean([(labels[z] == partial[z])[partial[z] != UNLABELLED].mean() for z in slices]))
            rows.append(dict(case=case.name, seed=seed, keep_strokes=keep, steps=[result.finetune.steps],
                             dice=untouched_dice(labels, case.reference, untouched), strokes_kept=kept))
    return rows


def variants_experiment(case: Case, args) -> list[dict]:
    """Scribbles only, fixed steps: the defaults against each ``--variants`` entry, per seed.

    Besides the mean Dice on the untouched slices: predicted / reference organ voxels
    (above 1 = the organs come out too large) and, per organ, precision and recall.
    """
    variants = ([] if args.skip_default else [("default", {})]) + [(json.dumps(v, sort_keys=True), v)
                                                                    for v in json.loads(args.variants)]
    rows = []
    for seed, name, _, _, untouched, result in _scribble_runs(case, args, variants):
        pred, ref = result.labels[untouched], case.reference[untouched]
        organs = [int(v) for v in np.unique(case.reference) if v > 0]
        true_pos = {v: int(((pred == v) & (ref == v)).sum()) for v in organs}
        rows.append(dict(case=case.name, variant=name, seed=seed, steps=[result.finetune.steps],
                         dice=untouched_dice(result.labels, case.reference, untouched),
                         size_ratio=organ_size_ratio(pred, ref),
                         precision={v: true_pos[v] / max(1, int((pred == v).sum())) for v in organs},
                         recall={v: true_pos[v] / max(1, int((ref == v).sum())) for v in organs},
                         seconds=result.seconds))
    return rows


def picks_experiment(case: Case, args) -> list[dict]:
    """Which slices a round should correct: each strategy in :data:`PICKS` on the same scribbled model.

    Per seed: scribbles on ``args.k`` evenly spaced slices, ``--steps`` fixed steps; then, per
    strategy, the reviewer corrects the model's output on ``--round-slices`` slices and the model
    fine-tunes ``--steps`` more on scribbles + corrections.  Dice on the slices that no strategy
    touched, so every strategy is scored on the same slices (the ``finetune`` arms are not).
    """
    import tempfile

    from napari_medseg.scribbles import body_mask

    body = body_mask(case.image, case.modality)
    depth = case.image.shape[0]
    rows = []
    for seed, _, partial, slices, _, scribbled in _scribble_runs(case, args, [("default", {})]):
        candidates = [z for z in range(depth) if z not in slices]
        picks = {name: pick(scribbled, candidates, slices, args.round_slices, case.spacing[0])
                 for name, pick in PICKS.items()}
        common = [z for z in candidates if not any(z in chosen for chosen in picks.values())]
        print(f"  seed {seed}: picks {picks}; scored on {len(common)} slices", flush=True)
        rows.append(dict(case=case.name, seed=seed, strategy="scribbles only", picks=[], round_effort=0.0,
                         dice=untouched_dice(scribbled.labels, case.reference, common)))
        with tempfile.TemporaryDirectory() as tmp:
            for name, chosen in picks.items():
                labels, changed = _round_of_corrections(case, partial, scribbled.labels, chosen, body)
                again = _retrain(case, labels, slices + chosen, scribbled.checkpoint.path, tmp, args, partial=True,
                                 options=dict(steps=args.steps, seed=seed, precision="fp32"))
                rows.append(dict(case=case.name, seed=seed, strategy=name, picks=chosen,
                                 round_effort=changed / int(body[chosen].sum()),
                                 dice=untouched_dice(again.labels, case.reference, common)))
                print(f"  seed {seed} {name:24s} {chosen}: Dice on the common slices {rows[-1]['dice']:.3f}",
                      flush=True)
    return rows


def _round_of_corrections(case: Case, partial, predicted, chosen, body):
    """The reviewer corrects ``predicted`` to the reference on ``chosen``: ``(labels, pixels changed)``."""
    from napari_medseg.scribbles import simulate_correction

    labels = partial.copy()
    changed = 0
    for z in chosen:
        labels[z], _ = simulate_correction(predicted[z], case.reference[z], body[z])
        changed += int((predicted[z] != case.reference[z]).sum())
    return labels, changed


def _pick_suggested(result, candidates, corrected, n, slice_mm):
    from napari_medseg.retrain.loop import suggest_slices

    return suggest_slices(result.uncertainty, candidates, n, corrected=corrected, slice_mm=slice_mm)


def _pick_even(result, candidates, corrected, n, slice_mm):
    """The baseline without a model: the middle of the widest gaps between the corrected slices.

    Greedily, the candidate farthest from every corrected slice and every earlier pick; ties go to
    the one farthest from this round's earlier picks, then to the one nearer the volume's middle.
    So all corrected slices end up as evenly spread as they can be.  (Until 2026-12-06 the picks
    were evenly spaced among the *untouched* slices, which put round 2's [8, 21] next to round 1's
    [9, 20].)"""
    middle = (min(candidates) + max(candidates)) / 2
    chosen: list[int] = []
    for _ in range(min(n, len(candidates))):
        taken = list(corrected) + chosen
        free = [z for z in candidates if z not in chosen]
        chosen.append(max(free, key=lambda z: (_distance(z, taken), _distance(z, chosen), -abs(z - middle))))
    return chosen


def _distance(z: int, slices) -> float:
    """Slices from ``z`` to the nearest of ``slices`` (infinite when there are none)."""
    return min((abs(z - c) for c in slices), default=float("inf"))


#: Round strategies compared by ``picks``.  Also tried (2026-12-06): the uncertainty summed only within
#: 3 px of the predicted organs; it picked the same slices as ``suggest_slices`` on 4 seeds of 4.
PICKS = {"most uncertain (now)": _pick_suggested, "evenly spaced (widest gaps)": _pick_even}


def carry_experiment(case: Case, args) -> list[dict]:
    """Does an earlier patient's full correction teach the next patient's scribbles?  (halves as patients)

    Patient A = one half of the scan: full corrections on 3 evenly spaced slices, ``--steps`` fixed
    steps, stored.  Patient B = the other half: the simulated reviewer's scribbles on
    ``--carry-k`` slices, ``--steps`` steps, (i) from scratch, (ii) from A's model with A's slices
    replayed (the default in the dock and CLI).  Per direction and seed: Dice on B's untouched
    slices and B's organ voxels / reference voxels (over 1 = organs too large).
    """
    import tempfile

    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.loop import evenly_spaced_slices
    from napari_medseg.scribbles import simulate_reviewer

    half = case.image.shape[0] // 2
    halves = {"inferior": slice(0, half), "superior": slice(half, None)}
    rows = []
    for first, second in (("inferior", "superior"), ("superior", "inferior")):
        a = Case(f"{case.name}, {first} half", case.image[halves[first]], case.reference[halves[first]], case.spacing)
        b = Case(f"{case.name}, {second} half", case.image[halves[second]], case.reference[halves[second]], case.spacing)
        a_slices = evenly_spaced_slices(a.image.shape[0], 3)
        b_slices = evenly_spaced_slices(b.image.shape[0], args.carry_k)
        partial, _ = simulate_reviewer(b.image, b.reference, b_slices, b.modality)
        untouched = [z for z in range(b.image.shape[0]) if z not in b_slices]
        for seed in (int(v) for v in args.seeds.split(",")):
            options = dict(steps=args.steps, seed=seed, precision="fp32")
            with tempfile.TemporaryDirectory() as tmp:
                store = CorrectionStore(Path(tmp) / "store")
                learned = _retrain(a, a.reference, a_slices, None, tmp, args, partial=False, options=options,
                                   store=store)
                for arm, checkpoint, replay in (("from scratch", None, False),
                                                ("from A's model + replay of A", learned.checkpoint.path, True)):
                    result = _retrain(b, partial, b_slices, checkpoint, tmp, args, partial=True, options=options,
                                      store=store, replay=replay)
                    pred, ref = result.labels[untouched], b.reference[untouched]
                    rows.append(dict(case=case.name, patients=f"{first} -> {second}", arm=arm, seed=seed,
                                     replayed=result.replayed_slices,
                                     dice=untouched_dice(result.labels, b.reference, untouched),
                                     size_ratio=organ_size_ratio(pred, ref)))
    return rows


def organ_size_ratio(pred: np.ndarray, reference: np.ndarray) -> float:
    """Organ voxels predicted / organ voxels in the reference (above 1: organs too large)."""
    return int((pred > 0).sum()) / max(1, int((reference > 0).sum()))


def untouched_dice(labels: np.ndarray, reference: np.ndarray, untouched) -> float:
    """Mean over organs of the Dice pooled over the ``untouched`` slices."""
    organs = [int(v) for v in np.unique(reference) if v > 0]
    return slice_dice(labels[untouched], reference[untouched], organs)


def _retrain(case: Case, labels, slices, checkpoint, tmp, args, *, partial: bool, options: dict | None = None,
             store=None, replay: bool = False):
    """One fine-tune (from scratch, or from ``checkpoint``) + re-segmentation; the ``RetrainResult``.

    ``options``: ``FinetuneConfig`` fields (default: ``--budget`` seconds).  ``store``: the
    corrections store (default: a fresh one in ``tmp``), replayed when ``replay``."""
    from napari_medseg.progress import drive
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.loop import StartFrom, next_version_path, retrain_volume
    from napari_medseg.retrain.members import describe_steps

    start = (StartFrom(checkpoint=checkpoint) if checkpoint else
             StartFrom(model_name="dcaunet", label_set="synapse", modality=case.modality))
    output = next_version_path(checkpoint, directory=tmp, stem="effort")
    result = drive(retrain_volume(case.image, labels, slices, start=start, spacing=case.spacing, source=case.name,
                                  options=dict(device="cpu", **(options or dict(time_budget_s=args.budget))),
                                  store=store if store is not None else CorrectionStore(Path(tmp) / "store"),
                                  replay=replay, output=output, partial=partial))
    untouched = [z for z in range(case.image.shape[0]) if z not in slices]
    print(f"  {'partial' if partial else 'full'} on {sorted(slices)}: {describe_steps(result.finetune)}, {result.seconds:.0f} s, "
          f"Dice on untouched {untouched_dice(result.labels, case.reference, untouched):.3f}", flush=True)
    return result


EXPERIMENTS = {"fill": fill_experiment, "finetune": finetune_experiment, "smoothness": smoothness_experiment,
               "strokes": strokes_experiment, "variants": variants_experiment, "carry": carry_experiment,
               "picks": picks_experiment}


def plot_fill(cases: list[Case], z: int, path: Path) -> None:
    """Per case, slice ``z``: the reviewer's strokes and the fill over the reference outlines (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError:
        print("matplotlib not installed: no figure written")
        return
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.scribbles import UNLABELLED, body_mask, fill_from_scribbles, simulate_scribbles

    colours = ListedColormap([(1, 1, 1, 1)] + [SYNAPSE.colors[v] for v in range(1, 9)])  # background white
    fig, axes = plt.subplots(len(cases), 2, figsize=(8, 3.6 * len(cases)), dpi=100, squeeze=False)
    for row, case in zip(axes, cases):
        body = body_mask(case.image[z], case.modality)
        partial = simulate_scribbles(case.reference[z], body).partial
        filled = fill_from_scribbles(case.image[z], partial, modality=case.modality)
        for ax, labels, title in ((row[0], np.where(partial == UNLABELLED, np.nan, partial), "reviewer's strokes"),
                                  (row[1], np.where(filled == 0, np.nan, filled), "fill (white: reference)")):
            ax.imshow(np.clip(case.image[z], -160, 240), cmap="gray", interpolation="nearest")
            ax.imshow(labels, cmap=colours, vmin=-0.5, vmax=8.5, alpha=0.9 if ax is row[0] else 0.55,
                      interpolation="nearest")
            ax.set_title(f"{case.name}, slice {z}: {title}", fontsize=8)
            ax.axis("off")
        row[1].contour(case.reference[z], levels=np.arange(0.5, 9), colors="white", linewidths=0.5)
    fig.tight_layout()
    fig.savefig(path)
    print(f"figure: {path}")


#: Per experiment: the table's columns, ``(header, row key, format string or function)``.
COLUMNS = {
    "fill": [("case", "case", "{}"), ("slice", "slice", "{}"), ("scribble effort", "scribble", "{:.3f}"),
             ("fill Dice", "fill_dice", "{:.3f}"), ("fix effort", "fix", "{:.3f}"), ("total effort", "total", "{:.3f}"),
             ("fill s", "fill_s", "{:.3f}"), ("guided s", "guided_s", "{:.3f}")],
    "finetune": [("case", "case", "{}"), ("arm", "arm", "{}"), ("effort (body px)", "effort", "{:.3f}"),
                 ("mean Dice, untouched slices", "dice", "{:.3f}"),
                 ("mean Dice, slices no arm touched", "dice_common", "{:.3f}"),
                 ("wall s (cumulative)", "seconds", "{:.0f}"), ("steps", "steps", lambda steps: "+".join(map(str, steps)))],
    "smoothness": [("case", "case", "{}"), ("smoothness weight", "weight", "{:g}"), ("sigma", "sigma", "{}"), ("seed", "seed", "{}"),
                   ("mean Dice, untouched slices", "dice", "{:.3f}"), ("wall s", "seconds", "{:.0f}"),
                   ("steps", "steps", lambda steps: "+".join(map(str, steps)))],
    "variants": [("case", "case", "{}"), ("variant", "variant", "{}"), ("seed", "seed", "{}"),
                 ("mean Dice, untouched slices", "dice", "{:.3f}"), ("organ voxels / reference", "size_ratio", "{:.2f}"),
                 ("precision per organ", "precision", lambda d: " ".join(f"{x:.2f}" for x in d.values())),
                 ("recall per organ", "recall", lambda d: " ".join(f"{x:.2f}" for x in d.values())),
                 ("wall s", "seconds", "{:.0f}")],
    "carry": [("case", "case", "{}"), ("patients A -> B", "patients", "{}"), ("B's scribbles", "arm", "{}"),
              ("seed", "seed", "{}"), ("slices replayed", "replayed", "{}"),
              ("mean Dice, B's untouched slices", "dice", "{:.3f}"), ("organ voxels / reference", "size_ratio", "{:.2f}")],
    "picks": [("case", "case", "{}"), ("seed", "seed", "{}"), ("round on", "strategy", "{}"), ("slices", "picks", "{}"),
              ("round effort", "round_effort", "{:.3f}"), ("mean Dice, slices no strategy touched", "dice", "{:.3f}")],
    "strokes": [("case", "case", "{}"), ("seed", "seed", "{}"), ("strokes kept by segment_volume", "keep_strokes", "{}"),
                ("mean Dice, untouched slices", "dice", "{:.4f}"), ("stroked pixels keeping their label", "strokes_kept",
                                                                    "{:.4f}")],
}


def print_table(columns, rows: list[dict]) -> None:
    """A Markdown table; a value that is already a string is printed as it is (summary rows)."""
    print("| " + " | ".join(header for header, _, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        cells = [r[key] if isinstance(r[key], str) else fmt(r[key]) if callable(fmt) else fmt.format(r[key])
                 for _, key, fmt in columns]
        print("| " + " | ".join(cells) + " |")


def fill_summary(rows: list[dict]) -> list[dict]:
    """One bold row per case: pooled scribble effort, mean Dice and efforts, median seconds."""
    out = []
    for name in dict.fromkeys(r["case"] for r in rows):
        own = [r for r in rows if r["case"] == name]
        pooled = sum(r["stroked"] for r in own) / sum(r["body_pixels"] for r in own)
        out.append(dict(case=name, slice=f"**all {len(own)}**", scribble=f"**{pooled:.3f}** (pooled)",
                        fill_dice=f"**{np.mean([r['fill_dice'] for r in own]):.3f}** (mean)",
                        fix=float(np.mean([r["fix"] for r in own])), total=float(np.mean([r["total"] for r in own])),
                        fill_s=f"{np.median([r['fill_s'] for r in own]):.3f} (median)",
                        guided_s=f"{np.median([r['guided_s'] for r in own]):.3f} (median)"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="sample,512", help=f"comma-separated, from {sorted(CASES)}")
    parser.add_argument("--full-only", action="store_true", help="finetune: only the full-slices arm")
    parser.add_argument("--experiments", default="fill", help=f"comma-separated, from {sorted(EXPERIMENTS)}")
    parser.add_argument("--k", type=int, default=5, help="evenly spaced slices the reviewer touches")
    parser.add_argument("--repeats", type=int, default=5, help="timed fills per slice (median reported)")
    parser.add_argument("--budget", type=float, default=150.0, help="finetune: seconds per fine-tune (issue: 150)")
    parser.add_argument("--round-slices", type=int, default=2, help="finetune: slices corrected per round")
    parser.add_argument("--rounds", type=int, default=2, help="finetune: rounds of corrections after the scribbles")
    parser.add_argument("--steps", type=int, default=900, help="smoothness: optimiser steps per fine-tune")
    parser.add_argument("--smoothness-weights", default="0,30", help="smoothness: comma-separated weights, "
                        "each with every --smoothness-sigmas value, or W@SIGMA for one pair")
    parser.add_argument("--smoothness-sigmas", default="0.05", help="smoothness: comma-separated sigmas, "
                        "0.05 (image units) or x0.5 (0.5 x the slices' typical intensity step)")
    parser.add_argument("--seeds", default="0,1", help="smoothness, strokes, variants: comma-separated seeds")
    parser.add_argument("--carry-k", type=int, default=2, help="carry: slices patient B scribbles")
    parser.add_argument("--variants", default="[]", help="variants: JSON list of FinetuneConfig fields, each run "
                        "against the defaults, e.g. '[{\"smoothness_radius\": 3}]'")
    parser.add_argument("--skip-default", action="store_true", help="variants: run only the --variants entries "
                        "(the defaults' rows of the same seeds, steps and threads from an earlier run pair with them)")
    parser.add_argument("--threads", type=int, help="finetune: torch CPU threads (1 on a machine loaded beyond its "
                                                      "cores, where spinning OpenMP threads made steps several times slower)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="folder for the JSON of all rows and the figure")
    parser.add_argument("--figure-slice", type=int, default=14, help="slice drawn in effort-fill.png")
    args = parser.parse_args(argv)
    unknown = [n for n in args.cases.split(",") if n not in CASES] + [
        n for n in args.experiments.split(",") if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown case/experiment {unknown}; cases: {sorted(CASES)}, experiments: {sorted(EXPERIMENTS)}")

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}"
          + (f"; torch threads: {args.threads}" if args.threads else ""))
    results: dict[str, list[dict]] = {}
    for experiment in args.experiments.split(","):
        rows = []
        for name in args.cases.split(","):
            rows += EXPERIMENTS[experiment](CASES[name](), args)
        results[experiment] = rows
    for experiment, rows in results.items():
        print_table(COLUMNS[experiment], rows + (fill_summary(rows) if experiment == "fill" else []))
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"effort-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(dict(machine=cpu_name(), cores=os.cpu_count(), load_after=load, argv=sys.argv[1:],
                                    results=results), indent=1))
    print(f"rows: {path}")
    if "fill" in results:
        plot_fill([CASES[name]() for name in args.cases.split(",")], args.figure_slice, out / "effort-fill.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
