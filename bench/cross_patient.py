"""Issue 9, point 5: spacing invariance, the loop at clinical resolution, and carry-over to the next patient.

All runs are DCAU-Net with the family's recipes (``SPEC.scratch_recipe`` from scratch,
``SPEC.checkpoint_recipe`` from a checkpoint), the ``"spacing"`` resize policy of
models started from scratch, on CPU:

1. **Sample CT, k = 5, --budget s** (the no-regression check, target >= 0.87): the
   retrain protocol (``run_protocol``) on the bundled sample CT (3 mm pixels).
2. **Spacing invariance**: the model of (1) segments A', the sample CT resampled to
   0.8 mm in-plane (bilinear; labels nearest), padded to 512 x 512 with air (-1024 HU),
   written as an LPS ``.mha`` with int16 voxels and read back through ``read_volume``.
   Dice on the same untouched slices as (1); target: within 0.05 of (1).  Next to it, the
   like-for-like row: the same model re-segments the sample with no slice locked.  (1)'s
   own Dice has its 5 corrected slices locked, and through the smoothing across slices
   they steer their neighbours; A' has no locked slice.
3. **The loop at clinical resolution**: the protocol of (1) on A' (k = 5, --budget s);
   target >= 0.85 and within 0.05 of (1).
4. **Carry-over proxy**: the inferior and superior halves of the sample CT play two
   patients.  A model learns on one (k = 3, --learn-budget s); on the other, k = 2 and
   --carry-budget s, starting from that model is compared with starting from scratch
   (Dice on that half's untouched slices; "unseen" = the first model with no fine-tuning).
   Target: from the model >= from scratch.  ``--checkpoint-lrs`` adds from-model runs at
   other learning rates (the recipe's lr is chosen by this comparison).
5. The model of (1) segments the real second patient (../shared/data/ct_dicom, no labels);
   an overlay goes to ``docs/cross_patient_dicom.png``.

Every row prints the optimiser steps it got, so a run starved by other jobs on a shared
machine is visible; the header prints the machine and the load average (also per row).

    python bench/cross_patient.py                    # about 10 min on 2 idle cores
    python bench/cross_patient.py --budget 20 --learn-budget 10 --carry-budget 10   # smoke run
    python bench/cross_patient.py --threads 1 --steps 900 --learn-steps 360 --carry-steps 360  # busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import cpu_name, load_average as load  # bench/_machine.py (scripts run as python bench/NAME.py)
from spacing_target import pad_to, resample_inplane

ROOT = Path(__file__).resolve().parents[1]
DICOM = ROOT / ".." / "shared" / "data" / "ct_dicom"
A_PRIME_SPACING = 0.8  # mm in-plane
A_PRIME_SIZE = (512, 512)


def write_a_prime(image: np.ndarray, labels: np.ndarray, geometry, folder: Path):
    """A' (image, labels) as LPS int16 / uint8 ``.mha`` files on a 0.8 mm 512^2 grid; read back as Volumes."""
    import SimpleITK as sitk

    from napari_medseg.io import read_volume

    sz, sy, sx = geometry.spacing
    img = pad_to(resample_inplane(image.astype(np.int16), (sy, sx), A_PRIME_SPACING), A_PRIME_SIZE, np.int16(-1024))
    lab = pad_to(resample_inplane(labels, (sy, sx), A_PRIME_SPACING, labels=True), A_PRIME_SIZE, np.uint8(0))
    paths = []
    for array, name in ((img, "a_prime.mha"), (lab, "a_prime_labels.mha")):
        # canonical (z, y, x) = (S, P, L): with an identity LPS direction, sitk's (x, y, z) are (L, P, S)
        out = sitk.GetImageFromArray(array)
        out.SetSpacing((A_PRIME_SPACING, A_PRIME_SPACING, float(sz)))
        out.SetOrigin(tuple(float(v) for v in geometry.origin[::-1]))  # (S, P, L) -> (L, P, S)
        sitk.WriteImage(out, str(folder / name))
        paths.append(folder / name)
    a, a_lab = (read_volume(p) for p in paths)
    assert a.array.shape[1:] == A_PRIME_SIZE, a.array.shape
    return a, a_lab.array.astype(np.uint8)


def segment(array, checkpoint_path, spacing):
    from napari_medseg.checkpoint import load_checkpoint
    from napari_medseg.inference import run_segmentation, segment_volume

    model, info = load_checkpoint(checkpoint_path)
    gen = segment_volume(array, [(model.eval(), info)], device="cpu", uncertainty=False, spacing=spacing)
    return run_segmentation(gen).labels


def row(name, dice, steps, seconds, note=""):
    from napari_medseg.labels import SYNAPSE

    mean = float(np.nanmean(list(dice.values())))
    organs = " ".join(f"{dice[n]:.2f}" for n in SYNAPSE.organs.values())
    print(f"{name:44s} mean {mean:.3f}  [{organs}]  steps {steps!s:>5}  {seconds:6.1f} s  load {load()}  {note}",
          flush=True)
    return dict(name=name, mean_dice=mean, dice=dice, steps=steps, seconds=seconds, load=os.getloadavg()[0], note=note)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=150.0, help="fine-tuning s of the k = 5 runs (1, 3)")
    parser.add_argument("--learn-budget", type=float, default=60.0, help="fine-tuning s on the first half (k = 3)")
    parser.add_argument("--carry-budget", type=float, default=60.0, help="fine-tuning s on the second half (k = 2)")
    parser.add_argument("--steps", type=int, help="fixed optimiser steps for the k = 5 runs instead of --budget "
                        "(quality independent of the machine's load; translate with an idle machine's steps/s)")
    parser.add_argument("--learn-steps", type=int, help="fixed steps instead of --learn-budget")
    parser.add_argument("--carry-steps", type=int, help="fixed steps instead of --carry-budget")
    parser.add_argument("--replay", action="store_true", help="carry-over: patient A's slices go to a store that "
                        "the from-model run replays (what `medseg finetune` does by default with the user's store)")
    parser.add_argument("--checkpoint-lrs", default="", help="more from-model runs at these lrs, e.g. 3e-4,3e-3")
    parser.add_argument("--variants", default="[]",
                        help='more from-model runs (replaying as --replay says), JSON list of FinetuneConfig fields, '
                        'e.g. \'[{"replay_fraction": 0.25}]\'')
    parser.add_argument("--scratch-options", default="{}",
                        help='FinetuneConfig fields for the k = 5 runs from scratch (1, 3), JSON, e.g. '
                        '\'{"augment": {"p_rotate": 0, "p_blur": 0.2}}\'')
    parser.add_argument("--both-directions", action="store_true", help="carry-over superior -> inferior too")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: within,aprime,aprime-loop,carry,dicom")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--png", default=str(ROOT / "docs" / "cross_patient_dicom.png"))
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    scratch_options = json.loads(args.scratch_options) or None

    import torch

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.models import family_spec
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.protocol import run_protocol, untouched_dice

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = family_spec("dcaunet")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"load average (1/5/15 min) {load()}")
    print(f"recipes: scratch {dict(spec.scratch_recipe)}; checkpoint {dict(spec.checkpoint_recipe)}, "
          f"scope {spec.finetune_scope}; scratch resize policy {spec.scratch_resize_policy}")
    work = Path(tempfile.mkdtemp(prefix="medseg-cross-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sample = read_volume(SAMPLE_CT)
    image, ref, spacing = sample.array, read_volume(SAMPLE_LABELS).array.astype(np.uint8), sample.geometry.spacing
    rows = []

    def protocol(name, img, lab, k, budget, sp, checkpoint=None, options=None, tag="", steps=None, store=None,
                 replay=False):
        if steps:  # equal steps, whatever the load: the budget is not used
            budget, options = None, dict(options or {}, steps=steps)
        r = run_protocol(img, lab, k, model_name="dcaunet", time_budget_s=budget, device="cpu", seed=args.seed,
                         output_dir=work / (tag or name.replace(" ", "_")), spacing=sp, checkpoint=checkpoint,
                         options=options, store=store, replay=replay)
        rows.append(row(name, r.dice, r.steps, r.seconds))
        return r

    base = None
    if "within" not in skip:
        print(f"\n1. sample CT {image.shape} at {tuple(round(s, 2) for s in spacing)} mm, k = 5, {args.budget:.0f} s")
        base = protocol("sample CT, k=5 (target >= 0.87)", image, ref, 5, args.budget, spacing, tag="sample",
                        steps=args.steps, options=scratch_options)
    if "aprime" not in skip:
        a, a_ref = write_a_prime(image, ref, sample.geometry, work)
        print(f"\n2-3. A' {a.array.shape} {a.array.dtype} at {tuple(round(s, 2) for s in a.geometry.spacing)} mm "
              f"(LPS .mha, read back)")
        if base is not None:
            # Like for like: the protocol's own Dice has the corrected slices locked, and through the
            # smoothing across slices they steer their neighbours; A' has no locked slice.
            t0 = time.monotonic()
            pred = segment(image, base.checkpoint.path, spacing)
            unlocked = row("sample CT by its model, no locked slice", untouched_dice(pred, ref, base.corrected, SYNAPSE),
                           0, time.monotonic() - t0, "(like for like with A')")
            rows.append(unlocked)
            t0 = time.monotonic()
            pred = segment(a.array, base.checkpoint.path, a.geometry.spacing)
            rows.append(row("A' segmented by the sample model", untouched_dice(pred, a_ref, base.corrected, SYNAPSE),
                            0, time.monotonic() - t0, f"(sample's own: {base.mean_dice:.3f}, with no locked slice "
                            f"{unlocked['mean_dice']:.3f}; target within 0.05)"))
        if "aprime-loop" not in skip:
            protocol("A', k=5 (target >= 0.85, within 0.05)", a.array, a_ref, 5, args.budget, a.geometry.spacing,
                     tag="aprime", steps=args.steps, options=scratch_options)
    if "carry" not in skip:
        half = image.shape[0] // 2
        halves = {"inferior": slice(0, half), "superior": slice(half, None)}
        directions = [("inferior", "superior")] + ([("superior", "inferior")] if args.both_directions else [])
        for first, second in directions:
            f, s = halves[first], halves[second]
            shared = CorrectionStore(work / f"store-{first}") if args.replay else None
            print(f"\n4. carry-over: learn on the {first} half (k = 3, {args.learn_budget:.0f} s), "
                  f"then the {second} half (k = 2, {args.carry_budget:.0f} s)")
            learned = protocol(f"{first} half, k=3 (patient A)", image[f], ref[f], 3, args.learn_budget, spacing,
                               tag=f"{first}_k3", steps=args.learn_steps, store=shared)
            t0 = time.monotonic()
            pred = segment(image[s], learned.checkpoint.path, spacing)
            rows.append(row(f"{second} half, A's model unseen", untouched_dice(pred, ref[s], [], SYNAPSE), 0,
                            time.monotonic() - t0))
            scratch = protocol(f"{second} half, k=2, from scratch", image[s], ref[s], 2, args.carry_budget, spacing,
                               tag=f"{second}_scratch", steps=args.carry_steps)
            carried_name = f"{second} half, k=2, from A's model" + (" + replay" if args.replay else "")
            carried = protocol(carried_name, image[s], ref[s], 2, args.carry_budget,
                               spacing, checkpoint=learned.checkpoint.path, tag=f"{second}_carry",
                               steps=args.carry_steps, store=shared, replay=args.replay)
            variants = [dict(lr=float(lr)) for lr in filter(None, args.checkpoint_lrs.split(","))]
            for i, options in enumerate(variants + json.loads(args.variants)):
                label = ", ".join(f"{k} {v}" for k, v in options.items())
                protocol(f"{second} half, k=2, from A's model, {label}", image[s], ref[s], 2, args.carry_budget,
                         spacing, checkpoint=learned.checkpoint.path, options=options, tag=f"{second}_carry_{i}",
                         steps=args.carry_steps, store=shared, replay=args.replay)
            print(f"   from the model - from scratch: {carried.mean_dice - scratch.mean_dice:+.3f} (target >= 0)")
    if "dicom" not in skip and base is not None and DICOM.is_dir():
        from napari_medseg.overlay import overlay_grid, save_png

        dicom = read_volume(DICOM)
        t0 = time.monotonic()
        pred = segment(dicom.array, base.checkpoint.path, dicom.geometry.spacing)
        found = {n: int((pred == v).sum()) for v, n in SYNAPSE.organs.items()}
        print(f"\n5. DICOM {dicom.array.shape} at {tuple(round(v, 2) for v in dicom.geometry.spacing)} mm, "
              f"segmented by the sample model in {time.monotonic() - t0:.1f} s; voxels per organ: {found}")
        z = dicom.array.shape[0]
        png = save_png(overlay_grid(dicom.array, [pred], [z // 4, z // 2, 3 * z // 4], SYNAPSE, zoom=1), args.png)
        print(f"   overlay: {png} (rows: slices {[z // 4, z // 2, 3 * z // 4]}; columns: CT, prediction)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"cross_patient-{stamp}-seed{args.seed}.json"
    path.write_text(json.dumps(dict(machine=cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(),
                                    args=vars(args), rows=rows), indent=1, default=float))
    print(f"\nraw numbers: {path}; load average at the end {load()}")
    shutil.rmtree(work, ignore_errors=True)  # checkpoints and A' files: about 80 MB per run
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
