"""Evaluation: per-organ table, CSV, file pairing, and `medseg evaluate` with a checkpoint or predictions."""

import csv
from pathlib import Path
import shutil

import numpy as np
import pytest

from napari_medseg.checkpoint import save_checkpoint
from napari_medseg.labels import get_label_set
from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.preprocess import Preprocessing
from training.evaluate import evaluate_cases, format_table, pair_files, summarise

from training_fixtures import sample_arrays

SYN = get_label_set("synapse")


def test_table_is_in_the_papers_column_order():
    ref = np.zeros((4, 10, 10), np.uint8)
    ref[1:3, 1:4, 1:4] = 1
    ref[1:3, 5:9, 5:9] = 5
    pred = ref.copy()
    pred[1, 1:4, 1:4] = 0  # half of the aorta missed
    rows = evaluate_cases([("c1", pred, ref, (3.0, 1.0, 1.0))], SYN)
    summary = summarise(rows, SYN)
    assert summary["organs"]["aorta"][0] == pytest.approx(2 / 3)
    assert summary["organs"]["liver"] == (1.0, 0.0)
    assert np.isnan(summary["organs"]["pancreas"][0])  # absent in both: left out
    assert summary["mean_dice"] == pytest.approx((2 / 3 + 1) / 2)
    header = format_table(summary).splitlines()[0].split()
    assert header[:3] == ["Mean", "aorta", "gallbladder"] and header[-1] == "stomach"
    tu = summarise(evaluate_cases([("c1", pred, ref, None)], SYN, transunet_compatible=True), SYN, True)
    assert tu["organs"]["pancreas"] == (0.0, 0.0) and tu["mean_dice"] == pytest.approx((2 / 3 + 1) / 8)
    assert "HD95 (vox)" in format_table(tu)


def _write_like(array_zyx, like_path, out_path):
    from napari_medseg.io import read_volume, write_labels

    vol = read_volume(like_path)
    return write_labels(array_zyx.astype(np.uint8), out_path, vol.geometry)


def test_cli_evaluate_predictions_and_checkpoint(tmp_path, sample_ct, sample_labels):
    from napari_medseg.cli import main

    image, labels, spacing = sample_arrays(sample_ct, sample_labels)
    images, refs, preds = tmp_path / "imagesTs", tmp_path / "labelsTs", tmp_path / "preds"
    for d in (images, refs, preds):
        d.mkdir()
    shutil.copy(sample_ct, images / "case01_0000.nii.gz")
    shutil.copy(sample_labels, refs / "case01.nii.gz")
    damaged = labels.copy()
    damaged[damaged == 5] = 0  # liver missed entirely
    _write_like(damaged, sample_ct, preds / "case01.nii.gz")
    assert [p[0] for p in pair_files(images, refs, preds)] == ["case01"]

    out = tmp_path / "m.csv"
    assert main(["evaluate", "--predictions", str(preds), "--images", str(images), "--labels", str(refs),
                 "--label-set", "synapse", "--out", str(out)]) == 0
    rows = {(r["case"], r["organ"]): r for r in csv.DictReader(open(out))}
    assert float(rows[("case01", "aorta")]["dice"]) == pytest.approx(1.0)
    assert float(rows[("case01", "liver")]["dice"]) == 0.0
    assert float(rows[("mean", "all")]["dice"]) == pytest.approx(7 / 8)

    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"]), label_set=SYN,
                    preprocessing=Preprocessing(resize_policy="native"))
    out2 = tmp_path / "m2.csv"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--images", str(images), "--labels", str(refs),
                 "--out", str(out2), "--transunet-compatible", "--device", "cpu"]) == 0
    rows2 = list(csv.DictReader(open(out2)))
    assert len(rows2) == 8 + 8 + 1 and all(0 <= float(r["dice"]) <= 1 for r in rows2)
    assert main(["evaluate", "--images", str(images), "--labels", str(refs)]) == 2  # neither source given


def test_cli_evaluate_transunet_h5_volumes(tmp_path, sample_ct, sample_labels):
    pytest.importorskip("h5py")
    from napari_medseg.cli import main
    from training_fixtures import make_synapse

    root = make_synapse(tmp_path / "Synapse", sample_ct, sample_labels, slices=[12])
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"]), label_set=SYN,
                    preprocessing=Preprocessing(resize_policy="native"))
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--synapse-root", str(root), "--out", str(out),
                 "--transunet-compatible", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert {r["case"] for r in rows} == {"case0001", "mean"} and len(rows) == 17
    mr = tmp_path / "mr.safetensors"
    save_checkpoint(mr, build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"]), label_set=SYN,
                    preprocessing=Preprocessing(modality="mr", resize_policy="native"))
    assert main(["evaluate", "--checkpoint", str(mr), "--synapse-root", str(root), "--device", "cpu",
                 "--out", str(tmp_path / "x.csv")]) == 2  # pre-windowed CT volumes vs an MR checkpoint


def _nifti(array, path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 5.0, 1.0])), str(path))


def test_acdc_gt_names_pair_in_one_folder_and_across_folders(tmp_path):
    patient = tmp_path / "patient001"
    patient.mkdir()
    for stem in ("patient001_frame01", "patient001_frame01_gt", "patient001_4d"):
        _nifti(np.zeros((8, 8, 3), np.int16), patient / f"{stem}.nii.gz")
    pairs = pair_files(patient, patient)
    assert [(c, i.name, lab.name) for c, i, lab, _ in pairs] == [
        ("patient001_frame01", "patient001_frame01.nii.gz", "patient001_frame01_gt.nii.gz")]
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(patient / "patient001_frame01_gt.nii.gz", labels)
    assert [p[0] for p in pair_files(patient, labels, predictions_dir=labels)] == ["patient001_frame01"]


def test_cli_evaluate_acdc_root_uses_the_shipped_test_split(tmp_path):
    from napari_medseg.cli import main
    from training.datasets import acdc_split

    root, preds = tmp_path / "ACDC" / "training", tmp_path / "preds"
    preds.mkdir()
    rng = np.random.default_rng(0)
    ref = np.zeros((16, 16, 3), np.uint8)
    ref[2:6, 2:6], ref[8:12, 8:12], ref[2:6, 9:14] = 1, 2, 3
    for patient in acdc_split("test") + ["patient001"]:  # patient001 is a training patient: not evaluated
        d = root / patient
        d.mkdir(parents=True)
        (d / "Info.cfg").write_text("ED: 1\nES: 5\n")
        for frame in (1, 5):
            stem = f"{patient}_frame{frame:02d}"
            _nifti(rng.normal(size=ref.shape).astype(np.float32), d / f"{stem}.nii.gz")
            _nifti(ref, d / f"{stem}_gt.nii.gz")
            pred = ref.copy()
            if patient == "patient002" and frame == 1:
                pred[pred == 3] = 0  # LV missed in one of the 40 volumes
            _nifti(pred, preds / f"{stem}.nii.gz")
    out = tmp_path / "acdc.csv"
    assert main(["evaluate", "--predictions", str(preds), "--acdc-root", str(tmp_path / "ACDC"),
                 "--label-set", "acdc", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    cases = {r["case"] for r in rows} - {"mean"}
    assert len(cases) == 40 and "patient002_frame01" in cases and not any(c.startswith("patient001") for c in cases)
    lv = [r for r in rows if r["case"] == "mean" and r["organ"] == get_label_set("acdc").names[3]]
    assert float(lv[0]["dice"]) == pytest.approx(39 / 40)
    shutil.rmtree(root / "patient095")
    assert main(["evaluate", "--predictions", str(preds), "--acdc-root", str(tmp_path / "ACDC"),
                 "--label-set", "acdc", "--out", str(out)]) == 2  # a test patient is missing: refused


def test_synapse_root_applies_the_recipe_inplane(tmp_path, sample_ct, sample_labels, monkeypatch):
    pytest.importorskip("h5py")
    import training.datasets
    from napari_medseg.cli import main
    from training_fixtures import make_synapse

    root = make_synapse(tmp_path / "Synapse", sample_ct, sample_labels, slices=[12])
    run = tmp_path / "run"
    run.mkdir()
    ckpt = run / "last.safetensors"
    save_checkpoint(ckpt, build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"]), label_set=SYN,
                    preprocessing=Preprocessing(resize_policy="native"))
    recipe = (Path(training.datasets.__file__).parent / "configs" / "dcaunet_synapse.yaml").read_text()
    (run / "recipe.yaml").write_text(recipe.replace("inplane: null", "inplane: transpose+flip_x"))
    seen = []
    original = training.datasets.read_synapse_h5_volume

    def spy(path, inplane=None):
        seen.append(inplane)
        return original(path, inplane)

    monkeypatch.setattr(training.datasets, "read_synapse_h5_volume", spy)
    args = ["evaluate", "--checkpoint", str(ckpt), "--synapse-root", str(root), "--device", "cpu",
            "--out", str(tmp_path / "m.csv")]
    assert main(args) == 0 and seen == ["transpose+flip_x"]  # recipe.yaml beside the checkpoint
    assert main(args + ["--inplane", "none", "--overwrite"]) == 0 and seen[-1] is None
    assert main(args + ["--recipe", "dcaunet_synapse.yaml", "--overwrite"]) == 0 and seen[-1] is None  # built-in: inplane null
    assert main(args + ["--inplane", "rotate", "--overwrite"]) == 2  # unknown operation: clear error
