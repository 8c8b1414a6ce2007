"""Per-volume, per-organ DSC and HD95 of predictions against reference labels.

``evaluate_cases`` takes ``(name, prediction, reference, spacing)`` volumes
and returns one :class:`CaseMetric` per case and organ.  ``summarise`` gives
the per-organ means (over cases) and the mean over organs, and
``format_table`` prints them in the papers' column order (the label set's
order: Synapse aorta, gallbladder, kidney L, kidney R, liver, pancreas,
spleen, stomach; ACDC RV, Myo, LV).

Conventions (see :mod:`training.metrics`): by default HD95 is in millimetres
and organs absent from both prediction and reference are left out of the
means; ``transunet_compatible=True`` uses TransUNet's ``calculate_metric_percase``
rules (HD95 in voxels, ``(1, 0)`` for a prediction where the reference is
empty, ``(0, 0)`` otherwise) and plain means, so numbers compare with the
papers' tables.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from napari_medseg.labels import LabelSet
from training.metrics import volume_metrics

NII_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


@dataclass(frozen=True)
class CaseMetric:
    """One organ in one volume; ``hd95`` in mm (voxels in TransUNet mode)."""

    case: str
    label: int
    organ: str
    dice: float
    hd95: float


def evaluate_cases(cases: Iterable[tuple[str, np.ndarray, np.ndarray, tuple | None]], label_set: LabelSet,
                   transunet_compatible: bool = False) -> list[CaseMetric]:
    """Metrics for ``(name, pred (z,y,x), ref (z,y,x), spacing (sz,sy,sx) mm or None)`` cases."""
    rows = []
    for name, pred, ref, spacing in cases:
        per_label = volume_metrics(pred, ref, list(label_set.organs), spacing, transunet_compatible)
        for label, (d, h) in per_label.items():
            rows.append(CaseMetric(name, label, label_set.names[label], float(d), float(h)))
    return rows


def summarise(rows: list[CaseMetric], label_set: LabelSet, transunet_compatible: bool = False) -> dict:
    """``{"organs": {name: (mean dice, mean hd95)}, "mean_dice", "mean_hd95", "cases"}``.

    Means over cases skip ``nan`` (medseg convention); TransUNet mode has no ``nan``.
    """
    organs = {}
    for label, name in label_set.organs.items():
        d = np.array([r.dice for r in rows if r.label == label], dtype=float)
        h = np.array([r.hd95 for r in rows if r.label == label], dtype=float)
        organs[name] = (_mean(d), _mean(h))
    dices = np.array([v[0] for v in organs.values()])
    hds = np.array([v[1] for v in organs.values()])
    return {
        "organs": organs,
        "mean_dice": _mean(dices),
        "mean_hd95": _mean(hds),
        "cases": sorted({r.case for r in rows}),
        "transunet_compatible": transunet_compatible,
    }


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def format_table(summary: dict) -> str:
    """A text table: one header row (Mean, then organs in label order), DSC (%) and HD95 rows."""
    unit = "vox" if summary.get("transunet_compatible") else "mm"
    names = list(summary["organs"])
    header = ["", "Mean"] + names
    dsc = ["DSC (%)", _fmt(100 * summary["mean_dice"])] + [_fmt(100 * summary["organs"][n][0]) for n in names]
    hd = [f"HD95 ({unit})", _fmt(summary["mean_hd95"])] + [_fmt(summary["organs"][n][1]) for n in names]
    widths = [max(len(str(r[i])) for r in (header, dsc, hd)) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)) for row in (header, dsc, hd)]
    lines.append(f"{len(summary['cases'])} volume(s)")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


def write_csv(rows: list[CaseMetric], summary: dict, path) -> Path:
    """Per-case rows, then per-organ ``mean`` rows and an ``all`` row with the means over organs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "label", "organ", "dice", "hd95"])
        for r in rows:
            w.writerow([r.case, r.label, r.organ, _num(r.dice), _num(r.hd95)])
        for label_name, (d, h) in summary["organs"].items():
            w.writerow(["mean", "", label_name, _num(d), _num(h)])
        w.writerow(["mean", "", "all", _num(summary["mean_dice"]), _num(summary["mean_hd95"])])
    return path


def _num(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.6f}"


# ------------------------------------------------------------------ file pairing


GT_TAG = "_gt"  # ACDC's reference labels: patient001_frame01_gt.nii.gz


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NII_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_name(path: Path) -> str:
    """File name without the volume suffix, nnU-Net's ``_0000`` channel tag and ACDC's ``_gt`` tag."""
    name = _stem(path)
    for tag in ("_0000", GT_TAG):
        if name.endswith(tag):
            return name[: -len(tag)]
    return name


def _volume_files(folder: Path, role: str = "images") -> dict[str, Path]:
    """``{case: path}`` of the volumes in ``folder``.

    ACDC keeps ``X.nii.gz`` and ``X_gt.nii.gz`` side by side: as ``images``
    the ``_gt`` files are skipped; as ``labels`` a folder holding ``_gt``
    files contributes only those.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    found = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.endswith(NII_SUFFIXES) and not p.name.startswith("."):
            found.append((case_name(p), p, _stem(p).endswith(GT_TAG)))
        elif p.is_dir() and any(p.glob("*.dcm")):
            found.append((p.name, p, False))
    want_gt = role == "labels" and any(gt for _, _, gt in found)
    return {case: p for case, p, gt in found if gt == want_gt}


def pair_files(images_dir, labels_dir, predictions_dir=None) -> list[tuple[str, Path, Path, Path | None]]:
    """Match images to labels (and predictions) by case name.

    ``case_0000.nii.gz`` <-> ``case.nii.gz``, and ACDC's ``X.nii.gz`` <-> ``X_gt.nii.gz``
    (images and labels may then be the same folder).
    """
    images = _volume_files(Path(images_dir), "images")
    labels = _volume_files(Path(labels_dir), "labels")
    preds = _volume_files(Path(predictions_dir), "labels") if predictions_dir else None
    common = sorted(set(images) & set(labels))
    if not common:
        raise FileNotFoundError(
            f"no case appears in both {images_dir} ({len(images)} volumes) and {labels_dir} ({len(labels)}); "
            "files pair by name, e.g. case01_0000.nii.gz with case01.nii.gz"
        )
    out = []
    for case in common:
        pred = None
        if preds is not None:
            if case not in preds:
                raise FileNotFoundError(f"no prediction for case {case!r} in {predictions_dir}")
            pred = preds[case]
        out.append((case, images[case], labels[case], pred))
    return out


def acdc_pairs(root, split: str = "test", predictions_dir=None) -> list[tuple[str, Path, Path, Path | None]]:
    """:func:`pair_files`-style pairs of the ED/ES frames of a shipped ACDC split under ``root``.

    Cases are named ``patientXXX_frameYY``; a prediction, when a folder is
    given, is ``<case>.nii.gz`` (or ``<case>_gt.nii.gz``) in it.
    """
    from training.datasets import acdc_cases, acdc_split

    cases = acdc_cases(root, acdc_split(split))
    preds = _volume_files(Path(predictions_dir), "labels") if predictions_dir else None
    out = []
    for case, image, gt in cases:
        if preds is not None and case not in preds:
            raise FileNotFoundError(f"no prediction for ACDC case {case!r} in {predictions_dir}")
        out.append((case, image, gt, preds[case] if preds is not None else None))
    return out


def iter_cases(pairs, checkpoints=None, *, device="auto", batch_size: int = 8, tta: bool = False,
               largest_component: bool = True, z_sigma_mm: float | None = None,
               progress=None) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple]]:
    """Yield ``(case, prediction, reference, spacing)``: predictions read from files or computed.

    Args:
        pairs: from :func:`pair_files`.
        checkpoints: ``[(model, info)]`` from ``napari_medseg.inference.load_checkpoints``,
            used for cases without a prediction file.
    """
    from napari_medseg.io import read_volume

    for case, image_path, label_path, pred_path in pairs:
        image = read_volume(image_path)
        ref = np.rint(read_volume(label_path).array).astype(np.int64)
        if ref.shape != image.array.shape:
            raise ValueError(f"{label_path} {ref.shape} does not match {image_path} {image.array.shape}")
        if pred_path is not None:
            pred = np.rint(read_volume(pred_path).array).astype(np.int64)
            if pred.shape != ref.shape:
                raise ValueError(f"prediction {pred_path} {pred.shape} does not match labels {ref.shape}")
        else:
            if not checkpoints:
                raise ValueError("give a checkpoint or a predictions folder")
            from napari_medseg.inference import run_segmentation, segment_volume

            gen = segment_volume(image.array, checkpoints, device=device, batch_size=batch_size, tta=tta,
                                 uncertainty=False, spacing=image.geometry.spacing,
                                 largest_component=largest_component, z_sigma_mm=z_sigma_mm)
            pred = run_segmentation(gen, progress).labels
        yield case, pred, ref, tuple(float(s) for s in image.geometry.spacing)


def iter_synapse_h5_cases(root, checkpoints, *, list_name="test_vol.txt", inplane=None, device="auto",
                          batch_size: int = 8, tta: bool = False, progress=None, largest_component: bool = True,
                          z_sigma_mm: float | None = None):
    """Yield ``(case, prediction, reference, None)`` for TransUNet's ``test_vol_h5`` volumes (needs h5py).

    The volumes are already windowed to [-125, 275] HU and scaled to [0, 1];
    they are mapped back to HU (``v * 400 - 125``) so that the checkpoint's own
    CT normalisation reproduces those values exactly.  The files carry no
    spacing, so HD95 is in voxels (as in TransUNet's evaluation), and no slice
    thickness: ``z_sigma_mm`` has nothing to act on (accepted for a uniform call).
    """
    from napari_medseg.inference import run_segmentation, segment_volume
    from training.datasets import synapse_test_volumes

    for _, info in checkpoints:
        prep = info.preprocessing
        if prep.resize_policy == "spacing":
            raise ValueError(
                f"TransUNet's h5 volumes carry no voxel spacing, but checkpoint {info.path} resamples slices to "
                f"{prep.target_spacing:g} mm; evaluate it on the NIfTI originals (--images/--labels) instead"
            )
        if prep.modality != "ct" or tuple(prep.window) != (-125.0, 275.0):
            raise ValueError(
                f"TransUNet's h5 volumes are pre-windowed to [-125, 275] HU; checkpoint {info.path} uses "
                f"{prep.modality} {tuple(prep.window)}, so its input would differ from training"
            )
    for name, image01, label in synapse_test_volumes(root, list_name, inplane):
        hu = image01.astype(np.float32) * 400.0 - 125.0
        gen = segment_volume(hu, checkpoints, device=device, batch_size=batch_size, tta=tta, uncertainty=False,
                             largest_component=largest_component, z_sigma_mm=z_sigma_mm)
        yield name, run_segmentation(gen, progress).labels, label.astype(np.int64), None

